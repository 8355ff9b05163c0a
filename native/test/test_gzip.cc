// Tests of the checkpointed gzip engine: CheckpointingInflater (both
// engines), CheckpointIndex (search, spans, the serialized form) and
// RangeReader (restarts, random reads, concurrency, errors).
//
// Fixtures are made here with the real tools (gzip, pigz, python3's zlib)
// under TempDir(), and `gzip -dc` is the oracle for every byte. The >4 GiB
// case reuses /var/cache/clip-native/zeros-4.3g.gz (made once if absent);
// the "debian" case needs CLIP_DEBIAN_LAYER to name a real .tar.gz layer.
#include <fcntl.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../core/checkpoint_index.h"
#include "../core/checkpointing_inflater.h"
#include "../core/compressed_source.h"
#include "../core/inflate_engine.h"
#include "../core/layer_filler.h"
#include "../core/layer_indexer.h"
#include "../core/sha256.h"
#include "../core/range_reader.h"
#include "harness.h"

namespace {

using clip::core::Checkpoint;
using clip::core::CheckpointIndex;
using clip::core::CheckpointingInflater;
using clip::core::CheckpointKind;
using clip::core::CompressedSpan;
using clip::core::CoreError;
using clip::core::ErrorCode;
using clip::core::FileSource;
using clip::core::InflateEngine;
using clip::core::IndexLayerFile;
using clip::core::Proof;
using clip::core::LayerFillOptions;
using clip::core::LayerFiller;
using clip::core::LayerFormat;
using clip::core::LayerIndex;
using clip::core::LayerIndexer;
using clip::core::LayerIndexOptions;
using clip::core::MemorySource;
using clip::core::RangeReader;
using clip::test::ReadFile;
using clip::test::Shell;
using clip::test::TempDir;
using clip::test::WriteFile;
using Bytes = std::vector<uint8_t>;

constexpr InflateEngine kEngines[] = {InflateEngine::kIsal, InflateEngine::kZlib};

std::string Path(const std::string& name) { return TempDir() + "/" + name; }

void MustRun(const std::string& command) {
  if (Shell(command) != 0) throw clip::test::Failure("command failed: " + command);
}

// Text-like data with some incompressible stretches, so gzip makes dynamic,
// and now and then stored, blocks. Deterministic for a seed.
Bytes SampleData(size_t size, uint32_t seed) {
  static const char* const kWords[] = {"usr",   "lib",   "share", "doc",    "bin",    "etc",     "var",
                                       "local", "x86_64", "linux", "gnu",    "python", "perl",    "debian",
                                       "so",    "conf",  "the",   "package", "version", "copyright", "\n"};
  std::mt19937 rng(seed);
  Bytes out;
  out.reserve(size);
  while (out.size() < size) {
    uint32_t r = rng();
    if (r % 97 == 0) {
      size_t n = 1024 + rng() % 40000;  // random bytes: incompressible
      for (size_t i = 0; i < n && out.size() < size; ++i) out.push_back(static_cast<uint8_t>(rng()));
    } else {
      const char* w = kWords[r % (sizeof(kWords) / sizeof(kWords[0]))];
      while (*w && out.size() < size) out.push_back(static_cast<uint8_t>(*w++));
      if (out.size() < size) out.push_back(r % 5 == 0 ? '/' : ' ');
      if (r % 13 == 0) {
        std::string number = std::to_string(rng() % 100000);
        for (char c : number) {
          if (out.size() < size) out.push_back(static_cast<uint8_t>(c));
        }
      }
    }
  }
  return out;
}

// Writes `data` to name.raw and compresses it with `command` (reading stdin,
// writing stdout) into name; returns the gzip bytes.
Bytes Compress(const std::string& name, const Bytes& data, const std::string& command) {
  WriteFile(Path(name + ".raw"), data);
  MustRun(command + " < '" + Path(name + ".raw") + "' > '" + Path(name) + "'");
  return ReadFile(Path(name));
}

// The oracle: gzip -dc.
Bytes Oracle(const std::string& gz_path) {
  std::string out = gz_path + ".oracle";
  MustRun("gzip -dc < '" + gz_path + "' > '" + out + "'");
  return ReadFile(out);
}

struct Indexed {
  CheckpointIndex index;
  Bytes output;  // everything the output sink received, in order
};

// Runs the checkpointing pass over `gz` fed in pieces of `chunk` bytes.
// With `keep_output` false the output is only checked for order.
Indexed IndexBytes(const Bytes& gz, InflateEngine engine, uint64_t spacing, size_t chunk = 1 << 20,
                   bool keep_output = true) {
  Indexed result;
  result.index.format = LayerFormat::kGzip;
  result.index.spacing = spacing;
  uint64_t expected_offset = 0;
  CheckpointingInflater inflater(
      engine, spacing,
      [&](const uint8_t* data, size_t len, uint64_t offset) {
        if (offset != expected_offset) throw clip::test::Failure("output out of order");
        expected_offset += len;
        if (keep_output) result.output.insert(result.output.end(), data, data + len);
      },
      [&](uint64_t uncompressed, uint64_t compressed, uint8_t bits, CheckpointKind kind,
          std::span<const uint8_t> window) {
        // Block checkpoints may trail their offset by a few hundred KiB (sparse-window analysis).
        if (uncompressed > expected_offset || expected_offset - uncompressed > 400 * 1024) {
          throw clip::test::Failure("checkpoint out of step with the output");
        }
        result.index.Add(uncompressed, compressed, bits, kind, window);
      });
  for (size_t pos = 0; pos < gz.size(); pos += chunk) {
    inflater.Feed(gz.data() + pos, std::min(chunk, gz.size() - pos));
  }
  inflater.Finish();
  result.index.compressed_size = gz.size();
  result.index.uncompressed_size = inflater.uncompressed_produced();
  CHECK_EQ(inflater.compressed_consumed(), gz.size());
  result.index.ComputeProofs(gz);
  return result;
}

// Feeds all of `gz` and finishes; returns the error code thrown, or -1.
int IndexErrorCode(const Bytes& gz, InflateEngine engine, size_t chunk = 1 << 20, std::string* message = nullptr) {
  try {
    IndexBytes(gz, engine, 64 * 1024, chunk, false);
  } catch (const CoreError& e) {
    if (message) *message = e.what();
    return static_cast<int>(e.code());
  }
  return -1;
}

void CheckCorrupt(const Bytes& gz, const char* what) {
  for (InflateEngine engine : kEngines) {
    std::string message;
    int code = IndexErrorCode(gz, engine, 1 << 20, &message);
    if (code != static_cast<int>(ErrorCode::kCorrupt)) {
      throw clip::test::Failure(std::string(what) + ": expected ECORRUPT with " +
                                clip::core::InflateEngineName(engine) + ", got code " + std::to_string(code) +
                                " " + message);
    }
  }
}

// Checks the checkpoint list's shape: a member start at 0, increasing
// offsets, windows as long as they can be.
void CheckShape(const CheckpointIndex& index) {
  CHECK(!index.checkpoints.empty());
  CHECK_EQ(index.checkpoints[0].uncompressed_offset, 0u);
  CHECK_EQ(index.checkpoints[0].compressed_offset, 0u);
  CHECK(index.checkpoints[0].kind == CheckpointKind::kMemberStart);
  for (size_t i = 1; i < index.checkpoints.size(); ++i) {
    CHECK(index.checkpoints[i].uncompressed_offset > index.checkpoints[i - 1].uncompressed_offset);
    CHECK(index.checkpoints[i].compressed_offset >= index.checkpoints[i - 1].compressed_offset);
    CHECK(index.checkpoints[i].compressed_offset <= index.compressed_size);
  }
}

void ExpectRead(const RangeReader& reader, const Bytes& oracle, uint64_t offset, size_t len) {
  Bytes got(len);
  reader.Read(offset, got.data(), len);
  if (std::memcmp(got.data(), oracle.data() + offset, len) != 0) {
    throw clip::test::Failure("read [" + std::to_string(offset) + ", +" + std::to_string(len) +
                              ") differs from the oracle");
  }
}

// Restarts at every checkpoint, with every engine: a read that starts at
// the checkpoint, one that ends there and one that spans it.
void CheckEveryRestart(const CheckpointIndex& index, const Bytes& gz, const Bytes& oracle) {
  MemorySource source(0, gz.data(), gz.size());
  for (InflateEngine engine : kEngines) {
    RangeReader reader(index, source, engine);
    for (const Checkpoint& c : index.checkpoints) {
      uint64_t at = c.uncompressed_offset;
      if (at < oracle.size()) ExpectRead(reader, oracle, at, static_cast<size_t>(std::min<uint64_t>(70000, oracle.size() - at)));
      if (at > 0) {
        uint64_t from = at > 5000 ? at - 5000 : 0;
        ExpectRead(reader, oracle, from, static_cast<size_t>(at - from));
        ExpectRead(reader, oracle, at - 1, static_cast<size_t>(std::min<uint64_t>(2, oracle.size() - (at - 1))));
      }
    }
  }
}

void CheckRandomReads(const CheckpointIndex& index, const Bytes& gz, const Bytes& oracle, int count, uint32_t seed) {
  if (oracle.empty()) return;
  std::mt19937_64 rng(seed);
  MemorySource source(0, gz.data(), gz.size());
  for (InflateEngine engine : kEngines) {
    RangeReader reader(index, source, engine);
    for (int i = 0; i < count; ++i) {
      uint64_t offset = rng() % oracle.size();
      size_t len = static_cast<size_t>(std::min<uint64_t>(1 + rng() % 200000, oracle.size() - offset));
      ExpectRead(reader, oracle, offset, len);
    }
  }
}

// Reads through a MemorySource that holds exactly SpanFor's bytes.
void CheckSpanReads(const CheckpointIndex& index, const Bytes& gz, const Bytes& oracle, int count, uint32_t seed) {
  if (oracle.empty()) return;
  std::mt19937_64 rng(seed);
  auto check = [&](uint64_t offset, size_t len) {
    CompressedSpan span = index.SpanFor(offset, len);
    CHECK(span.begin <= span.end);
    CHECK(span.end <= gz.size());
    MemorySource source(span.begin, gz.data() + span.begin, static_cast<size_t>(span.end - span.begin));
    for (InflateEngine engine : kEngines) {
      RangeReader reader(index, source, engine);
      ExpectRead(reader, oracle, offset, len);
    }
  };
  for (int i = 0; i < count; ++i) {
    uint64_t offset = rng() % oracle.size();
    size_t len = static_cast<size_t>(std::min<uint64_t>(1 + rng() % 100000, oracle.size() - offset));
    check(offset, len);
  }
  // Ranges that end exactly at, and just past, each checkpoint.
  for (size_t i = 1; i < index.checkpoints.size(); ++i) {
    uint64_t at = index.checkpoints[i].uncompressed_offset;
    if (at == 0 || at > oracle.size()) continue;
    uint64_t from = at > 3000 ? at - 3000 : 0;
    check(from, static_cast<size_t>(at - from));
    if (at < oracle.size()) check(from, static_cast<size_t>(at + 1 - from));
  }
}

// The full battery for one fixture: index with both engines (whole buffer
// and odd chunks), compare output, shape, serialization, restarts, reads.
void CheckFixture(const std::string& name, uint64_t spacing, int random_reads = 40) {
  Bytes gz = ReadFile(Path(name));
  Bytes oracle = Oracle(Path(name));
  for (InflateEngine engine : kEngines) {
    Indexed whole = IndexBytes(gz, engine, spacing);
    CHECK(whole.output == oracle);
    CHECK_EQ(whole.index.uncompressed_size, oracle.size());
    CheckShape(whole.index);
    Indexed odd = IndexBytes(gz, engine, spacing, 4093);
    CHECK(odd.output == oracle);
    CheckShape(odd.index);
    CheckpointIndex copy = CheckpointIndex::Deserialize(whole.index.Serialize());
    CHECK_EQ(copy.checkpoints.size(), whole.index.checkpoints.size());
    CheckEveryRestart(copy, gz, oracle);
    CheckRandomReads(copy, gz, oracle, random_reads, 7);
    CheckSpanReads(copy, gz, oracle, random_reads, 11);
  }
}

// Number of checkpoints of each kind.
size_t CountKind(const CheckpointIndex& index, CheckpointKind kind) {
  return static_cast<size_t>(std::count_if(index.checkpoints.begin(), index.checkpoints.end(),
                                           [&](const Checkpoint& c) { return c.kind == kind; }));
}

// A gzip member built by hand: header with the given flags and fields,
// zlib raw deflate of `data`, CRC and size trailer.
Bytes HandMadeMember(const Bytes& data, uint8_t flags, int level = 6) {
  Bytes out = {0x1f, 0x8b, 8, flags, 1, 2, 3, 4, 0, 3};
  if (flags & 0x04) {
    Bytes extra = {'A', 'B', 4, 0, 'x', 'y', 'z', 'w'};
    out.push_back(static_cast<uint8_t>(extra.size()));
    out.push_back(0);
    out.insert(out.end(), extra.begin(), extra.end());
  }
  if (flags & 0x08) {
    const char* name = "file-name.tar";
    out.insert(out.end(), name, name + std::strlen(name) + 1);
  }
  if (flags & 0x10) {
    const char* comment = "a comment, for the header parser";
    out.insert(out.end(), comment, comment + std::strlen(comment) + 1);
  }
  if (flags & 0x02) {
    uint32_t crc = static_cast<uint32_t>(crc32(0, out.data(), static_cast<uInt>(out.size())));
    out.push_back(static_cast<uint8_t>(crc));
    out.push_back(static_cast<uint8_t>(crc >> 8));
  }
  z_stream z{};
  deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
  Bytes deflated(deflateBound(&z, data.size()) + 16);
  z.next_in = const_cast<Bytef*>(data.data());
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = deflated.data();
  z.avail_out = static_cast<uInt>(deflated.size());
  deflate(&z, Z_FINISH);
  deflated.resize(z.total_out);
  deflateEnd(&z);
  out.insert(out.end(), deflated.begin(), deflated.end());
  uint32_t crc = static_cast<uint32_t>(crc32(0, data.data(), static_cast<uInt>(data.size())));
  uint32_t size = static_cast<uint32_t>(data.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(crc >> (8 * i)));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(size >> (8 * i)));
  return out;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

// ---------------------------------------------------------------------------
// Formats and fixtures

TEST(gzip_empty_member) {
  MustRun("gzip -c < /dev/null > '" + Path("empty.gz") + "'");
  Bytes gz = ReadFile(Path("empty.gz"));
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(gz, engine, 64 * 1024);
    CHECK_EQ(result.index.uncompressed_size, 0u);
    CHECK_EQ(result.index.checkpoints.size(), 1u);
    CheckShape(result.index);
    CheckpointIndex copy = CheckpointIndex::Deserialize(result.index.Serialize());
    MemorySource source(0, gz.data(), gz.size());
    RangeReader reader(copy, source, engine);
    reader.Read(0, nullptr, 0);
    uint8_t byte;
    CHECK_THROWS_CODE(reader.Read(0, &byte, 1), ErrorCode::kInvalidArgument);
  }
}

TEST(gzip_stored_blocks) {
  Bytes data = SampleData(3 << 20, 1);
  WriteFile(Path("stored.raw"), data);
  MustRun("python3 -c \"import sys,zlib; c=zlib.compressobj(0, zlib.DEFLATED, 31); d=open(sys.argv[1],'rb').read(); "
          "sys.stdout.buffer.write(c.compress(d)+c.flush())\" '" +
          Path("stored.raw") + "' > '" + Path("stored.gz") + "'");
  CheckFixture("stored.gz", 128 * 1024);
  Indexed result = IndexBytes(ReadFile(Path("stored.gz")), InflateEngine::kIsal, 128 * 1024);
  // Stored blocks always yield a boundary: about one per 128 KiB plus a block.
  CHECK(result.index.checkpoints.size() >= 12);
}

TEST(gzip_levels_1_6_9) {
  Bytes data = SampleData(4 << 20, 2);
  for (const char* level : {"1", "6", "9"}) {
    std::string name = std::string("level") + level + ".gz";
    Compress(name, data, std::string("gzip -n -") + level);
    CheckFixture(name, 256 * 1024, 20);
  }
}

TEST(gzip_pigz_output) {
  Bytes data = SampleData(4 << 20, 3);
  Compress("pigz.gz", data, "pigz -p 2 -6");
  CheckFixture("pigz.gz", 256 * 1024, 20);
}

TEST(gzip_multi_member) {
  Bytes a = SampleData(700000, 4), b = SampleData(900000, 5);
  Compress("a.gz", a, "gzip -6");
  Compress("b.gz", b, "gzip -1");
  MustRun("gzip -c < /dev/null > '" + Path("e.gz") + "'");
  MustRun("cat '" + Path("e.gz") + "' '" + Path("a.gz") + "' '" + Path("e.gz") + "' '" + Path("b.gz") + "' '" +
          Path("e.gz") + "' > '" + Path("multi.gz") + "'");
  CheckFixture("multi.gz", 128 * 1024);
  Bytes gz = ReadFile(Path("multi.gz"));
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(gz, engine, 128 * 1024);
    // e, a, b and the trailing e start new uncompressed offsets; the e
    // right after a starts where b does, so only one of them counts.
    CHECK_EQ(CountKind(result.index, CheckpointKind::kMemberStart), 3u);
  }
}

TEST(gzip_small_blocks) {
  // Tiny deflate blocks (memLevel 1) in members of 60 KB: block checkpoints
  // close after member starts, with windows shorter than 32 KiB, which
  // later output may still reach past (up to 32 KiB after the checkpoint).
  Bytes data = SampleData(600000, 20);
  WriteFile(Path("small.raw"), data);
  MustRun("python3 -c \"import sys,zlib; d=open(sys.argv[1],'rb').read(); out=sys.stdout.buffer\n"
          "for i in range(0, len(d), 60000):\n"
          "  c=zlib.compressobj(6, zlib.DEFLATED, 31, 1); out.write(c.compress(d[i:i+60000])+c.flush())\" '" +
          Path("small.raw") + "' > '" + Path("small.gz") + "'");
  CheckFixture("small.gz", 8192, 20);
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(ReadFile(Path("small.gz")), engine, 8192);
    CHECK(result.index.checkpoints.size() > 40);
    CHECK(std::any_of(result.index.checkpoints.begin(), result.index.checkpoints.end(), [](const Checkpoint& c) {
      return c.kind == CheckpointKind::kBlock && c.window_length < 32768;
    }));
  }
}

TEST(gzip_header_fields) {
  Bytes data = SampleData(300000, 6);
  Bytes gz;
  for (uint8_t flags : {0x00, 0x02, 0x04, 0x08, 0x10, 0x1e, 0x1f}) {
    Bytes member = HandMadeMember(data, flags);
    gz.insert(gz.end(), member.begin(), member.end());
  }
  WriteFile(Path("fields.gz"), gz);
  CheckFixture("fields.gz", 64 * 1024, 10);
  for (InflateEngine engine : kEngines) {
    Indexed bytewise = IndexBytes(gz, engine, 64 * 1024, 1);
    CHECK_EQ(bytewise.output.size(), data.size() * 7);
  }
  // A wrong header CRC.
  Bytes bad = HandMadeMember(data, 0x0a);
  size_t hcrc = 10 + std::strlen("file-name.tar") + 1;
  bad[hcrc] ^= 0x40;
  CheckCorrupt(bad, "header crc");
}

TEST(gzip_zeros_spans) {
  // Highly compressible data: one input chunk inflates to far more than one
  // output chunk, so span-limited sources run dry while the engine still
  // holds output.
  MustRun("head -c 67108864 /dev/zero | gzip -1 > '" + Path("zeros64m.gz") + "'");
  Bytes gz = ReadFile(Path("zeros64m.gz"));
  Bytes oracle(64u << 20, 0);
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(gz, engine, 8u << 20, 1 << 20, false);
    CHECK_EQ(result.index.uncompressed_size, oracle.size());
    // Blocks of ~4.2 MiB output each, so at most 8 checkpoints. zlib stops
    // at every boundary; ISA-L only where a 32-byte slice ends inside a
    // header, and these headers are shorter than that: it finds some.
    CHECK(result.index.checkpoints.size() >= (engine == InflateEngine::kZlib ? 8u : 5u));
    CheckSpanReads(result.index, gz, oracle, 10, 3);
    CheckEveryRestart(result.index, gz, oracle);
  }
}

TEST(gzip_tiny_spacing_and_chunks) {
  Bytes data = SampleData(2 << 20, 7);
  Compress("tiny.gz", data, "gzip -6");
  Bytes gz = ReadFile(Path("tiny.gz"));
  Bytes oracle = Oracle(Path("tiny.gz"));
  for (InflateEngine engine : kEngines) {
    Indexed reference = IndexBytes(gz, engine, 64 * 1024);
    CHECK(reference.index.checkpoints.size() >= 12);
    for (size_t chunk : {size_t{1}, size_t{7}, size_t{333}, size_t{65537}}) {
      Indexed result = IndexBytes(gz, engine, 64 * 1024, chunk);
      CHECK(result.output == oracle);
      CheckShape(result.index);
      CheckEveryRestart(result.index, gz, oracle);
    }
  }
}

TEST(gzip_cross_engine_restarts) {
  // Checkpoints found by one engine restart byte-exact in the other.
  Bytes data = SampleData(3 << 20, 8);
  Compress("cross.gz", data, "gzip -9");
  Bytes gz = ReadFile(Path("cross.gz"));
  Bytes oracle = Oracle(Path("cross.gz"));
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(gz, engine, 100 * 1000);
    CHECK(result.index.checkpoints.size() > 10);
    CheckEveryRestart(result.index, gz, oracle);  // reads with both engines
  }
}

TEST(gzip_request_checkpoint) {
  Bytes data = SampleData(3 << 20, 9);
  Compress("request.gz", data, "gzip -6");
  Bytes gz = ReadFile(Path("request.gz"));
  for (InflateEngine engine : kEngines) {
    CheckpointIndex index;
    std::vector<uint64_t> requested_at;
    CheckpointingInflater* self = nullptr;
    CheckpointingInflater inflater(
        engine, 0,
        [&](const uint8_t*, size_t len, uint64_t offset) {
          // Ask for a checkpoint about every 500 KB.
          if ((offset + len) / 500000 != offset / 500000) {
            requested_at.push_back(offset + len);
            self->RequestCheckpoint();
          }
        },
        [&](uint64_t u, uint64_t c, uint8_t bits, CheckpointKind kind, std::span<const uint8_t> window) {
          index.Add(u, c, bits, kind, window);
        });
    self = &inflater;
    inflater.Feed(gz.data(), gz.size());
    inflater.Finish();
    // spacing 0: only the member start and the requested ones, each soon
    // after its request (the last request may find no boundary after it).
    CHECK(requested_at.size() >= 5);
    CHECK(index.checkpoints.size() <= requested_at.size() + 1);
    CHECK(index.checkpoints.size() >= requested_at.size());
    for (size_t i = 0; i + 1 < index.checkpoints.size(); ++i) {
      uint64_t at = index.checkpoints[i + 1].uncompressed_offset;
      CHECK(at >= requested_at[i]);
      CHECK(at - requested_at[i] < 400000);
    }
  }
}

TEST(gzip_spacing_is_honoured) {
  Bytes data = SampleData(6 << 20, 10);
  Compress("spacing.gz", data, "gzip -6");
  Bytes gz = ReadFile(Path("spacing.gz"));
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(gz, engine, 512 * 1024, 1 << 20, false);
    const auto& c = result.index.checkpoints;
    CHECK(c.size() >= 10);
    for (size_t i = 1; i < c.size(); ++i) {
      uint64_t gap = c[i].uncompressed_offset - c[i - 1].uncompressed_offset;
      CHECK(gap >= 512 * 1024);
      CHECK(gap < 512 * 1024 + 400 * 1024);  // the first boundary after the threshold
      CHECK_EQ(c[i].window_length, 32768u);
    }
  }
}

// ---------------------------------------------------------------------------
// Stream errors

TEST(gzip_truncated_streams) {
  // Every cut inside a header with all optional fields, then cuts in the
  // deflate data and the trailer, and a cut inside a second member.
  Bytes data = SampleData(500000, 11);
  Bytes gz = HandMadeMember(data, 0x1e);
  Bytes second = HandMadeMember(SampleData(1000, 22), 0x08);
  size_t header = 10 + 2 + 8 + std::strlen("file-name.tar") + 1 + std::strlen("a comment, for the header parser") + 1 + 2;
  std::vector<size_t> cuts;
  for (size_t cut = 0; cut <= header + 2; ++cut) cuts.push_back(cut);
  for (size_t cut : {gz.size() / 3, gz.size() / 2, gz.size() - 9, gz.size() - 8, gz.size() - 3, gz.size() - 1}) {
    cuts.push_back(cut);
  }
  Bytes two = gz;
  two.insert(two.end(), second.begin(), second.end());
  for (size_t cut : cuts) {
    Bytes part(gz.begin(), gz.begin() + static_cast<ptrdiff_t>(cut));
    for (InflateEngine engine : kEngines) {
      std::string message;
      int code = IndexErrorCode(part, engine, 1 << 20, &message);
      if (code != static_cast<int>(ErrorCode::kTruncated)) {
        throw clip::test::Failure("cut at " + std::to_string(cut) + ": expected ETRUNCATED, got " +
                                  std::to_string(code) + " " + message);
      }
    }
  }
  for (size_t cut : {gz.size() + 1, gz.size() + 15, two.size() - 5}) {
    Bytes part(two.begin(), two.begin() + static_cast<ptrdiff_t>(cut));
    for (InflateEngine engine : kEngines) {
      CHECK_EQ(IndexErrorCode(part, engine, 777), static_cast<int>(ErrorCode::kTruncated));
    }
  }
}

TEST(gzip_corrupt_streams) {
  Bytes data = SampleData(800000, 12);
  Bytes gz = Compress("corrupt.gz", data, "gzip -6 -n");
  for (size_t at : {gz.size() / 4, gz.size() / 2, gz.size() * 3 / 4}) {
    Bytes bad = gz;
    bad[at] ^= 0x10;
    CheckCorrupt(bad, "flipped deflate byte");
  }
  {
    Bytes bad = gz;
    bad[gz.size() - 8] ^= 1;
    CheckCorrupt(bad, "bad CRC");
    std::string message;
    IndexErrorCode(bad, InflateEngine::kIsal, 1 << 20, &message);
    CHECK(message.find("at offset " + std::to_string(gz.size() - 8)) != std::string::npos);
  }
  {
    Bytes bad = gz;
    bad[gz.size() - 2] ^= 1;
    CheckCorrupt(bad, "bad ISIZE");
  }
  {
    Bytes bad = gz;
    bad[0] = 0x1e;
    CheckCorrupt(bad, "bad magic");
    bad = gz;
    bad[2] = 7;
    CheckCorrupt(bad, "bad method");
    bad = gz;
    bad[3] = 0x80;
    CheckCorrupt(bad, "reserved flag");
  }
  {
    Bytes bad = gz;
    const char garbage[] = "garbage";
    bad.insert(bad.end(), garbage, garbage + 7);
    CheckCorrupt(bad, "trailing garbage");
    bad = gz;
    bad.insert(bad.end(), 100, 0);
    bad.push_back(1);
    CheckCorrupt(bad, "garbage after zeros");
  }
  {
    // A corrupt-data message names an offset.
    std::string message;
    Bytes bad = gz;
    for (size_t i = gz.size() / 2; i < gz.size() / 2 + 64; ++i) bad[i] = 0xff;
    for (InflateEngine engine : kEngines) {
      IndexErrorCode(bad, engine, 1 << 20, &message);
      CHECK(message.find(" at offset ") != std::string::npos);
    }
  }
}

TEST(gzip_trailing_zeros_ok) {
  Bytes data = SampleData(300000, 13);
  Bytes gz = Compress("zeros-tail.gz", data, "gzip -6");
  gz.insert(gz.end(), 4096, 0);
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(gz, engine, 64 * 1024, 1000);
    CHECK(result.output == data);
  }
}

TEST(gzip_inflater_dead_after_error) {
  Bytes bad = {0x1f, 0x8c};
  CheckpointingInflater inflater(
      InflateEngine::kIsal, 0, [](const uint8_t*, size_t, uint64_t) {},
      [](uint64_t, uint64_t, uint8_t, CheckpointKind, std::span<const uint8_t>) {});
  // The engine sees the input in fixed segments: bad bytes are reported by
  // the call that completes their segment (Finish, for the last one).
  inflater.Feed(bad.data(), bad.size());
  CHECK_THROWS_CODE(inflater.Finish(), ErrorCode::kCorrupt);
  CHECK_THROWS_CODE(inflater.Feed(bad.data(), 1), ErrorCode::kInvalidArgument);
  Bytes bad_segment(256 * 1024, 0x1f);
  CheckpointingInflater early(
      InflateEngine::kZlib, 0, [](const uint8_t*, size_t, uint64_t) {},
      [](uint64_t, uint64_t, uint8_t, CheckpointKind, std::span<const uint8_t>) {});
  CHECK_THROWS_CODE(early.Feed(bad_segment.data(), bad_segment.size()), ErrorCode::kCorrupt);
  CHECK_THROWS_CODE(early.Finish(), ErrorCode::kInvalidArgument);
  CheckpointingInflater empty(
      InflateEngine::kZlib, 0, [](const uint8_t*, size_t, uint64_t) {},
      [](uint64_t, uint64_t, uint8_t, CheckpointKind, std::span<const uint8_t>) {});
  CHECK_THROWS_CODE(empty.Finish(), ErrorCode::kTruncated);
  Bytes gz = HandMadeMember(SampleData(1000, 21), 0);
  CheckpointingInflater done(
      InflateEngine::kIsal, 0, [](const uint8_t*, size_t, uint64_t) {},
      [](uint64_t, uint64_t, uint8_t, CheckpointKind, std::span<const uint8_t>) {});
  done.Feed(gz.data(), gz.size());
  done.Finish();
  CHECK_EQ(done.uncompressed_produced(), 1000u);
  CHECK_THROWS_CODE(done.Feed(gz.data(), 1), ErrorCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Index and reader

TEST(gzip_index_find_and_span) {
  CheckpointIndex index;
  index.compressed_size = 1000;
  index.uncompressed_size = 5000;
  Bytes window(100, 'w');
  index.Add(0, 0, 0, CheckpointKind::kMemberStart, {});
  index.Add(1000, 200, 3, CheckpointKind::kBlock, window);
  index.Add(3000, 600, 0, CheckpointKind::kBlock, window);
  CHECK_THROWS_CODE(index.Add(3000, 700, 0, CheckpointKind::kBlock, window), ErrorCode::kInvalidArgument);
  CHECK_THROWS_CODE(index.Add(4000, 700, 8, CheckpointKind::kBlock, window), ErrorCode::kInvalidArgument);
  CHECK_EQ(index.Find(0), 0u);
  CHECK_EQ(index.Find(999), 0u);
  CHECK_EQ(index.Find(1000), 1u);
  CHECK_EQ(index.Find(4999), 2u);
  CHECK_THROWS_CODE(index.Find(5000), ErrorCode::kInvalidArgument);
  CompressedSpan span = index.SpanFor(1500, 100);
  CHECK_EQ(span.checkpoint, 1u);
  CHECK_EQ(span.begin, 199u);  // the byte holding the 3 leading bits
  CHECK_EQ(span.end, 600u);
  span = index.SpanFor(1500, 1500);
  CHECK_EQ(span.end, 600u);  // ends exactly at the next checkpoint
  span = index.SpanFor(1500, 1501);
  CHECK_EQ(span.end, 1000u);
  CHECK_THROWS_CODE(index.SpanFor(4000, 1001), ErrorCode::kInvalidArgument);
  Bytes loaded;
  index.LoadWindow(1, loaded);
  CHECK(loaded == window);

  CheckpointIndex tar;
  tar.format = LayerFormat::kTar;
  tar.compressed_size = tar.uncompressed_size = 10000;
  span = tar.SpanFor(1234, 100);
  CHECK_EQ(span.begin, 1234u);
  CHECK_EQ(span.end, 1334u);
  CHECK_EQ(tar.Find(9999), 0u);
  CHECK_THROWS_CODE(tar.Add(0, 0, 0, CheckpointKind::kMemberStart, {}), ErrorCode::kInvalidArgument);
}

TEST(gzip_tar_layer_reads) {
  Bytes data = SampleData(100000, 14);
  WriteFile(Path("plain.tar"), data);
  CheckpointIndex index;
  index.format = LayerFormat::kTar;
  index.compressed_size = index.uncompressed_size = data.size();
  CheckpointIndex copy = CheckpointIndex::Deserialize(index.Serialize());
  FileSource source(Path("plain.tar"));
  RangeReader reader(copy, source, InflateEngine::kIsal);
  ExpectRead(reader, data, 0, 100);
  ExpectRead(reader, data, 99000, 1000);
  uint8_t byte;
  CHECK_THROWS_CODE(reader.Read(100000, &byte, 1), ErrorCode::kInvalidArgument);
  MemorySource short_source(0, data.data(), 5000);
  RangeReader short_reader(copy, short_source, InflateEngine::kIsal);
  Bytes buffer(200);
  CHECK_THROWS_CODE(short_reader.Read(4900, buffer.data(), 200), ErrorCode::kTruncated);
}

TEST(gzip_reader_errors) {
  Bytes data = SampleData(1 << 20, 15);
  Bytes gz = Compress("reader-errors.gz", data, "gzip -6");
  Indexed result = IndexBytes(gz, InflateEngine::kIsal, 128 * 1024);
  CheckpointIndex& index = result.index;
  CHECK(index.checkpoints.size() > 3);
  MemorySource source(0, gz.data(), gz.size());
  Bytes buffer(4096);
  for (InflateEngine engine : kEngines) {
    RangeReader reader(index, source, engine);
    CHECK_THROWS_CODE(reader.Read(data.size() - 10, buffer.data(), 11), ErrorCode::kInvalidArgument);
    CHECK_THROWS_CODE(reader.Read(data.size() + 1, buffer.data(), 0), ErrorCode::kInvalidArgument);
    CHECK_THROWS_CODE(reader.Read(~uint64_t{0}, buffer.data(), 2), ErrorCode::kInvalidArgument);
    reader.Read(data.size(), buffer.data(), 0);
    // A source that stops early.
    MemorySource half(0, gz.data(), gz.size() / 2);
    RangeReader half_reader(index, half, engine);
    CHECK_THROWS_CODE(half_reader.Read(data.size() - 4096, buffer.data(), 4096), ErrorCode::kTruncated);
    // Garbage where the deflate data should be.
    Bytes bad = gz;
    uint64_t c2 = index.checkpoints[2].compressed_offset;
    for (uint64_t i = c2; i < c2 + 200; ++i) bad[i] = 0xff;
    MemorySource bad_source(0, bad.data(), bad.size());
    RangeReader bad_reader(index, bad_source, engine);
    CHECK_THROWS_CODE(bad_reader.Read(index.checkpoints[2].uncompressed_offset + 10, buffer.data(), 100),
                      ErrorCode::kDigestMismatch);
    // The same garbage with span digests that vouch for it (an index made
    // from the bad blob) gets past verification: the engine says ECORRUPT.
    CheckpointIndex vouching = index;
    vouching.ComputeProofs(bad);
    RangeReader vouched_reader(vouching, bad_source, engine);
    CHECK_THROWS_CODE(vouched_reader.Read(index.checkpoints[2].uncompressed_offset + 10, buffer.data(), 100),
                      ErrorCode::kCorrupt);
  }
  // A window that does not inflate.
  CheckpointIndex broken = index;
  broken.checkpoints[1].stored_window.assign(10, 0xff);
  RangeReader broken_reader(broken, source, InflateEngine::kIsal);
  CHECK_THROWS_CODE(broken_reader.Read(broken.checkpoints[1].uncompressed_offset, buffer.data(), 10),
                    ErrorCode::kCorrupt);
  // A member CRC that fails is seen by a read that crosses the member end.
  Bytes a = HandMadeMember(SampleData(100000, 16), 0), b = HandMadeMember(SampleData(100000, 17), 0);
  Bytes two = a;
  two.insert(two.end(), b.begin(), b.end());
  Indexed two_index = IndexBytes(two, InflateEngine::kZlib, 0);
  two[a.size() - 8] ^= 1;
  MemorySource two_source(0, two.data(), two.size());
  for (InflateEngine engine : kEngines) {
    RangeReader reader(two_index.index, two_source, engine);
    CHECK_THROWS_CODE(reader.Read(99000, buffer.data(), 2000), ErrorCode::kDigestMismatch);
  }
  two_index.index.ComputeProofs(two);  // digests that vouch for the bad trailer: the CRC catches it
  for (InflateEngine engine : kEngines) {
    RangeReader reader(two_index.index, two_source, engine);
    CHECK_THROWS_CODE(reader.Read(99000, buffer.data(), 2000), ErrorCode::kCorrupt);
    reader.Read(98000, buffer.data(), 2000);  // ends at the member end: no trailer needed
  }
}

// A tar stream of a few files (some larger than the indexer's 512 KiB
// large-file threshold), gzip'd as two members split mid-stream.
Bytes TwoMemberTarGz(const std::string& name) {
  const std::string dir = Path(name + ".d");
  MustRun("rm -rf '" + dir + "' && mkdir -p '" + dir + "' && cd '" + dir + "' && " +
          "head -c 3000000 /dev/urandom | base64 > a && seq 1 200000 > b && head -c 700000 /dev/urandom > c && " +
          "tar -cf ../" + name + ".tar a b c && cd .. && head -c 1000000 " + name + ".tar | gzip -6 > " + name +
          ".gz && tail -c +1000001 " + name + ".tar | gzip -1 >> " + name + ".gz");
  return ReadFile(Path(name + ".gz"));
}

TEST(gzip_span_digests_streamed) {
  // LayerIndexer hashes the spans as the blob streams by, however it is
  // chunked; the digests must equal those computed from the whole blob.
  Bytes gz = TwoMemberTarGz("spans");
  // The diff_id and digest oracles: sha256sum of the gunzipped and the gzip'd stream.
  MustRun("gzip -dc < '" + Path("spans.gz") + "' | sha256sum | cut -c1-64 | tr -d '\\n' > '" + Path("spans.diffid") + "'");
  MustRun("sha256sum < '" + Path("spans.gz") + "' | cut -c1-64 | tr -d '\\n' > '" + Path("spans.digest") + "'");
  const Bytes diff_id_hex = ReadFile(Path("spans.diffid")), digest_hex = ReadFile(Path("spans.digest"));
  const std::string diff_id = "sha256:" + std::string(diff_id_hex.begin(), diff_id_hex.end());
  const std::string digest = "sha256:" + std::string(digest_hex.begin(), digest_hex.end());
  CHECK_EQ(diff_id.size(), 71u);
  for (InflateEngine engine : kEngines) {
    for (size_t chunk : {size_t{1} << 20, size_t{65537}, size_t{333}, size_t{1}}) {
      if (chunk == 1 && engine == InflateEngine::kZlib) continue;  // a byte at a time is slow; one engine suffices
      LayerIndexOptions options;
      options.engine = engine;
      options.spacing = 256 * 1024;
      LayerIndexer indexer(options);
      for (size_t at = 0; at < gz.size(); at += chunk) indexer.Feed(gz.data() + at, std::min(chunk, gz.size() - at));
      LayerIndex streamed = indexer.Finish();
      CHECK_EQ(streamed.diff_id, diff_id);
      CHECK_EQ(streamed.digest, digest);
      CheckpointIndex recomputed = streamed.checkpoints;
      recomputed.ComputeProofs(gz);
      CHECK(recomputed.checkpoints.size() > 8);
      bool member_start_after_first = false;
      for (size_t i = 0; i < recomputed.checkpoints.size(); ++i) {
        CHECK(recomputed.checkpoints[i].proofs == streamed.checkpoints.checkpoints[i].proofs);
        member_start_after_first |= i > 0 && recomputed.checkpoints[i].kind == CheckpointKind::kMemberStart;
      }
      CHECK(member_start_after_first);
    }
  }
}

// The chunkings a blob may arrive in: one buffer, single bytes, odd
// primes, and random sizes (a registry download chunks however the network
// does). `single_bytes` is off for blobs too large to feed a byte at a time.
std::vector<std::vector<size_t>> Chunkings(size_t size, bool single_bytes) {
  std::vector<std::vector<size_t>> result;
  result.push_back({size});
  if (single_bytes) result.push_back(std::vector<size_t>(size, 1));
  for (size_t prime : {size_t{4093}, size_t{65537}}) {
    std::vector<size_t> sizes(size / prime, prime);
    if (size % prime) sizes.push_back(size % prime);
    result.push_back(std::move(sizes));
  }
  std::mt19937_64 rng(20261122);
  std::vector<size_t> random;
  for (size_t at = 0; at < size;) {
    size_t n = std::min<size_t>(size - at, 1 + rng() % 200000);
    random.push_back(n);
    at += n;
  }
  result.push_back(std::move(random));
  return result;
}

// The serialized index of `blob` fed to a LayerIndexer in pieces of `sizes`.
Bytes IndexChunked(const Bytes& blob, InflateEngine engine, uint64_t spacing, const std::vector<size_t>& sizes) {
  LayerIndexOptions options;
  options.engine = engine;
  options.spacing = spacing;
  LayerIndexer indexer(options);
  size_t at = 0;
  for (size_t n : sizes) {
    indexer.Feed(blob.data() + at, n);
    at += n;
  }
  CHECK_EQ(at, blob.size());
  LayerIndex index = indexer.Finish();
  return index.checkpoints.Serialize();
}

// docs/format.md: the same blob and settings give byte-identical indexes,
// however the blob was chunked on its way in.
void CheckIndexIgnoresChunking(const Bytes& blob, uint64_t spacing, bool single_bytes) {
  for (InflateEngine engine : kEngines) {
    const std::vector<std::vector<size_t>> chunkings = Chunkings(blob.size(), single_bytes);
    const Bytes reference = IndexChunked(blob, engine, spacing, chunkings.front());
    CHECK(reference.size() > 1000);
    for (size_t i = 1; i < chunkings.size(); ++i) {
      const Bytes other = IndexChunked(blob, engine, spacing, chunkings[i]);
      if (other != reference) {
        // Name the first checkpoint that differs, and how.
        const CheckpointIndex a = CheckpointIndex::Deserialize(reference), b = CheckpointIndex::Deserialize(other);
        std::string what = "the header";
        for (size_t k = 0; k < std::min(a.checkpoints.size(), b.checkpoints.size()); ++k) {
          const Checkpoint &x = a.checkpoints[k], &y = b.checkpoints[k];
          const char* field = x.uncompressed_offset != y.uncompressed_offset ? "uncompressed offset"
                              : x.compressed_offset != y.compressed_offset || x.bits != y.bits ? "position"
                              : x.stored_window != y.stored_window                             ? "window"
                              : x.proofs != y.proofs                                           ? "proofs"
                                                                                               : nullptr;
          if (field) {
            what = "checkpoint " + std::to_string(k) + "'s " + field + " (at " + std::to_string(x.uncompressed_offset) +
                   " vs " + std::to_string(y.uncompressed_offset) + ")";
            if (x.stored_window != y.stored_window) {
              // Same window compressed to other bytes, or another window?
              std::vector<uint8_t> wx, wy;
              a.LoadWindow(k, wx);
              b.LoadWindow(k, wy);
              what += wx == wy ? ": the same window, compressed differently" : ": different window contents";
            }
            break;
          }
        }
        throw clip::test::Failure(std::string(InflateEngineName(engine)) + ": chunking #" + std::to_string(i) + " (" +
                                  std::to_string(chunkings[i].size()) + " pieces) gives " +
                                  std::to_string(b.checkpoints.size()) + " checkpoints, one buffer " +
                                  std::to_string(a.checkpoints.size()) + "; first difference: " + what);
      }
    }
  }
}

TEST(gzip_index_ignores_chunking) {
  CheckIndexIgnoresChunking(TwoMemberTarGz("chunking"), 256 * 1024, true);
}

TEST(gzip_debian_layer_index_ignores_chunking) {
  const char* layer = std::getenv("CLIP_DEBIAN_LAYER");
  if (!layer || !*layer) {
    throw clip::test::Failure("CLIP_DEBIAN_LAYER is not set: point it at a .tar.gz Debian layer");
  }
  CheckIndexIgnoresChunking(ReadFile(layer), 2 << 20, false);
}

TEST(gzip_span_digest_catches_every_flip) {
  // A read fetched straight from the source is proven before it is
  // inflated: flip one byte of its span (inside it, in the partial leading
  // byte, at its last byte, at the end of the blob) and the read fails with
  // EDIGEST and writes nothing; reads of other spans are unaffected.
  Bytes data = SampleData(3 << 20, 31);
  Bytes gz = Compress("flips.gz", data, "gzip -6");
  Indexed result = IndexBytes(gz, InflateEngine::kIsal, 256 * 1024);
  const CheckpointIndex& index = result.index;
  size_t k = 0;  // a block checkpoint with leading bits, not the last
  for (size_t i = 1; i + 2 < index.checkpoints.size() && k == 0; ++i)
    if (index.checkpoints[i].bits > 0) k = i;
  CHECK(k > 0);
  const size_t last = index.checkpoints.size() - 1;
  struct Flip {
    const char* what;
    uint64_t at;       // blob offset of the flipped byte
    size_t checkpoint;  // the read starts here
  };
  const uint64_t begin = index.SpanBegin(k), end = index.SpanEnd(k);
  for (Flip flip : {Flip{"the partial leading byte", begin, k}, Flip{"inside the span", (begin + end) / 2, k},
                    Flip{"the span's last byte", end - 1, k}, Flip{"the blob's last byte", gz.size() - 1, last},
                    Flip{"a member start's first byte", 0, 0}}) {
    CHECK_EQ(begin, index.checkpoints[k].compressed_offset - 1);
    Bytes bad = gz;
    bad[flip.at] ^= 0x01;
    WriteFile(Path("flipped.gz"), bad);
    FileSource file(Path("flipped.gz"));
    MemorySource memory(0, bad.data(), bad.size());
    for (const clip::core::CompressedSource* source :
         {static_cast<const clip::core::CompressedSource*>(&file),
          static_cast<const clip::core::CompressedSource*>(&memory)}) {
      for (InflateEngine engine : kEngines) {
        RangeReader reader(index, *source, engine);
        const uint64_t offset = index.checkpoints[flip.checkpoint].uncompressed_offset + 100;
        const size_t len = static_cast<size_t>(std::min<uint64_t>(4096, data.size() - offset));
        Bytes out(len, 0xaa);
        std::string message;
        try {
          reader.Read(offset, out.data(), len);
        } catch (const CoreError& e) {
          if (e.code() != ErrorCode::kDigestMismatch) throw;
          message = e.what();
        }
        if (message.empty()) throw clip::test::Failure(std::string("a flip in ") + flip.what + " was not caught");
        CHECK(message.find("compressed offset") != std::string::npos);
        CHECK(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0xaa; }));
        // A read whose span does not hold the flipped byte still works.
        const size_t other = flip.checkpoint == 0 ? last - 1 : (flip.checkpoint == last ? 1 : k + 2);
        const uint64_t other_offset = index.checkpoints[other].uncompressed_offset;
        if (flip.at < index.SpanBegin(other) || flip.at >= index.SpanEnd(other)) {
          ExpectRead(reader, data, other_offset, 1000);
        }
      }
    }
  }
  // A range read crossing several spans verifies each of them.
  Bytes bad = gz;
  bad[index.SpanEnd(k + 1) - 1] ^= 0x80;
  MemorySource memory(0, bad.data(), bad.size());
  RangeReader reader(index, memory, InflateEngine::kIsal);
  const uint64_t from = index.checkpoints[k].uncompressed_offset;
  Bytes out(static_cast<size_t>(index.checkpoints[k + 2].uncompressed_offset - from));
  CHECK_THROWS_CODE(reader.Read(from, out.data(), out.size()), ErrorCode::kDigestMismatch);
  CHECK_THROWS_CODE(index.VerifySpans(k, index.SpanBegin(k), {gz.data() + index.SpanBegin(k), 10}),
                    ErrorCode::kTruncated);
}

TEST(gzip_span_digest_long_span_streamed) {
  // A span longer than a read buffers (an index with no spacing
  // checkpoints over ~20 MB of incompressible data) is verified from the
  // file in chunks before inflating: right bytes pass, a flip is EDIGEST.
  MustRun("head -c 20000000 /dev/urandom > '" + Path("random.bin") + "' && gzip -1 -c '" + Path("random.bin") + "' > '" +
          Path("random.gz") + "'");
  Bytes gz = ReadFile(Path("random.gz"));
  Bytes data = ReadFile(Path("random.bin"));
  Indexed result = IndexBytes(gz, InflateEngine::kIsal, 0, 1 << 20, false);
  CHECK_EQ(result.index.checkpoints.size(), 1u);
  CHECK(gz.size() > (16u << 20));
  FileSource file(Path("random.gz"));
  RangeReader reader(result.index, file, InflateEngine::kIsal);
  ExpectRead(reader, data, 19000000, 5000);
  gz[gz.size() / 2] ^= 0x04;
  WriteFile(Path("random-flipped.gz"), gz);
  FileSource flipped(Path("random-flipped.gz"));
  RangeReader bad_reader(result.index, flipped, InflateEngine::kIsal);
  Bytes out(5000, 0xaa);
  CHECK_THROWS_CODE(bad_reader.Read(100, out.data(), out.size()), ErrorCode::kDigestMismatch);
  CHECK(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0xaa; }));
}

// A source that counts the bytes read through it.
class CountingSource final : public clip::core::CompressedSource {
 public:
  explicit CountingSource(const clip::core::CompressedSource& inner) : inner_(inner) {}
  size_t ReadAt(uint64_t offset, uint8_t* out, size_t len) const override {
    const size_t n = inner_.ReadAt(offset, out, len);
    bytes += n;
    return n;
  }
  mutable uint64_t bytes = 0;

 private:
  const clip::core::CompressedSource& inner_;
};

TEST(gzip_proofs_fetch_less) {
  // With proofs measured by the indexer, a small read near a checkpoint
  // reads (and checks) only the proofs up to the one whose output reaches
  // its end, with either engine; the bytes are gzip -dc's; a flipped byte
  // in a proof the read does not need leaves it alone, one it needs is
  // EDIGEST.
  Bytes gz = TwoMemberTarGz("proofs");
  MustRun("gzip -dc < '" + Path("proofs.gz") + "' > '" + Path("proofs.tar") + "'");
  const Bytes oracle = ReadFile(Path("proofs.tar"));
  LayerIndexOptions options;
  options.spacing = 1 << 20;
  options.proof_size = 4096;
  LayerIndexer indexer(options);
  indexer.Feed(gz.data(), gz.size());
  const CheckpointIndex index = CheckpointIndex::Deserialize(indexer.Finish().checkpoints.Serialize());
  CHECK_EQ(index.proof_size, 4096u);
  WriteFile(Path("proofs-copy.gz"), gz);
  FileSource file(Path("proofs-copy.gz"));
  size_t measured = 0, proofs = 0;
  for (size_t i = 0; i < index.checkpoints.size(); ++i) {
    const Checkpoint& c = index.checkpoints[i];
    CHECK_EQ(c.proofs.size(), index.ProofCount(i));
    for (size_t j = 0; j < c.proofs.size(); ++j) {
      ++proofs;
      if (c.proofs[j].output_end > (j == 0 ? c.uncompressed_offset : c.proofs[j - 1].output_end)) ++measured;
      // What a proof promises holds with exactly its bytes, for both engines.
      if (c.proofs[j].output_end == c.uncompressed_offset || j % 7 != 0) continue;
      const uint64_t begin = index.SpanBegin(i), end = index.ProofEnd(i, j);
      MemorySource exact(begin, gz.data() + begin, static_cast<size_t>(end - begin));
      for (InflateEngine engine : kEngines) {
        RangeReader reader(index, exact, engine);
        const uint64_t from = c.proofs[j].output_end - std::min<uint64_t>(1000, c.proofs[j].output_end - c.uncompressed_offset);
        ExpectRead(reader, oracle, from, static_cast<size_t>(c.proofs[j].output_end - from));
      }
    }
  }
  CHECK(measured * 10 > proofs * 9);  // nearly every proof adds output
  // A block checkpoint with a long span, not the last one.
  size_t k = 0;
  for (size_t i = 1; i + 1 < index.checkpoints.size() && k == 0; ++i)
    if (index.checkpoints[i].kind == CheckpointKind::kBlock && index.ProofCount(i) >= 20) k = i;
  CHECK(k > 0);
  const Checkpoint& c = index.checkpoints[k];
  for (InflateEngine engine : kEngines) {
    CountingSource counting(file);
    RangeReader reader(index, counting, engine);
    ExpectRead(reader, oracle, c.uncompressed_offset + 100, 4096);
    CHECK(counting.bytes > 0);
    CHECK(counting.bytes * 4 < index.SpanEnd(k) - index.SpanBegin(k));
    CHECK(counting.bytes == index.SpanFor(c.uncompressed_offset + 100, 4096).end - index.SpanBegin(k));
  }
  // Flip a byte in the span's last proof.
  Bytes bad = gz;
  bad[index.ProofBegin(k, index.ProofCount(k) - 1)] ^= 0x10;
  MemorySource memory(0, bad.data(), bad.size());
  for (InflateEngine engine : kEngines) {
    RangeReader reader(index, memory, engine);
    ExpectRead(reader, oracle, c.uncompressed_offset + 100, 4096);
    const uint64_t tail = index.OutputEnd(k) - 100;
    Bytes out(100, 0xaa);
    CHECK_THROWS_CODE(reader.Read(tail, out.data(), out.size()), ErrorCode::kDigestMismatch);
    CHECK(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0xaa; }));
  }
  // An output_end that promises more than its bytes give (every proof of
  // span k claims the whole span) costs more proofs, never wrong bytes.
  CheckpointIndex lying = index;
  for (Proof& p : lying.checkpoints[k].proofs) p.output_end = lying.OutputEnd(k);
  for (InflateEngine engine : kEngines) {
    CountingSource counting(file);
    RangeReader reader(lying, counting, engine);
    ExpectRead(reader, oracle, lying.OutputEnd(k) - 5000, 5000);
    CHECK_EQ(counting.bytes, index.SpanEnd(k) - index.SpanBegin(k));
    RangeReader bad_reader(lying, memory, engine);
    Bytes out(5000, 0xaa);
    CHECK_THROWS_CODE(bad_reader.Read(lying.OutputEnd(k) - 5000, out.data(), out.size()), ErrorCode::kDigestMismatch);
  }
}

TEST(gzip_index_serialization) {
  Bytes data = SampleData(1 << 20, 18);
  Bytes gz = Compress("serial.gz", data, "gzip -6");
  Indexed result = IndexBytes(gz, InflateEngine::kIsal, 100000);
  result.index.proof_size = 1024;  // several proofs per span
  for (Checkpoint& c : result.index.checkpoints) c.proofs.clear();
  result.index.ComputeProofs(gz);
  Bytes bytes = result.index.Serialize();
  CHECK_EQ(bytes.size(), result.index.SerializedSize());
  CheckpointIndex copy = CheckpointIndex::Deserialize(bytes);
  CHECK(copy.Serialize() == bytes);
  CHECK_EQ(copy.compressed_size, result.index.compressed_size);
  CHECK_EQ(copy.uncompressed_size, result.index.uncompressed_size);
  CHECK_EQ(copy.spacing, 100000u);
  for (size_t i = 0; i < copy.checkpoints.size(); ++i) {
    const Checkpoint &x = copy.checkpoints[i], &y = result.index.checkpoints[i];
    CHECK_EQ(x.uncompressed_offset, y.uncompressed_offset);
    CHECK_EQ(x.compressed_offset, y.compressed_offset);
    CHECK_EQ(int{x.bits}, int{y.bits});
    CHECK(x.kind == y.kind);
    CHECK(x.stored_window == y.stored_window);
  }
  // In place: no window is copied, each points into the bytes the index
  // keeps alive (the caller's copy goes first), and it serializes and
  // inflates its windows as the copying one does.
  {
    auto kept = std::make_shared<const Bytes>(bytes);
    CheckpointIndex in_place = CheckpointIndex::DeserializeInPlace(*kept, kept);
    const uint8_t* begin = kept->data();
    kept.reset();
    CHECK(in_place.Serialize() == bytes);
    Bytes a, b;
    size_t windows = 0;
    for (size_t i = 0; i < in_place.checkpoints.size(); ++i) {
      const Checkpoint& c = in_place.checkpoints[i];
      CHECK(c.stored_window.empty());
      if (c.window_length == 0) continue;
      ++windows;
      CHECK(c.stored_in_place.data() >= begin && c.stored_in_place.data() < begin + bytes.size());
      in_place.LoadWindow(i, a);
      copy.LoadWindow(i, b);
      CHECK(a == b);
    }
    CHECK(windows > 3);
  }
  // Every truncation, and flipped bytes, fail the checks.
  for (size_t n = 0; n < bytes.size(); n += (n < 200 ? 1 : 997)) {
    CHECK_THROWS_CODE(CheckpointIndex::Deserialize(std::span<const uint8_t>(bytes.data(), n)), ErrorCode::kCorrupt);
  }
  for (size_t at = 0; at < bytes.size(); at += 1009) {
    Bytes bad = bytes;
    bad[at] ^= 0x20;
    CHECK_THROWS_CODE(CheckpointIndex::Deserialize(bad), ErrorCode::kCorrupt);
  }
  Bytes longer = bytes;
  longer.push_back(0);
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(longer), ErrorCode::kCorrupt);

  // Structurally wrong but correctly checksummed indexes.
  auto reseal = [](Bytes b) {
    uint32_t crc = static_cast<uint32_t>(crc32(0, b.data(), static_cast<uInt>(b.size() - 4)));
    for (int i = 0; i < 4; ++i) b[b.size() - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
    return b;
  };
  Bytes newer = bytes;
  newer[8] = 4;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(newer)), ErrorCode::kUnsupported);
  // Version 1 had no digests, version 2 one per span: refused, never read
  // unverified or fetched in whole spans.
  for (uint8_t old : {1, 2}) {
    Bytes v = bytes;
    v[8] = old;
    std::string message;
    try {
      CheckpointIndex::Deserialize(reseal(v));
    } catch (const CoreError& e) {
      CHECK(e.code() == ErrorCode::kUnsupported);
      message = e.what();
    }
    CHECK(message.find("re-index") != std::string::npos);
  }
  // Proofs survive the round trip.
  for (size_t i = 0; i < copy.checkpoints.size(); ++i)
    CHECK(copy.checkpoints[i].proofs == result.index.checkpoints[i].proofs);
  Bytes lying = bytes;
  lying[48] = 0xff;
  lying[49] = 0xff;
  lying[50] = 0xff;
  lying[51] = 0x7f;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(lying)), ErrorCode::kCorrupt);
  Bytes bad_bits = bytes;
  bad_bits[56 + 16] = 9;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(bad_bits)), ErrorCode::kCorrupt);
  Bytes bad_kind = bytes;
  bad_kind[56 + 17] = 7;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(bad_kind)), ErrorCode::kCorrupt);
  Bytes not_first_at_zero = bytes;
  not_first_at_zero[56] = 1;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(not_first_at_zero)), ErrorCode::kCorrupt);
  Bytes huge_size = bytes;
  huge_size[24] = 0;  // compressed_size shrinks below the checkpoints' offsets
  huge_size[25] = 0;
  huge_size[26] = 0;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(huge_size)), ErrorCode::kCorrupt);
  Bytes format = bytes;
  format[16] = 5;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(format)), ErrorCode::kCorrupt);
  // Proofs: a proof size out of range, a missing proof, an output_end that
  // goes back or does not end at the next checkpoint.
  for (uint32_t size : {0u, 511u, (16u << 20) + 1}) {
    Bytes bad_size = bytes;
    for (int i = 0; i < 4; ++i) bad_size[52 + i] = static_cast<uint8_t>(size >> (8 * i));
    CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(bad_size)), ErrorCode::kCorrupt);
  }
  Bytes fewer = bytes;
  fewer[56 + 28] -= 1;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(fewer)), ErrorCode::kCorrupt);
  CHECK(copy.checkpoints[0].proofs.size() >= 2);
  Bytes backwards = bytes;  // checkpoint 0's first proof ends past its second
  backwards[56 + 32 + 7] = 0x40;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(backwards)), ErrorCode::kCorrupt);
  Bytes short_last = bytes;  // checkpoint 0's last proof ends before checkpoint 1
  const size_t last_proof = 56 + 32 + (copy.checkpoints[0].proofs.size() - 1) * 40;
  short_last[last_proof] ^= 1;
  CHECK_THROWS_CODE(CheckpointIndex::Deserialize(reseal(short_last)), ErrorCode::kCorrupt);
}

TEST(gzip_concurrent_reads) {
  Bytes data = SampleData(6 << 20, 19);
  Compress("concurrent.gz", data, "gzip -6");
  Bytes gz = ReadFile(Path("concurrent.gz"));
  for (InflateEngine engine : kEngines) {
    Indexed result = IndexBytes(gz, engine, 256 * 1024, 1 << 20, false);
    FileSource source(Path("concurrent.gz"));
    RangeReader reader(result.index, source, engine);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(100 + t);
        Bytes buffer;
        for (int i = 0; i < 60; ++i) {
          uint64_t offset = rng() % data.size();
          size_t len = static_cast<size_t>(std::min<uint64_t>(1 + rng() % 65536, data.size() - offset));
          buffer.resize(len);
          try {
            reader.Read(offset, buffer.data(), len);
            if (std::memcmp(buffer.data(), data.data() + offset, len) != 0) ++failures;
          } catch (...) {
            ++failures;
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK_EQ(failures.load(), 0);
  }
}

// ---------------------------------------------------------------------------
// Big streams

TEST(gzip_over_4gib) {
  const std::string path = "/var/cache/clip-native/zeros-4.3g.gz";
  MustRun("test -s " + path + " || { mkdir -p /var/cache/clip-native && head -c 4400000000 /dev/zero | pigz -1 > " +
          path + ".tmp && mv " + path + ".tmp " + path + "; }");
  FileSource file(path);
  auto start = std::chrono::steady_clock::now();
  CheckpointIndex index;
  index.spacing = 256ull << 20;
  uint64_t nonzero = 0;
  CheckpointingInflater inflater(
      InflateEngine::kIsal, index.spacing,
      [&](const uint8_t* data, size_t len, uint64_t) {
        // Spot-check the output without slowing the pass: the first and last byte of each chunk.
        nonzero += (data[0] != 0) + (data[len - 1] != 0);
      },
      [&](uint64_t u, uint64_t c, uint8_t bits, CheckpointKind kind, std::span<const uint8_t> window) {
        index.Add(u, c, bits, kind, window);
      });
  Bytes chunk(1 << 20);
  uint64_t at = 0;
  for (;;) {
    size_t n = file.ReadAt(at, chunk.data(), chunk.size());
    if (n == 0) break;
    inflater.Feed(chunk.data(), n);
    at += n;
  }
  inflater.Finish();
  index.compressed_size = file.size();
  index.uncompressed_size = inflater.uncompressed_produced();
  index.ComputeProofs(ReadFile(path));
  std::cout << "  4.4 GB of zeros indexed in " << Seconds(start) << " s, " << index.checkpoints.size()
            << " checkpoints" << std::endl;
  CHECK_EQ(index.uncompressed_size, 4400000000ull);
  CHECK(index.uncompressed_size > (1ull << 32));
  CHECK_EQ(nonzero, 0u);
  CHECK(index.checkpoints.size() >= 15);
  CheckpointIndex copy = CheckpointIndex::Deserialize(index.Serialize());
  for (InflateEngine engine : kEngines) {
    RangeReader reader(copy, file, engine);
    for (uint64_t offset : {uint64_t{(1ull << 32) + 12345}, uint64_t{index.uncompressed_size - 4096}}) {
      Bytes buffer(4096, 0xaa);
      reader.Read(offset, buffer.data(), buffer.size());
      CHECK(std::all_of(buffer.begin(), buffer.end(), [](uint8_t b) { return b == 0; }));
    }
  }
}

// Runs only when selected by name (the runner passes "debian") with
// CLIP_DEBIAN_LAYER naming a real gzip'd Debian layer.
TEST(gzip_debian_layer) {
  const char* layer = std::getenv("CLIP_DEBIAN_LAYER");
  if (!layer || !*layer) {
    throw clip::test::Failure("CLIP_DEBIAN_LAYER is not set: point it at a .tar.gz Debian layer");
  }
  std::string oracle_path = Path("debian.tar");
  MustRun(std::string("gzip -dc < '") + layer + "' > '" + oracle_path + "'");
  Bytes oracle = ReadFile(oracle_path);
  FileSource file(layer);
  const Bytes blob = ReadFile(layer);
  for (InflateEngine engine : kEngines) {
    // The indexer's streamed span digests equal digests computed from the whole blob.
    LayerIndexOptions options;
    options.engine = engine;
    LayerIndex streamed = IndexLayerFile(layer, options);
    CheckpointIndex recomputed = streamed.checkpoints;
    recomputed.ComputeProofs(blob);
    CHECK(streamed.checkpoints.checkpoints.size() > 10);
    for (size_t i = 0; i < recomputed.checkpoints.size(); ++i)
      CHECK(recomputed.checkpoints[i].proofs == streamed.checkpoints.checkpoints[i].proofs);
    auto start = std::chrono::steady_clock::now();
    CheckpointIndex index;
    index.spacing = 2 << 20;
    uint64_t mismatches = 0;
    CheckpointingInflater inflater(
        engine, index.spacing,
        [&](const uint8_t* data, size_t len, uint64_t offset) {
          if (offset + len > oracle.size() || std::memcmp(data, oracle.data() + offset, len) != 0) ++mismatches;
        },
        [&](uint64_t u, uint64_t c, uint8_t bits, CheckpointKind kind, std::span<const uint8_t> window) {
          index.Add(u, c, bits, kind, window);
        });
    Bytes chunk(1 << 20);
    for (uint64_t at = 0;;) {
      size_t n = file.ReadAt(at, chunk.data(), chunk.size());
      if (n == 0) break;
      inflater.Feed(chunk.data(), n);
      at += n;
    }
    inflater.Finish();
    double seconds = Seconds(start);
    index.compressed_size = file.size();
    index.uncompressed_size = inflater.uncompressed_produced();
    index.ComputeProofs(blob);
    CHECK_EQ(mismatches, 0u);
    CHECK_EQ(index.uncompressed_size, oracle.size());
    CHECK(index.checkpoints.size() >= oracle.size() / (4u << 20));
    Bytes serialized = index.Serialize();
    CHECK(serialized.size() * 100 < file.size());  // the goal: checkpoints cost under 1% of the layer
    CheckpointIndex copy = CheckpointIndex::Deserialize(serialized);
    std::mt19937_64 rng(42);
    for (InflateEngine read_engine : kEngines) {
      RangeReader reader(copy, file, read_engine);
      for (int i = 0; i < 100; ++i) {
        uint64_t offset = rng() % oracle.size();
        size_t len = static_cast<size_t>(std::min<uint64_t>(1 + rng() % 65536, oracle.size() - offset));
        ExpectRead(reader, oracle, offset, len);
      }
    }
    std::printf("  %s: %zu checkpoints, index %zu bytes = %.2f%% of %llu compressed bytes, pass %.2f s\n",
                clip::core::InflateEngineName(engine), copy.checkpoints.size(), serialized.size(),
                100.0 * static_cast<double>(serialized.size()) / static_cast<double>(file.size()),
                static_cast<unsigned long long>(file.size()), seconds);
    std::fflush(stdout);
  }
}

// ---------------------------------------------------------------------------
// LayerFiller: the disk cache's fill writes what gzip -dc gives, proves it,
// and refuses every kind of bad stream with its code.

namespace {

std::string DigestOf(const Bytes& data) {
  clip::core::Sha256 sha;
  sha.Update(data.data(), data.size());
  return sha.FinishDigest();
}

LayerFillOptions FillOptionsFor(const Bytes& blob, const Bytes& tar, InflateEngine engine, LayerFormat format) {
  LayerFillOptions options;
  options.engine = engine;
  options.format = format;
  options.uncompressed_size = tar.size();
  options.diff_id = DigestOf(tar);
  options.blob_digest = DigestOf(blob);
  options.blob_size = blob.size();
  options.name = "test layer";
  return options;
}

struct OutFile {
  explicit OutFile(const std::string& name) : path(Path(name)), fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
    if (fd < 0) throw clip::test::Failure("cannot create " + path);
  }
  ~OutFile() { ::close(fd); }
  std::string path;
  int fd;
};

// Feeds `blob` in pieces of `chunk` bytes and finishes; returns the error code thrown (-1: none).
int FillCode(const Bytes& blob, int fd, const LayerFillOptions& options, size_t chunk, std::string* message = nullptr) {
  try {
    LayerFiller filler(fd, options);
    for (size_t at = 0; at < blob.size(); at += chunk) filler.Feed(blob.data() + at, std::min(chunk, blob.size() - at));
    filler.Finish();
    return -1;
  } catch (const CoreError& e) {
    if (message) *message = e.what();
    return static_cast<int>(e.code());
  }
}

}  // namespace

TEST(fill_writes_gzip_dc_bytes) {
  // Two members (pigz, then gzip -1), fed in odd chunkings and from the file, both engines.
  Bytes first = Compress("fill-a.gz", SampleData(3000000, 5), "pigz -6");
  Bytes second = Compress("fill-b.gz", SampleData(700000, 6), "gzip -1");
  Bytes blob = first;
  blob.insert(blob.end(), second.begin(), second.end());
  WriteFile(Path("fill.gz"), blob);
  const Bytes tar = Oracle(Path("fill.gz"));
  for (InflateEngine engine : kEngines) {
    const LayerFillOptions options = FillOptionsFor(blob, tar, engine, LayerFormat::kGzip);
    for (size_t chunk : {size_t{1}, size_t{4093}, size_t{65537}, size_t{1} << 20}) {
      if (chunk == 1 && engine == InflateEngine::kZlib) continue;  // one engine byte by byte is enough
      OutFile out("fill.out");
      CHECK_EQ(FillCode(blob, out.fd, options, chunk == 1 ? 1 : chunk), -1);
      CHECK(ReadFile(out.path) == tar);
    }
    OutFile out("fill-file.out");
    LayerFiller filler(out.fd, options);
    std::atomic<bool> cancelled{false};
    filler.FeedFile(Path("fill.gz"), cancelled);
    filler.Finish();
    CHECK_EQ(filler.blob_bytes(), blob.size());
    CHECK_EQ(filler.written(), tar.size());
    CHECK(ReadFile(out.path) == tar);
    // The file in pieces, as the disk cache's fill feeds it.
    OutFile pieces("fill-pieces.out");
    LayerFiller by_range(pieces.fd, options);
    uint64_t at = 0;
    for (size_t n; (n = by_range.FeedFileRange(Path("fill.gz"), at, 100003, cancelled)) > 0;) {
      CHECK(n <= 100003);
      at += n;
    }
    CHECK_EQ(at, blob.size());
    by_range.Finish();
    CHECK(ReadFile(pieces.path) == tar);
  }
}

TEST(fill_plain_tar_passes_through) {
  const Bytes tar = SampleData(1 << 20, 9);
  const LayerFillOptions options = FillOptionsFor(tar, tar, InflateEngine::kIsal, LayerFormat::kTar);
  OutFile out("fill-tar.out");
  CHECK_EQ(FillCode(tar, out.fd, options, 100000), -1);
  CHECK(ReadFile(out.path) == tar);
}

TEST(fill_refuses_bad_streams) {
  const Bytes blob = Compress("fill-bad.gz", SampleData(1500000, 8), "gzip -6");
  const Bytes tar = Oracle(Path("fill-bad.gz"));
  for (InflateEngine engine : kEngines) {
    const LayerFillOptions good = FillOptionsFor(blob, tar, engine, LayerFormat::kGzip);
    OutFile out("fill-bad.out");
    std::string message;
    // A recorded diff_id the bytes do not hash to.
    LayerFillOptions options = good;
    options.diff_id = DigestOf(blob);
    CHECK_EQ(FillCode(blob, out.fd, options, 65536, &message), static_cast<int>(ErrorCode::kDigestMismatch));
    CHECK(message.find("test layer") == 0);
    // A stream longer than recorded fails as soon as it grows past it, with nothing written beyond.
    options = good;
    options.uncompressed_size = tar.size() / 2;
    CHECK_EQ(::ftruncate(out.fd, 0), 0);
    CHECK_EQ(FillCode(blob, out.fd, options, 65536), static_cast<int>(ErrorCode::kDigestMismatch));
    CHECK(ReadFile(out.path).size() <= tar.size() / 2);
    // Shorter than recorded.
    options = good;
    options.uncompressed_size = tar.size() + 1;
    CHECK_EQ(FillCode(blob, out.fd, options, 65536), static_cast<int>(ErrorCode::kDigestMismatch));
    // Blob bytes that are not the descriptor's.
    options = good;
    options.blob_digest = DigestOf(tar);
    CHECK_EQ(FillCode(blob, out.fd, options, 65536), static_cast<int>(ErrorCode::kDigestMismatch));
    // Truncated and corrupt gzip.
    const Bytes cut(blob.begin(), blob.begin() + static_cast<ptrdiff_t>(blob.size() / 2));
    CHECK_EQ(FillCode(cut, out.fd, good, 65536), static_cast<int>(ErrorCode::kTruncated));
    Bytes flipped = blob;
    flipped[blob.size() / 3] ^= 0x55;
    CHECK_EQ(FillCode(flipped, out.fd, good, 65536), static_cast<int>(ErrorCode::kCorrupt));
    // A full disk: /dev/full fails every write with ENOSPC.
    const int full = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
    CHECK(full >= 0);
    CHECK_EQ(FillCode(blob, full, good, 65536, &message), static_cast<int>(ErrorCode::kIo));
    ::close(full);
    CHECK(message.find("ENOSPC") != std::string::npos);
    // A missing blob file, and a cancelled one.
    LayerFiller missing(out.fd, good);
    std::atomic<bool> cancelled{false};
    CHECK_THROWS_CODE(missing.FeedFile(Path("no-such.gz"), cancelled), ErrorCode::kIo);
    CHECK_THROWS_CODE(missing.Finish(), ErrorCode::kIo);  // dead after an error
    LayerFiller stopped(out.fd, good);
    cancelled = true;
    CHECK_THROWS_CODE(stopped.FeedFile(Path("fill-bad.gz"), cancelled), ErrorCode::kIo);
  }
}

// With CLIP_DEBIAN_LAYER (selected by name like gzip_debian_layer): a real layer, filled from its file.
TEST(fill_debian_layer) {
  const char* layer = std::getenv("CLIP_DEBIAN_LAYER");
  if (!layer || !*layer) throw clip::test::Failure("CLIP_DEBIAN_LAYER is not set: point it at a .tar.gz Debian layer");
  MustRun(std::string("gzip -dc < '") + layer + "' > '" + Path("fill-debian.tar") + "'");
  const Bytes tar = ReadFile(Path("fill-debian.tar"));
  const Bytes blob = ReadFile(layer);
  for (InflateEngine engine : kEngines) {
    OutFile out("fill-debian.out");
    LayerFiller filler(out.fd, FillOptionsFor(blob, tar, engine, LayerFormat::kGzip));
    std::atomic<bool> cancelled{false};
    auto start = std::chrono::steady_clock::now();
    filler.FeedFile(layer, cancelled);
    filler.Finish();
    std::printf("  %s: filled %llu bytes in %.2f s\n", clip::core::InflateEngineName(engine),
                static_cast<unsigned long long>(filler.written()), Seconds(start));
    CHECK(ReadFile(out.path) == tar);
  }
}
