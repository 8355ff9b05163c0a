// libFuzzer target for TarParser.
//
// The input is a tar stream. It is parsed twice: once in a single Feed, once
// in chunks whose sizes come from a PRNG seeded with a hash of the input (so
// the corpus stays plain tar files that other tools can open, and a mutation
// also changes the chunking). Both runs must end the same way: the same
// entries, then success or the same CoreError. A CoreError is an accepted
// outcome; a crash, a sanitizer report, a leak, another exception type, a
// hang, or the two runs disagreeing is a bug. A few invariants of the emitted
// entries are checked as well.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../core/error.h"
#include "../core/tar_parser.h"

namespace {

using clip::core::CoreError;
using clip::core::EntryType;
using clip::core::TarEntry;
using clip::core::TarParser;

void Require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_tar invariant violated: %s\n", what);
    std::abort();
  }
}

void AppendField(std::string* out, const std::string& s) {
  *out += std::to_string(s.size());
  out->push_back(':');
  *out += s;
}

// An unambiguous serialization of everything in the entry.
void AppendEntry(std::string* out, const TarEntry& e) {
  AppendField(out, e.path);
  AppendField(out, e.uname);
  AppendField(out, e.gname);
  AppendField(out, e.link_target);
  for (const auto& [name, value] : e.xattrs) {
    AppendField(out, name);
    AppendField(out, value);
  }
  for (uint64_t n : {uint64_t(e.type), uint64_t(e.mode), uint64_t(e.uid), uint64_t(e.gid), uint64_t(e.mtime_sec),
                     uint64_t(e.mtime_nsec), e.size, e.data_offset, e.header_offset, uint64_t(e.devmajor),
                     uint64_t(e.devminor), uint64_t(e.xattrs.size())}) {
    *out += std::to_string(n);
    out->push_back(',');
  }
  out->push_back('\n');
}

void CheckEntry(const TarEntry& e, uint64_t fed_end) {
  Require(!e.path.empty(), "empty path");
  Require(e.mode <= 07777, "mode has type bits");
  Require(e.mtime_nsec < 1000000000u, "nsec out of range");
  Require(e.size <= (uint64_t{1} << 62), "size out of range");
  if (e.type == EntryType::kRegular) {
    Require(e.data_offset % 512 == 0, "data_offset not block aligned");
    Require(e.data_offset >= e.header_offset + 512, "data_offset before the header ends");
    Require(e.data_offset <= fed_end, "data_offset past the bytes fed");
  } else {
    Require(e.size == 0 && e.data_offset == 0, "non-regular entry with content");
  }
  if (e.type != EntryType::kSymlink && e.type != EntryType::kHardlink) Require(e.link_target.empty(), "stray link");
}

struct Outcome {
  std::string entries;
  std::string error;  // empty on success
};

// Feeds `data` in chunks of the sizes `next_chunk` returns; returns how it ended.
template <typename NextChunk>
Outcome Run(const uint8_t* data, size_t size, NextChunk next_chunk) {
  Outcome outcome;
  uint64_t fed = 0;
  TarParser parser([&](TarEntry&& e) {
    CheckEntry(e, fed);
    AppendEntry(&outcome.entries, e);
  });
  try {
    while (fed < size) {
      size_t n = next_chunk();
      if (n == 0) n = 1;
      if (n > size - fed) n = size - fed;
      const uint64_t before = parser.entry_count();
      fed += n;  // the sink sees entries whose headers lie inside this chunk
      parser.Feed(data + (fed - n), n, fed - n);
      Require(parser.entry_count() >= before, "entry_count went backwards");
      // Between entries the next header starts less than a block back; at
      // the end marker, it cannot lie past what was fed.
      Require(parser.at_end_marker() ? parser.bytes_consumed() <= fed : parser.bytes_consumed() + 512 > fed,
              "bytes_consumed out of place");
    }
    parser.Finish();
  } catch (const CoreError& e) {
    outcome.error = std::to_string(static_cast<int>(e.code())) + " " + e.what();
  }
  return outcome;
}

uint64_t Fnv1a(const uint8_t* data, size_t size) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Outcome whole = Run(data, size, [&] { return size; });

  uint64_t state = Fnv1a(data, size) | 1;
  const Outcome chunked = Run(data, size, [&]() -> size_t {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    // Mostly tiny chunks (header and record boundaries), some block-sized
    // and some large ones.
    switch (state % 4) {
      case 0: return static_cast<size_t>((state >> 8) % 8 + 1);
      case 1: return static_cast<size_t>((state >> 8) % 600 + 1);
      case 2: return 512;
      default: return static_cast<size_t>((state >> 8) % 70000 + 1);
    }
  });

  if (whole.entries != chunked.entries || whole.error != chunked.error) {
    std::fprintf(stderr, "fuzz_tar: chunked parse differs from whole-buffer parse\nwhole error: %s\nchunked error: %s\n",
                 whole.error.c_str(), chunked.error.c_str());
    std::abort();
  }
  return 0;
}
