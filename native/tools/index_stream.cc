// index_stream: feeds a layer blob to core::LayerIndexer in 1 MiB chunks, as
// a download would arrive, and prints JSON with the wall time and the
// process's peak RSS. The engine benchmark uses it to measure the indexer's
// own memory, without Node's.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include "../core/error.h"
#include "../core/layer_indexer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: index_stream BLOB\n");
    return 2;
  }
  try {
    auto started = std::chrono::steady_clock::now();
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[1]);
    clip::core::LayerIndexer indexer(clip::core::LayerIndexOptions{});
    std::vector<char> chunk(1u << 20);
    while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0)
      indexer.Feed(reinterpret_cast<const uint8_t*>(chunk.data()), static_cast<size_t>(in.gcount()));
    clip::core::LayerIndex index = indexer.Finish();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf("{\"seconds\": %.3f, \"maxRss\": %ld, \"uncompressedSize\": %llu, \"checkpoints\": %zu}\n", seconds,
                usage.ru_maxrss * 1024L, static_cast<unsigned long long>(index.uncompressed_size),
                index.checkpoints.checkpoints.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "index_stream: %s\n", e.what());
    return 1;
  }
}
