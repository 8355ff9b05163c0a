// index_stream: feeds a layer blob to core::LayerIndexer in 1 MiB chunks, as
// a download would arrive, and prints JSON with the wall time and the
// process's peak RSS. The engine benchmark uses it to measure the indexer's
// own memory, without Node's.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
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
    clip::core::LayerIndexOptions options;
    // CLIP_SPACING overrides the checkpoint spacing (0: none), to measure what checkpointing costs.
    if (const char* spacing = std::getenv("CLIP_SPACING")) options.spacing = std::strtoull(spacing, nullptr, 10);
    clip::core::LayerIndexer indexer(options);
    std::vector<char> chunk(1u << 20);
    while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0)
      indexer.Feed(reinterpret_cast<const uint8_t*>(chunk.data()), static_cast<size_t>(in.gcount()));
    clip::core::LayerIndex index = indexer.Finish();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    // CPU time of this thread alone (inflation and tar parsing; hashing runs on the side thread).
    rusage self{};
    getrusage(RUSAGE_THREAD, &self);
    double inflate_cpu = static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
                         static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) / 1e6;
    std::printf("{\"seconds\": %.3f, \"maxRss\": %ld, \"uncompressedSize\": %llu, \"checkpoints\": %zu, \"inflateThreadCpu\": %.3f}\n", seconds,
                usage.ru_maxrss * 1024L, static_cast<unsigned long long>(index.uncompressed_size),
                index.checkpoints.checkpoints.size(), inflate_cpu);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "index_stream: %s\n", e.what());
    return 1;
  }
}
