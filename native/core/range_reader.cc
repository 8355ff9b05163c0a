// RangeReader: one random read = restart inflation at a checkpoint, skip to
// the offset, copy out.
//
// A read walks the same member grammar as the indexing pass (deflate data,
// 8-byte trailer, next member's header) because a range may run past the end
// of a member into the next one. Trailers are checked only when the read
// began at that member's start (a kMemberStart checkpoint): a read that
// starts at a block checkpoint has not seen the member's earlier output, so
// it cannot know its CRC-32. A read also stops as soon as it has its bytes;
// it never reads ahead to check a trailer it does not need.
//
// Before inflating, a read fetches its compressed span (SpanFor: from the
// checkpoint up to the proof whose output reaches the range's end) and
// checks every proof in it against the index (ProvenSource), then inflates
// only from those verified bytes: a source that returns a wrong byte
// anywhere in the span fails the read with EDIGEST instead of producing
// output. If the engine needs more than the proofs promised, the next proof
// is read and checked the same way.
//
// All mutable state (engine, buffers, the inflated window) lives in a
// per-thread scratch area, so concurrent reads share nothing but the
// read-only index and source, and a read allocates nothing in steady state.
#include "range_reader.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "error.h"
#include "sha256.h"

namespace clip::core {

namespace {

constexpr size_t kInputChunk = 64 * 1024;    // compressed bytes per source read
constexpr size_t kInputHeadroom = 16;        // room to push back ISA-L's read-ahead bytes
constexpr size_t kOutputChunk = 256 * 1024;  // uncompressed bytes per engine call
// At most this many compressed bytes are read, checked and held at once
// (always at least one proof); a longer span is taken a proof at a time.
constexpr uint64_t kMaxBufferedSpan = 16u << 20;

// Everything one read needs, reused across reads on the same thread.
struct ReadScratch {
  std::unique_ptr<DeflateStream> engines[2];  // indexed by InflateEngine
  std::vector<uint8_t> window;
  std::vector<uint8_t> span;  // the read's compressed span, when the source cannot lend it
  std::vector<uint8_t> input = std::vector<uint8_t>(kInputHeadroom + kInputChunk);
  std::vector<uint8_t> output = std::vector<uint8_t>(kOutputChunk);
  bool busy = false;  // guards against a source that reads through a RangeReader on this thread

  DeflateStream& Engine(InflateEngine engine) {
    auto& slot = engines[engine == InflateEngine::kIsal ? 0 : 1];
    if (!slot) slot = DeflateStream::Create(engine);
    return *slot;
  }
};

// Blob bytes proven against the index's proofs: from span `first`'s start,
// proof after proof. ReadAt serves only proven bytes, so the inflater never
// sees a byte that was not checked; Extend() proves the next proof when the
// inflater needs more. Reads go forward only (the inflater's input), so
// only the proofs being read are held.
class ProvenSource final : public CompressedSource {
 public:
  ProvenSource(const CheckpointIndex& index, const CompressedSource& source, std::vector<uint8_t>& buffer, size_t first)
      : index_(index), source_(source), buffer_(buffer), span_(first) {
    begin_ = end_ = index.SpanBegin(first);
  }

  // Proves the proofs from the next one up to blob offset `target` (a proof
  // end, e.g. SpanFor's), or as many as kMaxBufferedSpan allows.
  void ProveTo(uint64_t target) {
    if (span_ >= index_.checkpoints.size()) return;
    const uint64_t from = index_.ProofBegin(span_, proof_);
    // Whole proofs only, at least one.
    uint64_t until = index_.ProofEnd(span_, proof_);
    for (size_t i = span_, j = proof_; until < target;) {
      if (++j == index_.ProofCount(i)) {
        if (++i == index_.checkpoints.size()) break;
        j = 0;
      }
      const uint64_t next = index_.ProofEnd(i, j);
      if (next - from > kMaxBufferedSpan || next > target) break;
      until = next;
    }
    const size_t length = static_cast<size_t>(until - from);
    data_ = source_.View(from, length);
    if (!data_) {
      buffer_.resize(length);
      const size_t n = source_.ReadAt(from, buffer_.data(), length);
      if (n < length) FailAt(ErrorCode::kTruncated, "compressed data ends before the range is complete", from + n);
      data_ = buffer_.data();
    }
    begin_ = from;
    uint8_t digest[Sha256::kSize];
    while (span_ < index_.checkpoints.size() && index_.ProofEnd(span_, proof_) <= until) {
      const uint64_t b = index_.ProofBegin(span_, proof_), e = index_.ProofEnd(span_, proof_);
      Sha256::Digest(data_ + (b - begin_), static_cast<size_t>(e - b), digest);
      index_.CheckProof(span_, proof_, digest);
      end_ = e;
      if (++proof_ == index_.ProofCount(span_)) {
        proof_ = 0;
        if (++span_ == index_.checkpoints.size()) break;
      }
    }
  }

  // Proves the next proof (with its neighbours up to the read's first
  // target); false when the blob has no more.
  bool Extend() {
    if (span_ >= index_.checkpoints.size()) return false;
    ProveTo(index_.ProofEnd(span_, proof_));
    return true;
  }

  size_t ReadAt(uint64_t offset, uint8_t* out, size_t len) const override {
    if (offset < begin_ || offset >= end_) return 0;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(len, end_ - offset));
    std::memcpy(out, data_ + (offset - begin_), n);
    return n;
  }

 private:
  const CheckpointIndex& index_;
  const CompressedSource& source_;
  std::vector<uint8_t>& buffer_;
  size_t span_;        // the next proof to check: proof_ of span span_
  size_t proof_ = 0;
  const uint8_t* data_ = nullptr;  // blob bytes [begin_, end_), all proven
  uint64_t begin_;
  uint64_t end_;
};

// Compressed input pulled from the proven source in chunks, with a few
// bytes of headroom in front so bytes an engine read past a member's end
// can be pushed back.
class InputCursor {
 public:
  InputCursor(ProvenSource& source, std::vector<uint8_t>& buffer, uint64_t offset)
      : source_(source), buffer_(buffer), next_read_(offset) {}

  // Bytes available now; refills from the source when empty, proving more
  // of the blob if needed. 0 means the blob has nothing more.
  size_t Available() {
    if (head_ == tail_) {
      size_t n = source_.ReadAt(next_read_, buffer_.data() + kInputHeadroom, kInputChunk);
      while (n == 0 && source_.Extend()) n = source_.ReadAt(next_read_, buffer_.data() + kInputHeadroom, kInputChunk);
      head_ = kInputHeadroom;
      tail_ = kInputHeadroom + n;
      next_read_ += n;
    }
    return tail_ - head_;
  }
  // Available(), but throws kTruncated instead of returning 0.
  size_t Require() {
    size_t n = Available();
    if (n == 0) FailAt(ErrorCode::kTruncated, "compressed data ends before the range is complete", next_read_);
    return n;
  }
  const uint8_t* data() const { return buffer_.data() + head_; }
  // Blob offset of data()[0].
  uint64_t offset() const { return next_read_ - (tail_ - head_); }
  void Skip(size_t n) { head_ += n; }
  // Puts back `n` (<= 8) bytes that belong right before data().
  void PushBack(const uint8_t* bytes, size_t n) {
    // head_ >= kInputHeadroom after any refill, and this happens at most
    // once per member end before more bytes are skipped.
    head_ -= n;
    std::memcpy(buffer_.data() + head_, bytes, n);
  }

 private:
  ProvenSource& source_;
  std::vector<uint8_t>& buffer_;
  uint64_t next_read_;  // blob offset of the byte after buffer_[tail_)
  size_t head_ = kInputHeadroom;
  size_t tail_ = kInputHeadroom;
};

uint32_t LoadLe32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// Reads bytes [offset, offset + len) of a gzip layer using `scratch`.
void ReadGzip(const CheckpointIndex& index, const CompressedSource& source, InflateEngine engine,
              ReadScratch& scratch, uint64_t offset, uint8_t* out, size_t len) {
  if (index.checkpoints.empty()) Fail(ErrorCode::kCorrupt, "gzip index has no checkpoints");
  // The span first, proven against the index's proofs: no byte is
  // inflated (let alone returned) before every compressed byte it could
  // depend on is known to be the indexed blob's.
  const CompressedSpan span = index.SpanFor(offset, len);
  const size_t ci = span.checkpoint;
  const Checkpoint& checkpoint = index.checkpoints[ci];
  ProvenSource proven(index, source, scratch.span, ci);
  proven.ProveTo(span.end);
  DeflateStream& deflate = scratch.Engine(engine);
  InputCursor input(proven, scratch.input, checkpoint.compressed_offset);

  // Member bookkeeping: the CRC can be checked only for members whose output
  // this read saw from the start.
  bool whole_member = checkpoint.kind == CheckpointKind::kMemberStart;
  uint32_t member_crc = 0;
  uint64_t member_size = 0;
  GzipHeaderParser header;
  bool in_header = whole_member;

  if (!whole_member) {
    index.LoadWindow(ci, scratch.window);
    unsigned prime = 0;
    if (checkpoint.bits > 0) {
      uint8_t byte = 0;
      if (proven.ReadAt(checkpoint.compressed_offset - 1, &byte, 1) != 1) {
        FailAt(ErrorCode::kTruncated, "compressed data missing", checkpoint.compressed_offset - 1);
      }
      prime = byte >> (8 - checkpoint.bits);
    }
    deflate.Reset(scratch.window, checkpoint.bits, prime);
  }

  uint64_t position = checkpoint.uncompressed_offset;  // uncompressed offset of the next byte inflated
  const uint64_t end = offset + len;
  uint8_t* const output = scratch.output.data();
  while (position < end) {
    if (in_header) {
      const size_t available = input.Require();  // refills first: data() may move
      size_t n = header.Consume(input.data(), available, input.offset());
      input.Skip(n);
      if (header.done()) {
        deflate.Reset({}, 0, 0);
        in_header = false;
      }
      continue;
    }
    // May be 0 at the end of the source: the engine can still hold output.
    const size_t available = input.Available();
    DeflateStream::Step step = deflate.Inflate(input.data(), available, output, kOutputChunk, false, input.offset());
    input.Skip(step.consumed);
    if (step.produced > 0) {
      if (whole_member) member_crc = GzipCrc32(member_crc, output, step.produced);
      member_size += step.produced;
      // Copy the part of [position, position + produced) that is in [offset, end).
      uint64_t chunk_end = position + step.produced;
      if (chunk_end > offset) {
        uint64_t from = std::max(position, offset);
        uint64_t to = std::min(chunk_end, end);
        std::memcpy(out + (from - offset), output + (from - position), static_cast<size_t>(to - from));
      }
      position = chunk_end;
    }
    if (step.finished) {
      if (position >= end) break;
      // The member ended before the range did: its trailer, then the next member.
      uint8_t overread[8];
      size_t n = deflate.TakeOverreadBytes(overread);
      if (n > 0) input.PushBack(overread, n);
      uint8_t trailer[8];
      for (size_t have = 0; have < sizeof(trailer);) {
        size_t take = std::min(sizeof(trailer) - have, input.Require());
        std::memcpy(trailer + have, input.data(), take);
        input.Skip(take);
        have += take;
      }
      uint64_t trailer_at = input.offset() - sizeof(trailer);
      if (whole_member && LoadLe32(trailer) != member_crc) {
        FailAt(ErrorCode::kCorrupt, "gzip member CRC-32 mismatch", trailer_at);
      }
      if (whole_member && LoadLe32(trailer + 4) != static_cast<uint32_t>(member_size)) {
        FailAt(ErrorCode::kCorrupt, "gzip member size mismatch", trailer_at + 4);
      }
      whole_member = true;
      member_crc = 0;
      member_size = 0;
      header.Reset();
      in_header = true;
      if (input.Available() > 0 && input.data()[0] == 0) {
        FailAt(ErrorCode::kCorrupt, "gzip stream ends before the index says it does", input.offset());
      }
      continue;
    }
    if (step.consumed == 0 && step.produced == 0) {
      if (available == 0) {
        FailAt(ErrorCode::kTruncated, "compressed data ends before the range is complete", input.offset());
      }
      FailAt(ErrorCode::kCorrupt, "deflate stream makes no progress", input.offset());
    }
  }
}

}  // namespace

RangeReader::RangeReader(const CheckpointIndex& index, const CompressedSource& source, InflateEngine engine)
    : index_(index), source_(source), engine_(engine) {}

void RangeReader::Read(uint64_t offset, uint8_t* out, size_t len) const {
  const uint64_t size = index_.uncompressed_size;
  if (offset > size || len > size - offset) {
    Fail(ErrorCode::kInvalidArgument, "read [" + std::to_string(offset) + ", +" + std::to_string(len) +
                                          ") passes the end of the stream (" + std::to_string(size) + " bytes)");
  }
  if (len == 0) return;
  if (index_.format == LayerFormat::kTar) {
    size_t n = source_.ReadAt(offset, out, len);
    if (n < len) FailAt(ErrorCode::kTruncated, "layer data ends early", offset + n);
    return;
  }
  thread_local std::unique_ptr<ReadScratch> cached;
  std::unique_ptr<ReadScratch> own;
  ReadScratch* scratch;
  if (!cached) cached = std::make_unique<ReadScratch>();
  if (!cached->busy) {
    scratch = cached.get();
  } else {
    own = std::make_unique<ReadScratch>();
    scratch = own.get();
  }
  scratch->busy = true;
  try {
    ReadGzip(index_, source_, engine_, *scratch, offset, out, len);
  } catch (...) {
    scratch->busy = false;
    throw;
  }
  scratch->busy = false;
}

}  // namespace clip::core
