// Which deflate implementation inflates: ISA-L (fast, the default) or zlib
// (the fallback, and the oracle the tests compare ISA-L against).
//
// Besides the engine choice, this file holds the two small building blocks
// the gzip code shares (CheckpointingInflater, RangeReader, CheckpointIndex):
//
//   - DeflateStream: one raw deflate stream inflated by either engine, with
//     exactly the two extra powers checkpoints need: restarting at any bit
//     position of a stream with a dictionary, and stopping at a deflate block
//     boundary while reporting its exact bit position. zlib has Z_BLOCK for
//     the latter; ISA-L has no such option, so the ISA-L stream feeds small
//     input slices until isal_inflate runs out of input inside a block header
//     (see the comment in inflate_engine.cc for the details and why they hold).
//   - GzipHeaderParser: an incremental RFC 1952 member header parser, so
//     headers split across arbitrary input chunks parse the same way for
//     both engines.
//
// Neither is thread-safe; each user owns its own instance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

namespace clip::core {

enum class InflateEngine { kIsal, kZlib };

// "isal" or "zlib".
const char* InflateEngineName(InflateEngine engine);
// Parses "isal" / "zlib"; nullopt for anything else.
std::optional<InflateEngine> ParseInflateEngine(std::string_view name);

// CRC-32 (gzip polynomial) of `len` bytes, continuing from `crc` (0 to start).
// Uses ISA-L's carry-less-multiply implementation: several GB/s.
uint32_t GzipCrc32(uint32_t crc, const uint8_t* data, size_t len);

// One raw deflate (RFC 1951) stream being inflated. Create one per engine;
// Reset() before each stream. Input is pushed in pieces; the stream keeps
// whatever partial state it needs between calls, so callers need not keep
// old input around.
class DeflateStream {
 public:
  // Largest history a deflate stream may refer back into.
  static constexpr size_t kWindowSize = 32768;

  static std::unique_ptr<DeflateStream> Create(InflateEngine engine);
  virtual ~DeflateStream() = default;

  // Starts a new stream. `dictionary` (only its last 32 KiB matter) is the
  // uncompressed output that preceded the start point. The low `prime_bits`
  // (0..7) bits of `prime_value` are input bits that come before the first
  // byte passed to Inflate: the tail of a byte whose leading bits belonged to
  // the previous block.
  virtual void Reset(std::span<const uint8_t> dictionary, unsigned prime_bits, unsigned prime_value) = 0;

  struct Step {
    size_t consumed = 0;       // bytes of `in` the stream took (see unread_bits)
    size_t produced = 0;       // bytes written to `out`
    bool finished = false;     // the final block ended and all its output is in `out`
    bool at_boundary = false;  // stopped exactly at a block boundary (find_boundary only)
  };

  // Inflates from in[0, in_len) into out[0, out_len). Returns when the input
  // is used up, the output is (nearly) full, the stream finished, or, with
  // `find_boundary`, a block boundary (other than the stream's start or
  // end, and not one reported before) is reached: then all output before
  // the boundary is in `out` and none after it, and unread_bits() places
  // the boundary exactly. When the output filled up, more output may be
  // pending inside the engine: call again, even with no new input, before
  // concluding that more input is needed. Throws CoreError(kCorrupt) on
  // invalid deflate data; the message names an offset computed from
  // `error_offset`, the caller's blob offset of in[0].
  virtual Step Inflate(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len, bool find_boundary,
                       uint64_t error_offset) = 0;

  // Bits of the input consumed so far that the stream has not used yet:
  // after Inflate returned at_boundary, the boundary lies this many bits
  // before the end of the consumed input; after `finished`, the stream's last
  // bit does. Bits, not bytes: boundaries need not be byte-aligned.
  virtual uint64_t unread_bits() const = 0;

  // After `finished`: copies the whole bytes the stream read past its end
  // (ISA-L reads up to 8 bytes ahead into its bit buffer; zlib gives unused
  // bytes back and returns 0) into out[0, 8) and returns how many. These
  // bytes come right before the unconsumed remainder of the last input.
  virtual size_t TakeOverreadBytes(uint8_t out[8]) = 0;

  // Output space worth offering per call: any size > 0 works, but ISA-L
  // only reaches full speed when it can decode straight into a large buffer.
  static constexpr size_t kMinOutput = 128 * 1024;
};

// Parses one gzip member header (RFC 1952) fed in arbitrary pieces: magic,
// method, flags, and the optional FEXTRA, FNAME, FCOMMENT and FHCRC fields,
// checking the header CRC when present.
class GzipHeaderParser {
 public:
  // Forgets any partial header; the next byte fed is a header's first byte.
  void Reset();
  // Consumes header bytes from data[0, len) and returns how many it used
  // (fewer than len only once the header is complete). Throws
  // CoreError(kCorrupt) for a wrong magic, a method other than deflate,
  // reserved flags, or a header CRC mismatch; the message names the blob
  // offset, computed as `offset` (the blob offset of data[0]) plus the index.
  size_t Consume(const uint8_t* data, size_t len, uint64_t offset);
  bool done() const { return stage_ == Stage::kDone; }
  // True before the first byte of the header was consumed.
  bool untouched() const { return stage_ == Stage::kFixed && have_ == 0; }

 private:
  enum class Stage { kFixed, kExtraLength, kExtra, kName, kComment, kHeaderCrc, kDone };
  // Moves to the first optional field the flags ask for after `from`.
  void Advance(Stage from);

  Stage stage_ = Stage::kFixed;
  uint8_t fixed_[10] = {};  // the fixed part (and, reused, the 2-byte fields)
  size_t have_ = 0;         // bytes of the current fixed-size field seen
  uint32_t extra_left_ = 0; // FEXTRA bytes still to skip
  uint8_t flags_ = 0;
  uint32_t crc_ = 0;        // CRC-32 of the header bytes so far, for FHCRC
};

}  // namespace clip::core
