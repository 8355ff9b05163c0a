// libFuzzer target: CheckpointIndex::Deserialize, and reads through whatever
// index it accepts.
//
// A serialized index comes from disk or the network, so Deserialize must
// turn any bytes into either a valid index or CoreError, and a RangeReader
// driven by an accepted index must never crash, whatever lies the index
// tells about offsets, bits, windows, proof sizes, output ends and digests. Each input is tried twice: as
// given, and with its trailing CRC-32 recomputed, because random mutations
// almost never keep the checksum right and would otherwise never reach the
// structural checks. An accepted index must serialize back to the same
// bytes (the format has exactly one encoding of each index). Accepted
// indexes then drive reads, with both engines, over a small two-member
// gzip blob (FuzzBlob(), built deterministically at start-up) and over the
// input bytes themselves.
//
// Seeds: fuzz/corpus/fuzz_checkpoint_index/ holds indexes of FuzzBlob()
// plus a few mangled ones. To regenerate them, run the built target with
// CLIP_FUZZ_WRITE_SEEDS=<dir>: it writes the seeds there and exits.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "../core/checkpoint_index.h"
#include "../core/checkpointing_inflater.h"
#include "../core/compressed_source.h"
#include "../core/error.h"
#include "../core/range_reader.h"

namespace {

using clip::core::CheckpointIndex;
using clip::core::CheckpointKind;
using clip::core::InflateEngine;

// One gzip member of `data` with small deflate blocks (a low memLevel), so
// a short blob still has many block boundaries.
void AppendMember(std::vector<uint8_t>& out, const std::vector<uint8_t>& data, int level, int mem_level) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, 31, mem_level, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::vector<uint8_t> buffer(deflateBound(&z, data.size()) + 64);
  z.next_in = const_cast<Bytef*>(data.data());
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = buffer.data();
  z.avail_out = static_cast<uInt>(buffer.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.insert(out.end(), buffer.begin(), buffer.begin() + static_cast<ptrdiff_t>(z.total_out));
  deflateEnd(&z);
}

// ~45 KiB of compressed text in two members, the same on every run.
const std::vector<uint8_t>& FuzzBlob() {
  static const std::vector<uint8_t> blob = [] {
    std::vector<uint8_t> text;
    uint32_t state = 12345;
    static const char* const kWords[] = {"alpha", "beta", "gamma", "delta", "usr", "lib", "\n", "0123", "tar"};
    while (text.size() < 64000) {
      state = state * 1103515245 + 12345;
      const char* word = kWords[(state >> 16) % 9];
      while (*word) text.push_back(static_cast<uint8_t>(*word++));
      text.push_back(static_cast<uint8_t>(' ' + ((state >> 8) & 3)));
      if (((state >> 20) & 63) == 0) {
        for (int i = 0; i < 24; ++i) {
          state = state * 1103515245 + 12345;
          text.push_back(static_cast<uint8_t>(state >> 24));
        }
      }
    }
    std::vector<uint8_t> first(text.begin(), text.begin() + 40000), second(text.begin() + 40000, text.end());
    std::vector<uint8_t> out;
    AppendMember(out, first, 6, 5);   // ~2K-symbol blocks: ISA-L finds these boundaries
    AppendMember(out, second, 1, 1);  // 128-symbol blocks: mostly only zlib does
    return out;
  }();
  return blob;
}

void Reseal(std::vector<uint8_t>& bytes) {
  if (bytes.size() < 4) return;
  uint32_t crc = static_cast<uint32_t>(crc32(0, bytes.data(), static_cast<uInt>(bytes.size() - 4)));
  for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

// Reads a few ranges chosen from the index itself; errors are fine, crashes are not.
void ExerciseReads(const CheckpointIndex& index, std::span<const uint8_t> input) {
  const std::vector<uint8_t>& blob = FuzzBlob();
  clip::core::MemorySource blob_source(0, blob.data(), blob.size());
  clip::core::MemorySource input_source(0, input.data(), input.size());
  std::vector<uint64_t> offsets = {0, index.uncompressed_size / 2, index.uncompressed_size - 1};
  for (size_t i = 0; i < index.checkpoints.size() && i < 4; ++i) offsets.push_back(index.checkpoints[i].uncompressed_offset);
  uint8_t out[2048];
  for (const clip::core::CompressedSource* source :
       {static_cast<const clip::core::CompressedSource*>(&blob_source),
        static_cast<const clip::core::CompressedSource*>(&input_source)}) {
    for (InflateEngine engine : {InflateEngine::kIsal, InflateEngine::kZlib}) {
      clip::core::RangeReader reader(index, *source, engine);
      for (uint64_t offset : offsets) {
        try {
          reader.Read(offset, out, sizeof(out));
        } catch (const clip::core::CoreError&) {
        }
        try {
          clip::core::CompressedSpan span = index.SpanFor(offset, 100);
          if (span.begin > span.end) __builtin_trap();
        } catch (const clip::core::CoreError&) {
        }
      }
    }
  }
}

void TryIndex(std::span<const uint8_t> bytes, std::span<const uint8_t> input) {
  CheckpointIndex index;
  try {
    index = CheckpointIndex::Deserialize(bytes);
  } catch (const clip::core::CoreError&) {
    return;
  }
  std::vector<uint8_t> again = index.Serialize();
  if (again.size() != bytes.size() || !std::equal(again.begin(), again.end(), bytes.begin())) __builtin_trap();
  ExerciseReads(index, input);
}

// Indexes FuzzBlob() the way the indexer would.
std::vector<uint8_t> BlobIndex(InflateEngine engine, uint64_t spacing) {
  const std::vector<uint8_t>& blob = FuzzBlob();
  CheckpointIndex index;
  index.spacing = spacing;
  index.proof_size = 1024;  // several proofs per span
  std::map<uint64_t, uint64_t> measured;
  clip::core::CheckpointingInflater inflater(
      engine, spacing, [](const uint8_t*, size_t, uint64_t) {},
      [&](uint64_t u, uint64_t c, uint8_t bits, CheckpointKind kind, std::span<const uint8_t> window) {
        index.Add(u, c, bits, kind, window);
      });
  inflater.MeasureProofs(index.proof_size, [&](uint64_t c, uint64_t u) { measured[c] = u; });
  inflater.Feed(blob.data(), blob.size());
  inflater.Finish();
  index.compressed_size = blob.size();
  index.uncompressed_size = inflater.uncompressed_produced();
  index.SetProofOutputs(measured);
  index.ComputeProofs(blob);
  return index.Serialize();
}

void WriteSeed(const std::string& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  std::string path = dir + "/" + name;
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file || std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size()) std::abort();
  std::fclose(file);
}

void WriteSeeds(const std::string& dir) {
  std::vector<uint8_t> isal = BlobIndex(InflateEngine::kIsal, 8192);
  std::vector<uint8_t> zlib = BlobIndex(InflateEngine::kZlib, 12000);
  WriteSeed(dir, "isal-8k", isal);
  WriteSeed(dir, "zlib-12k", zlib);
  WriteSeed(dir, "members-only", BlobIndex(InflateEngine::kIsal, 0));
  CheckpointIndex tar;
  tar.format = clip::core::LayerFormat::kTar;
  tar.compressed_size = tar.uncompressed_size = 4096;
  WriteSeed(dir, "tar", tar.Serialize());
  // Mangled: wrong bits (resealed), a wrong proof digest (resealed: a
  // valid index whose reads of that proof fail EDIGEST), a wrong output
  // end (resealed), a lying count (resealed), versions 1 and 2 (no and
  // per-span digests) and a newer version, a cut in the middle, a broken
  // checksum. Checkpoints start at byte 56 and take 32 bytes, then 40 per
  // proof (output end, SHA-256), then their stored window (the first, a
  // member start, has none).
  const size_t second = 56 + 32 + 40 * CheckpointIndex::Deserialize(isal).checkpoints[0].proofs.size();
  // Writes `bytes` with the bytes at the given offsets XORed with the given
  // masks, its checksum recomputed.
  auto mangled = [&](const char* name, std::vector<uint8_t> bytes, std::initializer_list<std::pair<size_t, uint8_t>> flips) {
    for (auto [at, mask] : flips) bytes.at(at) ^= mask;
    Reseal(bytes);
    WriteSeed(dir, name, bytes);
  };
  mangled("mangled-bits", isal, {{second + 16, 5}});   // the second checkpoint's bits
  mangled("mangled-digest", isal, {{56 + 32 + 8 + 5, 0x10}});  // the first proof's digest
  mangled("mangled-output", isal, {{56 + 32 + 1, 0x02}});  // the first proof's output end
  mangled("mangled-v1", isal, {{8, 0x02}});  // version 3 -> 1
  mangled("mangled-v2", isal, {{8, 0x01}});  // version 3 -> 2
  mangled("mangled-count", zlib, {{48, 0xff}, {49, 0xff}});
  mangled("mangled-version", zlib, {{8, 0x0a}});  // version 3 -> 9
  WriteSeed(dir, "mangled-cut", std::vector<uint8_t>(isal.begin(), isal.begin() + static_cast<ptrdiff_t>(isal.size() / 2)));
  std::vector<uint8_t> crc = isal;
  crc[crc.size() / 3] ^= 1;
  WriteSeed(dir, "mangled-crc", crc);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  FuzzBlob();
  if (const char* dir = std::getenv("CLIP_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> input(data, size);
  TryIndex(input, input);
  if (size >= 4) {
    std::vector<uint8_t> resealed(data, data + size);
    Reseal(resealed);
    TryIndex(resealed, input);
  }
  return 0;
}
