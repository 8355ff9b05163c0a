// The two deflate engines behind DeflateStream, and the gzip header parser.
//
// How the ISA-L stream finds block boundaries (verified against Debian's
// ISA-L 2.30 by the restart tests in test/test_gzip.cc):
//
//   isal_inflate has no "stop at the next block" mode, but it has to survive
//   input that ends anywhere, including inside a block header. When that
//   happens, read_header_stateful() restores read_in/read_in_length to their
//   values at the header's first bit, moves the header bytes it has seen
//   from next_in into tmp_in_buffer (tmp_in_size of them), consumes all
//   input and returns with block_state == ISAL_BLOCK_HDR. So at that moment
//   the header (= the block boundary) starts exactly
//       tmp_in_size * 8 + read_in_length
//   bits before the end of the input consumed so far, and all output before
//   the boundary has been produced and none after it. The same holds for
//   ISAL_BLOCK_NEW_HDR, which a stored block that ends exactly at the end of
//   the input leaves behind (with tmp_in_size == 0). Output still parked in
//   tmp_out_buffer (tmp_out_valid != tmp_out_processed) or in the overflow
//   fields would belong before the boundary but is not in `out` yet, so such
//   a state is drained first and only then reported.
//
//   To land inside a header, once the caller asks for a boundary the stream
//   feeds input in small slices (kBoundarySlice bytes). A dynamic-Huffman
//   header is tens of bytes, so a slice of that size ends inside nearly
//   every one. A stored block's length is known once its header is read, so
//   the slice is cut to end exactly at the block's last byte, and the next
//   call stops in (or before) the following header. A fixed-Huffman header
//   is only 3 bits and is usually read from bits already buffered: those
//   boundaries are mostly missed, and the slicing simply continues to the
//   next block (CheckpointingInflater caps how long it tries).
//
//   One more 2.30 detail matters to callers: while its 64 KiB tmp_out_buffer
//   is not full, isal_inflate first decodes into it, whatever the caller's
//   output space, and keeps what does not fit for the next call. So a call
//   with a small output space may run up to ~64 KiB of output ahead of what
//   it returns, past boundaries the caller wanted to see. A caller that must
//   start looking at a given output offset feeds little input as it nears
//   it (CheckpointingInflater does).
//
//   Restarting at a boundary: isal_inflate_init, crc_flag = ISAL_DEFLATE,
//   isal_inflate_set_dict(window), then the boundary's partial leading byte
//   is primed by setting read_in to its remaining high bits (shifted down)
//   and read_in_length to their count; inflate_in_load() ORs later bytes in
//   above read_in_length, exactly as if those bits had been left over.
//
// The zlib stream is the textbook version: inflate(Z_BLOCK) stops after
// each block; (data_type & 128) marks a boundary, (data_type & 64) the last
// block, (data_type & 7) the unused bits of the last byte consumed.
// inflatePrime and inflateSetDictionary restart a raw (windowBits -15)
// inflate anywhere.
#include "inflate_engine.h"

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

#include "error.h"

namespace clip::core {

const char* InflateEngineName(InflateEngine engine) {
  switch (engine) {
    case InflateEngine::kIsal: return "isal";
    case InflateEngine::kZlib: return "zlib";
  }
  return "unknown";
}

std::optional<InflateEngine> ParseInflateEngine(std::string_view name) {
  if (name == "isal") return InflateEngine::kIsal;
  if (name == "zlib") return InflateEngine::kZlib;
  return std::nullopt;
}

uint32_t GzipCrc32(uint32_t crc, const uint8_t* data, size_t len) {
  if (len == 0) return crc;
  return crc32_gzip_refl(crc, data, len);
}

namespace {

// Both libraries count in 32-bit lengths; callers' buffers are far smaller,
// but clamp so a huge length can never wrap.
constexpr size_t kMaxCallLength = size_t{1} << 30;

uint32_t Clamp32(size_t n) { return static_cast<uint32_t>(std::min(n, kMaxCallLength)); }

// ---------------------------------------------------------------------------
// ISA-L

class IsalDeflateStream final : public DeflateStream {
 public:
  // Input bytes per isal_inflate call while looking for a boundary. Smaller
  // lands in more (shorter) headers but costs more calls: each call with
  // little output also shifts ISA-L's 32 KiB history buffer. 32 bytes
  // catches the vast majority of dynamic headers (the shortest real ones
  // are around 30-40 bytes).
  static constexpr size_t kBoundarySlice = 32;
  // While slicing, return to the caller (to drain `out`) once less than
  // this much output space is left. Only an efficiency threshold: a slice
  // that makes more output than fits simply leaves the rest pending.
  static constexpr size_t kSliceRoom = 32 * 1024;
  // Inside a Huffman-coded block, the search first strides over this much
  // input in one call, with a snapshot of the state to go back to. Slicing
  // costs one call per kBoundarySlice bytes and every call shifts ISA-L's
  // 32 KiB history buffer, so a stride that crosses no block boundary saves
  // kStride / kBoundarySlice calls for one partial state copy. A stride that
  // did cross one (a new header rebuilt the decoding tables, or the block
  // type changed) is rolled back and the same bytes are sliced as before,
  // so the boundaries found, and their positions, are the same ones; only a
  // crossing into a block with identical tables goes unseen, which costs a
  // later checkpoint, never a wrong one (a boundary is only ever reported
  // where a call stopped inside a header). Repetitive data (runs of zeros)
  // does make block after block with the same tables, so only streams that
  // inflate less than kStrideRatio-fold stride at all, and each search
  // strides over at most kStrideInput bytes making at most kStrideOutput
  // bytes, then slices: real blocks are 10-60 KiB compressed, so the budget
  // covers a typical search and bounds how far an unseen boundary can push
  // a checkpoint.
  static constexpr size_t kStride = 1024;
  static constexpr uint64_t kStrideInput = 32 * 1024;
  static constexpr uint64_t kStrideOutput = 64 * 1024;
  static constexpr uint64_t kStrideRatio = 8;

  IsalDeflateStream() : state_(std::make_unique<inflate_state>()) { isal_inflate_init(state_.get()); }

  void Reset(std::span<const uint8_t> dictionary, unsigned prime_bits, unsigned prime_value) override {
    inflate_state* s = state_.get();
    isal_inflate_init(s);
    s->crc_flag = ISAL_DEFLATE;
    if (!dictionary.empty()) {
      if (dictionary.size() > kWindowSize) dictionary = dictionary.last(kWindowSize);
      // isal_inflate_set_dict copies the bytes; it takes a non-const pointer only for historical reasons.
      if (isal_inflate_set_dict(s, const_cast<uint8_t*>(dictionary.data()),
                                static_cast<uint32_t>(dictionary.size())) != COMP_OK) {
        Fail(ErrorCode::kCorrupt, "ISA-L refused the checkpoint window");
      }
    }
    prime_bits &= 7;
    s->read_in = prime_value & ((1u << prime_bits) - 1);
    s->read_in_length = static_cast<int32_t>(prime_bits);
    total_in_ = 0;
    total_out_ = 0;
    // The start of the stream is where the caller restarted: not news.
    reported_in_ = 0;
    reported_out_ = 0;
    strided_in_ = strided_out_ = 0;
  }

  Step Inflate(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len, bool find_boundary,
               uint64_t error_offset) override {
    Step step;
    if (!find_boundary) {
      strided_in_ = strided_out_ = 0;  // the next search starts with a full stride budget
      Run(in, in_len, out, out_len, error_offset, step);
      step.finished = state_->block_state == ISAL_BLOCK_FINISH;
      return step;
    }
    bool force_input = false;
    size_t slice_until = 0;  // slice finely (no stride) until step.consumed reaches this
    for (;;) {
      if (state_->block_state == ISAL_BLOCK_FINISH) {
        step.finished = true;
        return step;
      }
      if (AtBoundary() && (total_in_ != reported_in_ || total_out_ != reported_out_)) {
        reported_in_ = total_in_;
        reported_out_ = total_out_;
        strided_in_ = strided_out_ = 0;
        step.at_boundary = true;
        return step;
      }
      size_t room = out_len - step.produced;
      if (room == 0 || (step.produced > 0 && room < kSliceRoom)) return step;
      size_t left = in_len - step.consumed;
      size_t slice = std::min(kBoundarySlice, left);
      if (state_->block_state == ISAL_BLOCK_TYPE0 && !force_input) {
        // A stored block: end the slice exactly at the block's last byte
        // (some of its bytes may already sit in read_in).
        int64_t need = int64_t{state_->type0_block_len} - state_->read_in_length / 8;
        slice = need > 0 ? std::min(static_cast<size_t>(need), left) : 0;
      } else if (slice == 0 && !Pending()) {
        return step;  // needs more input
      } else if (state_->block_state == ISAL_BLOCK_CODED && !force_input && step.consumed >= slice_until &&
                 left > kStride && strided_in_ < kStrideInput && strided_out_ < kStrideOutput && total_out_ < kStrideRatio * total_in_ &&
                 !Pending()) {
        if (Stride(in + step.consumed, out + step.produced, room, error_offset + step.consumed, step)) continue;
        slice_until = step.consumed + kStride;  // rolled back: slice these bytes
        continue;
      }
      size_t before_in = step.consumed, before_out = step.produced;
      Run(in + step.consumed, slice, out + step.produced, room, error_offset + step.consumed, step);
      if (step.consumed == before_in && step.produced == before_out) {
        // No progress: either the input is used up, or a stored block
        // needed a byte we did not give it.
        if (left == 0 || force_input) return step;
        force_input = true;
      } else {
        force_input = false;
      }
    }
  }

  uint64_t unread_bits() const override {
    return uint64_t{static_cast<uint16_t>(state_->tmp_in_size)} * 8 +
           static_cast<uint64_t>(std::max<int32_t>(state_->read_in_length, 0));
  }

  size_t TakeOverreadBytes(uint8_t out[8]) override {
    inflate_state* s = state_.get();
    // At the end of the stream, read_in holds the final byte's padding bits
    // followed by whole bytes read past the end.
    int32_t length = std::max<int32_t>(s->read_in_length, 0);
    size_t whole = static_cast<size_t>(length / 8);
    uint64_t bytes = s->read_in >> (length % 8);
    for (size_t i = 0; i < whole; ++i) out[i] = static_cast<uint8_t>(bytes >> (8 * i));
    s->read_in = 0;
    s->read_in_length = 0;
    return whole;
  }

 private:
  // One isal_inflate call; adds what it used and made to `step`.
  void Run(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len, uint64_t error_offset, Step& step) {
    inflate_state* s = state_.get();
    uint32_t avail_in = Clamp32(in_len), avail_out = Clamp32(out_len);
    s->next_in = const_cast<uint8_t*>(in);  // ISA-L never writes through next_in
    s->avail_in = avail_in;
    s->next_out = out;
    s->avail_out = avail_out;
    int ret = isal_inflate(s);
    size_t used = avail_in - s->avail_in, made = avail_out - s->avail_out;
    step.consumed += used;
    step.produced += made;
    total_in_ += used;
    total_out_ += made;
    if (ret < 0) {
      FailAt(ErrorCode::kCorrupt, "corrupt deflate data (ISA-L error " + std::to_string(ret) + ")",
             error_offset + used);
    }
  }

  // Feeds kStride bytes in one call. True when that crossed no block
  // boundary or stopped at one (the caller reports it); false when it
  // crossed one, after restoring the state, counters and `step` as they were.
  bool Stride(const uint8_t* in, uint8_t* out, size_t room, uint64_t error_offset, Step& step) {
    inflate_state* s = state_.get();
    // The state is self-contained between calls (ISA-L keeps the history in
    // tmp_out_buffer), so the fields plus the valid part of that buffer are
    // all there is to restore.
    const size_t length = offsetof(inflate_state, tmp_out_buffer) + static_cast<size_t>(s->tmp_out_valid);
    if (!snapshot_) snapshot_ = std::make_unique<inflate_state>();
    std::memcpy(static_cast<void*>(snapshot_.get()), s, length);
    const Step before = step;
    const uint64_t total_in = total_in_, total_out = total_out_;
    Run(in, kStride, out, room, error_offset, step);
    strided_in_ += step.consumed - before.consumed;
    strided_out_ += step.produced - before.produced;
    if (AtBoundary() || s->block_state == ISAL_BLOCK_INPUT_DONE || s->block_state == ISAL_BLOCK_FINISH) return true;
    const bool crossed = s->block_state != snapshot_->block_state || s->bfinal != snapshot_->bfinal ||
                         std::memcmp(&s->lit_huff_code, &snapshot_->lit_huff_code, sizeof(s->lit_huff_code)) != 0 ||
                         std::memcmp(&s->dist_huff_code, &snapshot_->dist_huff_code, sizeof(s->dist_huff_code)) != 0;
    if (!crossed) return true;
    std::memcpy(static_cast<void*>(s), snapshot_.get(), length);
    step = before;
    total_in_ = total_in;
    total_out_ = total_out;
    return false;
  }

  // Output decoded but not yet handed to the caller.
  bool Pending() const {
    const inflate_state* s = state_.get();
    return s->tmp_out_valid != s->tmp_out_processed || s->write_overflow_len != 0 || s->copy_overflow_length != 0 ||
           s->block_state == ISAL_BLOCK_INPUT_DONE;
  }

  bool AtBoundary() const {
    return (state_->block_state == ISAL_BLOCK_HDR || state_->block_state == ISAL_BLOCK_NEW_HDR) && !Pending();
  }

  std::unique_ptr<inflate_state> state_;  // ~87 KiB: heap, not stack
  std::unique_ptr<inflate_state> snapshot_;  // the state before a stride, allocated on first use
  uint64_t strided_in_ = 0;   // input bytes this search has strided over
  uint64_t strided_out_ = 0;  // output bytes those strides made
  uint64_t total_in_ = 0;                 // bytes consumed since Reset
  uint64_t total_out_ = 0;                // bytes produced since Reset
  // Position of the last boundary reported, so a caller that asks again
  // without feeding anything gets the next boundary, not the same one.
  uint64_t reported_in_ = 0;
  uint64_t reported_out_ = 0;
};

// ---------------------------------------------------------------------------
// zlib

class ZlibDeflateStream final : public DeflateStream {
 public:
  ZlibDeflateStream() {
    if (inflateInit2(&strm_, -15) != Z_OK) Fail(ErrorCode::kNoMemory, "zlib inflateInit2 failed");
  }
  ~ZlibDeflateStream() override { inflateEnd(&strm_); }
  ZlibDeflateStream(const ZlibDeflateStream&) = delete;
  ZlibDeflateStream& operator=(const ZlibDeflateStream&) = delete;

  void Reset(std::span<const uint8_t> dictionary, unsigned prime_bits, unsigned prime_value) override {
    if (inflateReset(&strm_) != Z_OK) Fail(ErrorCode::kCorrupt, "zlib inflateReset failed");
    prime_bits &= 7;
    if (prime_bits > 0 &&
        inflatePrime(&strm_, static_cast<int>(prime_bits), static_cast<int>(prime_value & ((1u << prime_bits) - 1))) !=
            Z_OK) {
      Fail(ErrorCode::kCorrupt, "zlib inflatePrime failed");
    }
    if (!dictionary.empty()) {
      if (dictionary.size() > kWindowSize) dictionary = dictionary.last(kWindowSize);
      if (inflateSetDictionary(&strm_, dictionary.data(), static_cast<uInt>(dictionary.size())) != Z_OK) {
        Fail(ErrorCode::kCorrupt, "zlib refused the checkpoint window");
      }
    }
  }

  Step Inflate(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len, bool find_boundary,
               uint64_t error_offset) override {
    Step step;
    uInt avail_in = Clamp32(in_len), avail_out = Clamp32(out_len);
    strm_.next_in = const_cast<Bytef*>(in);  // zlib never writes through next_in
    strm_.avail_in = avail_in;
    strm_.next_out = out;
    strm_.avail_out = avail_out;
    int ret = inflate(&strm_, find_boundary ? Z_BLOCK : Z_NO_FLUSH);
    step.consumed = avail_in - strm_.avail_in;
    step.produced = avail_out - strm_.avail_out;
    switch (ret) {
      case Z_STREAM_END:
        step.finished = true;
        break;
      case Z_OK:
        // Each call starts by stepping past a boundary it is sitting at
        // (inflate turns TYPE into TYPEDO), so one boundary is never
        // reported twice.
        step.at_boundary = find_boundary && (strm_.data_type & 128) && !(strm_.data_type & 64);
        break;
      case Z_BUF_ERROR:  // no progress possible with this input/output: not an error
        break;
      case Z_MEM_ERROR:
        Fail(ErrorCode::kNoMemory, "zlib out of memory");
      default:
        FailAt(ErrorCode::kCorrupt,
               std::string("corrupt deflate data (") + (strm_.msg ? strm_.msg : "zlib error") + ")",
               error_offset + step.consumed);
    }
    return step;
  }

  uint64_t unread_bits() const override { return static_cast<uint64_t>(strm_.data_type & 7); }

  // zlib hands back every whole byte it did not use.
  size_t TakeOverreadBytes(uint8_t*) override { return 0; }

 private:
  z_stream strm_{};
};

}  // namespace

std::unique_ptr<DeflateStream> DeflateStream::Create(InflateEngine engine) {
  switch (engine) {
    case InflateEngine::kIsal: return std::make_unique<IsalDeflateStream>();
    case InflateEngine::kZlib: return std::make_unique<ZlibDeflateStream>();
  }
  Fail(ErrorCode::kInvalidArgument, "unknown inflate engine");
}

// ---------------------------------------------------------------------------
// Gzip member header

namespace {
constexpr uint8_t kFlagHeaderCrc = 0x02;
constexpr uint8_t kFlagExtra = 0x04;
constexpr uint8_t kFlagName = 0x08;
constexpr uint8_t kFlagComment = 0x10;
constexpr uint8_t kFlagReserved = 0xE0;
}  // namespace

void GzipHeaderParser::Reset() {
  stage_ = Stage::kFixed;
  have_ = 0;
  extra_left_ = 0;
  flags_ = 0;
  crc_ = 0;
}

void GzipHeaderParser::Advance(Stage from) {
  // The optional fields come in this order (RFC 1952 section 2.3).
  if (from < Stage::kExtraLength && (flags_ & kFlagExtra)) {
    stage_ = Stage::kExtraLength;
  } else if (from < Stage::kName && (flags_ & kFlagName)) {
    stage_ = Stage::kName;
  } else if (from < Stage::kComment && (flags_ & kFlagComment)) {
    stage_ = Stage::kComment;
  } else if (from < Stage::kHeaderCrc && (flags_ & kFlagHeaderCrc)) {
    stage_ = Stage::kHeaderCrc;
  } else {
    stage_ = Stage::kDone;
  }
  have_ = 0;
}

size_t GzipHeaderParser::Consume(const uint8_t* data, size_t len, uint64_t offset) {
  size_t pos = 0;
  while (pos < len && stage_ != Stage::kDone) {
    const size_t start = pos;
    switch (stage_) {
      case Stage::kFixed: {
        while (pos < len && have_ < 10) {
          uint8_t b = data[pos];
          if (have_ == 0 && b != 0x1f) FailAt(ErrorCode::kCorrupt, "not a gzip header (bad magic)", offset + pos);
          if (have_ == 1 && b != 0x8b) FailAt(ErrorCode::kCorrupt, "not a gzip header (bad magic)", offset + pos);
          if (have_ == 2 && b != 8) FailAt(ErrorCode::kCorrupt, "gzip compression method is not deflate", offset + pos);
          if (have_ == 3 && (b & kFlagReserved)) FailAt(ErrorCode::kCorrupt, "gzip header has reserved flags set", offset + pos);
          fixed_[have_++] = b;
          ++pos;
        }
        crc_ = GzipCrc32(crc_, data + start, pos - start);
        if (have_ == 10) {
          flags_ = fixed_[3];
          Advance(Stage::kFixed);
        }
        break;
      }
      case Stage::kExtraLength: {
        while (pos < len && have_ < 2) fixed_[have_++] = data[pos++];
        crc_ = GzipCrc32(crc_, data + start, pos - start);
        if (have_ == 2) {
          extra_left_ = uint32_t{fixed_[0]} | (uint32_t{fixed_[1]} << 8);
          stage_ = Stage::kExtra;
          have_ = 0;
          if (extra_left_ == 0) Advance(Stage::kExtra);
        }
        break;
      }
      case Stage::kExtra: {
        size_t n = std::min<size_t>(extra_left_, len - pos);
        pos += n;
        extra_left_ -= static_cast<uint32_t>(n);
        crc_ = GzipCrc32(crc_, data + start, n);
        if (extra_left_ == 0) Advance(Stage::kExtra);
        break;
      }
      case Stage::kName:
      case Stage::kComment: {
        const void* nul = std::memchr(data + pos, 0, len - pos);
        size_t n = nul ? static_cast<size_t>(static_cast<const uint8_t*>(nul) - (data + pos)) + 1 : len - pos;
        pos += n;
        crc_ = GzipCrc32(crc_, data + start, n);
        if (nul) Advance(stage_);
        break;
      }
      case Stage::kHeaderCrc: {
        while (pos < len && have_ < 2) fixed_[have_++] = data[pos++];
        if (have_ == 2) {
          uint16_t stored = static_cast<uint16_t>(fixed_[0] | (fixed_[1] << 8));
          if (stored != static_cast<uint16_t>(crc_ & 0xffff)) {
            FailAt(ErrorCode::kCorrupt, "gzip header CRC mismatch", offset + pos - 2);
          }
          stage_ = Stage::kDone;
        }
        break;
      }
      case Stage::kDone:
        break;
    }
  }
  return pos;
}

}  // namespace clip::core
