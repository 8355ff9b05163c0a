// CheckpointingInflater: the streaming gzip pass that indexes a layer.
//
// The pass is a small state machine over the compressed bytes, one gzip
// member after another: header -> deflate data -> 8-byte trailer -> (next
// header | zero padding | end). The deflate data goes through a
// DeflateStream, which runs in one of two modes:
//
//   - normal: the whole pushed chunk in, up to kCallOutput bytes out per
//     call, so ISA-L runs at full speed;
//   - boundary-seeking: once a checkpoint is due (spacing reached, or
//     RequestCheckpoint), the stream stops at the next deflate block
//     boundary; the checkpoint is taken there.
//
// Output goes into one buffer that always keeps the 32 KiB before the write
// position (sliding it to the front when the buffer fills), so a window is
// at hand without copying every byte twice. Each engine call's output is
// checksummed (CRC-32 for the member trailer) and handed to the sink
// straight from the buffer.
//
// Sparse windows. Only the first 32 KiB of output after a checkpoint can
// refer back into its window, and typically they use a small part of it.
// So a block checkpoint is held back ("pending") until its stream has
// produced 32 KiB more output (or ended); meanwhile the compressed bytes
// after it are captured. Then the engine re-inflates that stretch once more
// from the checkpoint, with a synthetic window whose bytes name their own
// 128-byte group (byte i holds i / G, G = window / 256 rounded up).
// Decoding does not depend on window contents, so the probe run makes the
// same literals and copies as the real one: an output byte that differs
// from the real output was copied from the window, and its value names the
// group it came from. Groups nobody copied from are stored with the
// synthetic bytes instead of the real ones; they compress to almost
// nothing (on a Debian layer the index shrinks ~6x). A restart with that
// window gives the real output: a byte copied from an unmarked group must
// have had the same value in both windows, or its group would be marked.
// If the analysis cannot finish (a capture that grows past kMaxCapture, a
// probe that fails), the checkpoint keeps its full window.
//
// Memory: ~1.1 MiB of output buffer, the engine states (~90 KiB each for
// ISA-L), and while checkpoints are pending their 32 KiB windows and the
// captured input (at most kMaxCapture): bounded whatever the stream size.
#include "checkpointing_inflater.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "error.h"

namespace clip::core {

namespace {

constexpr size_t kHistory = DeflateStream::kWindowSize;  // bytes kept before the write position
constexpr size_t kBufferSpace = 1024 * 1024;             // output space after the history
// Output per engine call in normal mode. Also bounds how far past a
// RequestCheckpoint() made inside the sink the next checkpoint can land.
constexpr size_t kCallOutput = 256 * 1024;
// If boundary-seeking has gone through this much compressed input without
// a usable boundary, give up on this checkpoint and try again half a
// spacing later, so slicing never dominates the pass. Real gzip blocks are
// 10-60 KiB compressed, so this spans several; only streams of tiny or
// fixed-Huffman blocks (whose 3-bit headers ISA-L reads from bits it has
// already buffered, so it never stops inside them) exhaust it.
constexpr uint64_t kSeekBudget = 128 * 1024;
// The least input fed per call while approaching a spacing checkpoint.
constexpr uint64_t kMinStepInput = 64;
// The last consumed input bytes kept, to recover the bytes of a boundary
// the engine has already swallowed (ISA-L holds up to 328 header bytes plus
// 8 bytes of bit buffer).
constexpr size_t kRecentInput = 1024;
// The engine sees the blob in segments of this many bytes, cut at fixed
// blob offsets (k * kSegment), whatever chunks the caller pushes. Every
// decision of the pass (where normal-mode calls stop, where a boundary
// search starts and how it slices and strides, which block boundaries ISA-L
// stops inside) depends on where the engine's input ends; feeding it fixed
// segments makes the index a function of the blob bytes and the settings
// alone (docs/format.md promises byte-identical archives). Large enough
// that segment ends cost nothing measurable; a file read (1 MiB) is whole
// segments and is never copied.
constexpr size_t kSegment = 128 * 1024;
// Captured input beyond which pending checkpoints give up on sparse windows.
constexpr size_t kMaxCapture = 4 * 1024 * 1024;

// Bytes of a window of `length` bytes that one synthetic byte value names.
size_t GroupSize(size_t length) { return std::max<size_t>(1, (length + 255) / 256); }

}  // namespace

WindowSparsifier::WindowSparsifier(InflateEngine engine) : engine_(engine) {}

// Replaces the groups of `checkpoint.window` that the output after it
// never copies from with synthetic bytes (see the file comment). Leaves
// the window whole if the analysis does not complete.
void WindowSparsifier::Sparsify(WindowAnalysis& checkpoint) {
  const size_t window = checkpoint.window.size();
  if (window == 0 || !checkpoint.analyzable) return;
  const size_t real_length = checkpoint.following.size();
  const uint8_t* real = checkpoint.following.data();
  const size_t group = GroupSize(window);
  // Probe A names each byte's group (i / group), probe B its place in the
  // group (i % group); together they name the exact byte a copy came from.
  // The two synthetic windows depend only on the window's length (almost
  // always 32 KiB): build them once, not with a division per byte per
  // checkpoint.
  if (pattern_a_.size() != window) {
    pattern_a_.resize(window);
    pattern_b_.resize(window);
    for (size_t i = 0; i < window; ++i) {
      pattern_a_[i] = static_cast<uint8_t>(i / group);
      pattern_b_[i] = static_cast<uint8_t>(i % group);
    }
  }
  if (!RunProbe(checkpoint, pattern_a_, probe_output_)) return;
  const bool refined = RunProbe(checkpoint, pattern_b_, probe_output_b_);

  // keep[i]: window byte i must hold its real value; every other byte is
  // stored as zero, so the window compresses to little more than the kept
  // bytes. A copy from byte p lands in the output with probe A's value
  // p / group and probe B's value p % group. Where a probe's output equals
  // the real output, the real value is that probe's synthetic value, so
  // either way both halves of p are known: every copy the probes can see
  // names its byte exactly. Neither sees a copy from a byte whose real
  // value equals both synthetic values, so those few are always kept.
  // Without probe B (it failed), a copy seen by A keeps its whole group,
  // and bytes equal to their A value are kept.
  std::vector<uint8_t>& keep = groups_used_;
  keep.assign(window, 0);
  const uint8_t* w = checkpoint.window.data();
  for (size_t i = 0; i < window; ++i)
    keep[i] = (w[i] == pattern_a_[i]) & (!refined | (w[i] == pattern_b_[i]));
  for (size_t o = 0; o < real_length; ++o) {
    const bool in_a = probe_output_[o] != real[o];
    const bool in_b = refined && probe_output_b_[o] != real[o];
    if (!in_a && !in_b) continue;
    const size_t g = in_a ? probe_output_[o] : real[o];
    if (refined) {
      const size_t k = in_b ? probe_output_b_[o] : real[o];
      const size_t at = g * group + k;
      if (k >= group || at >= window) return;  // cannot happen; if it does, keep the full window
      keep[at] = 1;
      continue;
    }
    for (size_t i = g * group; i < std::min(window, (g + 1) * group); ++i) keep[i] = 1;
  }
  uint8_t* stored = checkpoint.window.data();
  for (size_t i = 0; i < window; ++i) stored[i] = keep[i] ? stored[i] : 0;
}

// Inflates the output after `checkpoint` again, with `probe` as its
// window, into `out`. True when it reproduced the real pass's length (and,
// short of 32 KiB, the stream ended there, the only proof that no later
// byte refers back); false keeps the full window.
bool WindowSparsifier::RunProbe(const WindowAnalysis& checkpoint, const std::vector<uint8_t>& probe,
                                std::vector<uint8_t>& out) {
  const size_t real_length = checkpoint.following.size();
  const bool stream_ended = checkpoint.stream_ended;
  out.resize(kHistory);
  if (!analysis_) analysis_ = DeflateStream::Create(engine_);
  const uint8_t* in = checkpoint.input.data();
  const size_t in_len = checkpoint.input.size();
  size_t produced = 0;
  try {
    analysis_->Reset(probe, checkpoint.bits, checkpoint.prime);
    size_t used = 0;
    bool finished = false;
    while (produced < real_length && !finished) {
      DeflateStream::Step step = analysis_->Inflate(in + used, in_len - used, out.data() + produced,
                                                    real_length - produced, false, checkpoint.compressed_offset + used);
      used += step.consumed;
      produced += step.produced;
      finished = step.finished;
      if (step.consumed == 0 && step.produced == 0 && !finished) break;  // capture used up
    }
  } catch (const CoreError&) {
    return false;  // the real pass decoded these bytes; if the probe disagrees, keep the full window
  }
  return produced == real_length && (real_length == kHistory || stream_ended);
}


class CheckpointingInflater::Impl {
 public:
  Impl(InflateEngine engine, uint64_t spacing, OutputSink output, CheckpointSink checkpoint,
       DeferredCheckpointSink deferred)
      : engine_(engine),
        spacing_(spacing),
        output_(std::move(output)),
        checkpoint_(std::move(checkpoint)),
        deferred_(std::move(deferred)),
        deflate_(DeflateStream::Create(engine)),
        sparsifier_(engine),
        buffer_(kHistory + kBufferSpace) {}

  void Feed(const uint8_t* data, size_t len) {
    if (phase_ == Phase::kDead) Fail(ErrorCode::kInvalidArgument, "inflater used after an error");
    if (finished_) Fail(ErrorCode::kInvalidArgument, "inflater fed after Finish()");
    try {
      // Re-cut the input into the fixed segments (see kSegment): whole
      // segments inside `data` go through as they are, the pieces of a
      // segment split across pushes are gathered in staged_ first.
      while (len > 0) {
        const size_t at = static_cast<size_t>(fed_ % kSegment);
        if (at == 0 && len >= kSegment) {
          fed_ += kSegment;
          Process(data, kSegment);
          data += kSegment;
          len -= kSegment;
          continue;
        }
        if (staged_.empty()) staged_.resize(kSegment);
        const size_t n = std::min(len, kSegment - at);
        std::memcpy(staged_.data() + at, data, n);
        fed_ += n;
        data += n;
        len -= n;
        if (at + n == kSegment) Process(staged_.data(), kSegment);
      }
    } catch (...) {
      phase_ = Phase::kDead;
      throw;
    }
  }

  void Finish() {
    if (phase_ == Phase::kDead) Fail(ErrorCode::kInvalidArgument, "inflater used after an error");
    if (finished_) return;
    // The last, partial segment.
    if (const size_t rest = static_cast<size_t>(fed_ % kSegment); rest > 0) {
      try {
        Process(staged_.data(), rest);
      } catch (...) {
        phase_ = Phase::kDead;
        throw;
      }
    }
    if (phase_ == Phase::kBetweenMembers || phase_ == Phase::kPadding) {
      finished_ = true;
      if (retire_ && write_ > handed_from_) retire_(std::move(buffer_), handed_from_, write_);
      return;
    }
    Phase phase = phase_;
    phase_ = Phase::kDead;
    if (phase == Phase::kHeader && header_.untouched() && members_ == 0) {
      FailAt(ErrorCode::kTruncated, "empty gzip stream", in_pos_);
    }
    FailAt(ErrorCode::kTruncated, "gzip stream ends early", in_pos_);
  }

  void RequestCheckpoint() { requested_ = true; }
  void OnSpanStart(SpanStartSink sink) { span_start_ = std::move(sink); }
  void MeasureProofs(uint64_t proof_size, ProofSink sink) {
    proof_size_ = proof_size;
    proof_sink_ = std::move(sink);
  }
  void HandOffOutputBuffers(OutputBufferSource take, RetiredOutputSink retire) {
    take_ = std::move(take);
    retire_ = std::move(retire);
  }

  uint64_t settled_input() const {
    // A member start lies at its header's first byte; a block boundary is
    // found at most the bytes the engine holds (kRecentInput covers them)
    // behind the input consumed, and its span starts one byte earlier.
    if (phase_ == Phase::kHeader && !header_.untouched()) return member_in_;
    return in_pos_ > kRecentInput + 1 ? in_pos_ - kRecentInput - 1 : 0;
  }

  uint64_t compressed_consumed() const { return fed_; }
  uint64_t uncompressed_produced() const { return out_pos_; }

 private:
  enum class Phase { kHeader, kDeflate, kTrailer, kBetweenMembers, kPadding, kDead };

  // A block checkpoint whose window is still being analysed.
  struct Pending {
    uint64_t uncompressed_offset = 0;
    uint64_t compressed_offset = 0;
    uint8_t bits = 0;
    uint8_t prime = 0;            // the `bits` leading bits, from byte compressed_offset - 1
    bool analyzable = true;       // false: keep the full window
    std::vector<uint8_t> window;  // the full window
  };

  // Runs the state machine over data[0, len), the blob bytes at in_pos_.
  void Process(const uint8_t* data, size_t len) {
    size_t pos = 0;
    while (pos < len) {
      switch (phase_) {
        case Phase::kHeader: {
          if (header_.untouched()) member_in_ = in_pos_;
          size_t n = header_.Consume(data + pos, len - pos, in_pos_);
          pos += n;
          in_pos_ += n;
          if (header_.done()) StartMember();
          break;
        }
        case Phase::kDeflate:
          pos += InflateSome(data + pos, len - pos);
          break;
        case Phase::kTrailer: {
          size_t n = std::min(len - pos, sizeof(trailer_) - trailer_have_);
          std::memcpy(trailer_ + trailer_have_, data + pos, n);
          trailer_have_ += n;
          pos += n;
          in_pos_ += n;
          if (trailer_have_ == sizeof(trailer_)) CheckTrailer();
          break;
        }
        case Phase::kBetweenMembers:
          if (data[pos] == 0) {
            phase_ = Phase::kPadding;
          } else {
            header_.Reset();
            phase_ = Phase::kHeader;
          }
          break;
        case Phase::kPadding: {
          // gzip ignores zero bytes after the last member; anything else is garbage.
          const uint8_t* p = data + pos;
          size_t n = len - pos;
          for (size_t i = 0; i < n; ++i) {
            if (p[i] != 0) FailAt(ErrorCode::kCorrupt, "trailing garbage after gzip stream", in_pos_ + i);
          }
          pos += n;
          in_pos_ += n;
          break;
        }
        case Phase::kDead:
          Fail(ErrorCode::kInvalidArgument, "inflater used after an error");
      }
    }
  }

  void StartMember() {
    deflate_->Reset({}, 0, 0);
    member_out_ = out_pos_;
    member_crc_ = 0;
    member_size_ = 0;
    phase_ = Phase::kDeflate;
    recent_length_ = 0;
    // A member that follows an empty one starts at the same uncompressed
    // offset: the earlier checkpoint already covers it.
    if (!have_checkpoint_ || out_pos_ > last_checkpoint_out_) {
      NoteCheckpoint(out_pos_);
      if (span_start_) span_start_(member_in_, 0);
      SpanStarted(member_in_);
      EmitWhole(out_pos_, member_in_, 0, CheckpointKind::kMemberStart, {});
    }
  }

  // A span begins at blob offset `begin`: its proofs end every proof_size_ bytes from there.
  void SpanStarted(uint64_t begin) {
    if (proof_size_ > 0) next_proof_ = begin + proof_size_;
  }

  bool CheckpointDue() const { return requested_ || (spacing_ > 0 && out_pos_ >= next_due_out_); }

  // Feeds the deflate stream from data[0, len); returns the bytes used.
  size_t InflateSome(const uint8_t* data, size_t len) {
    size_t pos = 0;
    while (phase_ == Phase::kDeflate) {
      if (buffer_.size() - write_ < DeflateStream::kMinOutput) SlideBuffer();
      const bool seeking = CheckpointDue();
      if (seeking && !seeking_) {
        seeking_ = true;
        seek_start_in_ = in_pos_;
      } else if (!seeking) {
        seeking_ = false;
      }
      size_t room = std::min(buffer_.size() - write_, kCallOutput);
      size_t input = len - pos;
      // Proofs: stop the input at the next proof end; once there, drain the
      // output (calls with no input) and record how far it got.
      if (next_proof_ > 0) {
        while (next_proof_ < in_pos_) next_proof_ += proof_size_;  // passed outside deflate data: unmeasured
        input = static_cast<size_t>(std::min<uint64_t>(input, next_proof_ - in_pos_));
      }
      const bool at_proof = next_proof_ > 0 && in_pos_ == next_proof_;
      if (!seeking && spacing_ > 0 && next_due_out_ > out_pos_) {
        // Stop normal-mode output where a spacing checkpoint becomes due, so
        // the search for a boundary starts there. Limiting the output is not
        // enough for ISA-L: it decodes up to 64 KiB ahead into its own
        // buffer whatever the output space. So close to the point, feed only
        // about half the input the remaining output needs (at the ratio seen
        // so far): the calls undershoot and converge on it in a few steps.
        uint64_t remaining = next_due_out_ - out_pos_;
        room = static_cast<size_t>(std::min<uint64_t>(room, remaining));
        if (remaining < 4 * kHistory) {
          uint64_t estimate = out_pos_ > 0 ? remaining * in_pos_ / out_pos_ / 2 : remaining / 8;
          input = static_cast<size_t>(std::min<uint64_t>(input, std::max<uint64_t>(estimate, kMinStepInput)));
        }
      }
      DeflateStream::Step step =
          deflate_->Inflate(data + pos, input, buffer_.data() + write_, room, seeking, in_pos_);
      Consumed(data + pos, step.consumed);
      pos += step.consumed;
      if (step.produced > 0) Produced(step.produced);
      if (step.at_boundary) {
        TakeBlockCheckpoint();
      } else if (seeking && in_pos_ - seek_start_in_ > kSeekBudget) {
        GiveUpSeeking();
      }
      if (step.finished) {
        EndMember();
        break;
      }
      FinishReadyCheckpoints(false);
      if (at_proof && step.produced == 0 && !step.at_boundary && next_proof_ == in_pos_) {
        proof_sink_(next_proof_, out_pos_);
        next_proof_ += proof_size_;
        continue;
      }
      if (step.consumed == 0 && step.produced == 0 && !step.at_boundary) {
        if (pos == len) break;  // needs more input
        // The stream neither used input nor produced output: with room to
        // write and input to read, that is a stuck (broken) stream.
        FailAt(ErrorCode::kCorrupt, "deflate stream makes no progress", in_pos_);
      }
    }
    return pos;
  }

  // Records `n` consumed input bytes: in the recent-input tail and, while
  // checkpoints are pending, in the capture.
  void Consumed(const uint8_t* data, size_t n) {
    in_pos_ += n;
    if (n == 0) return;
    if (!pending_.empty()) capture_.insert(capture_.end(), data, data + n);
    if (n >= kRecentInput) {
      std::memcpy(recent_.data(), data + n - kRecentInput, kRecentInput);
      recent_length_ = kRecentInput;
      return;
    }
    // recent_ has room for twice what must be kept, so tiny pushes append
    // and only every so often slide the tail down.
    if (recent_length_ + n > recent_.size()) {
      size_t keep = std::min(recent_length_, kRecentInput);
      std::memmove(recent_.data(), recent_.data() + recent_length_ - keep, keep);
      recent_length_ = keep;
    }
    std::memcpy(recent_.data() + recent_length_, data, n);
    recent_length_ += n;
  }

  // Accounts for `n` new bytes at buffer_[write_] and hands them to the sink.
  void Produced(size_t n) {
    const uint8_t* data = buffer_.data() + write_;
    member_crc_ = GzipCrc32(member_crc_, data, n);
    member_size_ += n;
    write_ += n;
    uint64_t offset = out_pos_;
    out_pos_ += n;
    output_(data, n, offset);
  }

  // Keeps the last kHistory bytes and frees the rest of the buffer.
  // With hand-off, the full buffer leaves (its output not yet handed off
  // with it) and a fresh one starts with a copy of the history instead.
  void SlideBuffer() {
    if (retire_) {
      std::vector<uint8_t> next = take_(buffer_.size());
      std::memcpy(next.data(), buffer_.data() + write_ - kHistory, kHistory);
      retire_(std::move(buffer_), handed_from_, write_);
      buffer_ = std::move(next);
      handed_from_ = kHistory;
    } else {
      std::memmove(buffer_.data(), buffer_.data() + write_ - kHistory, kHistory);
    }
    write_ = kHistory;
  }

  void TakeBlockCheckpoint() {
    if (have_checkpoint_ && out_pos_ <= last_checkpoint_out_) return;  // nothing new since the last one
    // The boundary sits unread_bits() before the end of what the stream consumed.
    uint64_t bit_position = in_pos_ * 8 - deflate_->unread_bits();
    Pending checkpoint;
    checkpoint.uncompressed_offset = out_pos_;
    checkpoint.compressed_offset = (bit_position + 7) / 8;
    checkpoint.bits = static_cast<uint8_t>(checkpoint.compressed_offset * 8 - bit_position);
    if (span_start_) span_start_(checkpoint.compressed_offset, checkpoint.bits);
    SpanStarted(checkpoint.compressed_offset - (checkpoint.bits > 0 ? 1 : 0));
    // The window: output of this member before the boundary (older bytes
    // cannot be referenced), at most 32 KiB; always inside the buffer.
    size_t window = static_cast<size_t>(std::min<uint64_t>(kHistory, out_pos_ - member_out_));
    checkpoint.window.assign(buffer_.data() + write_ - window, buffer_.data() + write_);
    NoteCheckpoint(out_pos_);

    // Start (or extend) the capture at the boundary's first whole byte; the
    // bytes the engine already holds are in the recent-input tail (and, with
    // checkpoints pending, in the capture too).
    uint64_t recent_start = in_pos_ - recent_length_;
    if (checkpoint.bits > 0) {
      uint64_t at = checkpoint.compressed_offset - 1;
      if (at >= recent_start) {
        checkpoint.prime = static_cast<uint8_t>(recent_[at - recent_start] >> (8 - checkpoint.bits));
      } else if (!pending_.empty() && at >= capture_base_) {
        checkpoint.prime = static_cast<uint8_t>(capture_[at - capture_base_] >> (8 - checkpoint.bits));
      } else {
        checkpoint.analyzable = false;  // cannot happen with either engine; be safe rather than sparse
      }
    }
    if (pending_.empty()) {
      if (checkpoint.compressed_offset < recent_start) {
        EmitWhole(checkpoint.uncompressed_offset, checkpoint.compressed_offset, checkpoint.bits,
                  CheckpointKind::kBlock, std::move(checkpoint.window));
        return;
      }
      capture_base_ = checkpoint.compressed_offset;
      capture_.assign(recent_.data() + (checkpoint.compressed_offset - recent_start), recent_.data() + recent_length_);
    }
    pending_.push_back(std::move(checkpoint));
  }

  // Emits pending checkpoints whose analysis can be completed: those followed
  // by 32 KiB of output, or all of them at the end of the member
  // (`stream_ended`) or when the capture grew too large.
  void FinishReadyCheckpoints(bool stream_ended) {
    while (!pending_.empty()) {
      Pending& front = pending_.front();
      bool ready = stream_ended || out_pos_ - front.uncompressed_offset >= kHistory;
      bool too_long = capture_.size() > kMaxCapture;
      if (!ready && !too_long) return;
      WindowAnalysis analysis;
      analysis.compressed_offset = front.compressed_offset;
      analysis.bits = front.bits;
      analysis.prime = front.prime;
      analysis.stream_ended = stream_ended;
      analysis.window = std::move(front.window);
      // The real output after the checkpoint is still in the buffer: it
      // keeps 32 KiB of history and this runs as soon as 32 KiB of output
      // follow the checkpoint. Any of those 32 KiB may copy from the window
      // (byte -k is in reach up to output 32768 - k), however short it is.
      const uint64_t behind = out_pos_ - front.uncompressed_offset;
      analysis.analyzable = ready && front.analyzable && behind <= write_;
      if (analysis.analyzable) {
        const uint8_t* real = buffer_.data() + write_ - behind;
        analysis.following.assign(real, real + std::min<uint64_t>(kHistory, behind));
        analysis.input.assign(capture_.begin() + static_cast<ptrdiff_t>(front.compressed_offset - capture_base_),
                              capture_.end());
      }
      if (deferred_) {
        deferred_(front.uncompressed_offset, front.compressed_offset, front.bits, CheckpointKind::kBlock,
                  std::move(analysis));
      } else {
        sparsifier_.Sparsify(analysis);
        checkpoint_(front.uncompressed_offset, front.compressed_offset, front.bits, CheckpointKind::kBlock,
                    analysis.window);
      }
      pending_.pop_front();
      if (pending_.empty()) {
        capture_.clear();
      } else {
        size_t drop = static_cast<size_t>(pending_.front().compressed_offset - capture_base_);
        capture_.erase(capture_.begin(), capture_.begin() + static_cast<ptrdiff_t>(drop));
        capture_base_ = pending_.front().compressed_offset;
      }
    }
  }

  // Emits a checkpoint whose window stays whole (no analysis).
  void EmitWhole(uint64_t uncompressed_offset, uint64_t compressed_offset, uint8_t bits, CheckpointKind kind,
                 std::vector<uint8_t>&& window) {
    if (deferred_) {
      WindowAnalysis analysis;
      analysis.window = std::move(window);
      deferred_(uncompressed_offset, compressed_offset, bits, kind, std::move(analysis));
    } else {
      checkpoint_(uncompressed_offset, compressed_offset, bits, kind, window);
    }
  }

  // Scheduling bookkeeping for a checkpoint at uncompressed `out`.
  void NoteCheckpoint(uint64_t out) {
    have_checkpoint_ = true;
    last_checkpoint_out_ = out;
    next_due_out_ = out + spacing_;
    requested_ = false;
    seeking_ = false;
  }

  void GiveUpSeeking() {
    requested_ = false;
    seeking_ = false;
    next_due_out_ = out_pos_ + std::max<uint64_t>(spacing_ / 2, 1);
  }

  void EndMember() {
    FinishReadyCheckpoints(true);
    // The trailer starts right after the stream's last bit. ISA-L may have
    // read a few of its bytes already: put them through the trailer parser
    // as if they had just arrived.
    uint8_t overread[8];
    size_t n = deflate_->TakeOverreadBytes(overread);
    in_pos_ -= n;
    phase_ = Phase::kTrailer;
    trailer_have_ = 0;
    ++members_;
    if (n > 0) Process(overread, n);
  }

  void CheckTrailer() {
    uint64_t at = in_pos_ - sizeof(trailer_);
    uint32_t crc = static_cast<uint32_t>(trailer_[0] | (trailer_[1] << 8) | (trailer_[2] << 16) |
                                         (uint32_t{trailer_[3]} << 24));
    uint32_t size = static_cast<uint32_t>(trailer_[4] | (trailer_[5] << 8) | (trailer_[6] << 16) |
                                          (uint32_t{trailer_[7]} << 24));
    if (crc != member_crc_) FailAt(ErrorCode::kCorrupt, "gzip member CRC-32 mismatch", at);
    if (size != static_cast<uint32_t>(member_size_)) FailAt(ErrorCode::kCorrupt, "gzip member size mismatch", at + 4);
    phase_ = Phase::kBetweenMembers;
  }

  const InflateEngine engine_;
  const uint64_t spacing_;  // uncompressed bytes between spacing checkpoints; 0 = none
  OutputSink output_;
  CheckpointSink checkpoint_;
  DeferredCheckpointSink deferred_;  // set: checkpoints go here, their analysis not yet run
  SpanStartSink span_start_;
  uint64_t proof_size_ = 0;  // 0: proofs are not measured
  ProofSink proof_sink_;
  uint64_t next_proof_ = 0;  // blob offset of the next proof end to measure; 0 = none (no span yet)
  OutputBufferSource take_;    // set with retire_: output buffers are handed off, not reused
  RetiredOutputSink retire_;
  size_t handed_from_ = kHistory;  // buffer_[handed_from_, write_): output not yet handed off
  std::unique_ptr<DeflateStream> deflate_;
  GzipHeaderParser header_;
  Phase phase_ = Phase::kHeader;
  bool finished_ = false;  // Finish() succeeded

  uint64_t fed_ = 0;          // blob bytes pushed; in_pos_ trails it by the staged part of a segment
  std::vector<uint8_t> staged_;  // the segment fed_ is in, up to fed_ (allocated on first use)
  uint64_t in_pos_ = 0;   // blob bytes consumed
  uint64_t out_pos_ = 0;  // uncompressed bytes produced (all handed to the sink)
  uint64_t members_ = 0;  // members whose deflate data ended

  // The current member.
  uint64_t member_in_ = 0;    // blob offset of its header
  uint64_t member_out_ = 0;   // uncompressed offset of its first byte
  uint32_t member_crc_ = 0;   // CRC-32 of its output so far
  uint64_t member_size_ = 0;  // bytes of its output so far
  uint8_t trailer_[8] = {};
  size_t trailer_have_ = 0;

  // Checkpoint scheduling.
  bool have_checkpoint_ = false;
  uint64_t last_checkpoint_out_ = 0;  // uncompressed offset of the last checkpoint
  uint64_t next_due_out_ = 0;         // uncompressed offset where a spacing checkpoint is due
  bool requested_ = false;            // RequestCheckpoint() since the last checkpoint
  bool seeking_ = false;              // the deflate stream is looking for a boundary
  uint64_t seek_start_in_ = 0;        // blob offset where the current search began

  // Sparse-window analysis.
  std::deque<Pending> pending_;            // block checkpoints not yet emitted, in order
  std::vector<uint8_t> capture_;           // blob bytes from the oldest pending checkpoint on
  uint64_t capture_base_ = 0;              // blob offset of capture_[0]
  std::array<uint8_t, 2 * kRecentInput> recent_{};  // the last recent_length_ consumed bytes of this member
  size_t recent_length_ = 0;
  WindowSparsifier sparsifier_;  // runs the analysis here unless it is deferred

  // Output: buffer_[0, write_) holds the latest output, its last kHistory
  // bytes (or all of them, early on) forming the next window.
  std::vector<uint8_t> buffer_;
  size_t write_ = kHistory;
};

CheckpointingInflater::CheckpointingInflater(InflateEngine engine, uint64_t spacing, OutputSink output,
                                             CheckpointSink checkpoint)
    : impl_(std::make_unique<Impl>(engine, spacing, std::move(output), std::move(checkpoint), nullptr)) {}

CheckpointingInflater::CheckpointingInflater(InflateEngine engine, uint64_t spacing, OutputSink output,
                                             DeferredCheckpointSink checkpoint)
    : impl_(std::make_unique<Impl>(engine, spacing, std::move(output), nullptr, std::move(checkpoint))) {}

CheckpointingInflater::~CheckpointingInflater() = default;

void CheckpointingInflater::Feed(const uint8_t* data, size_t len) { impl_->Feed(data, len); }
void CheckpointingInflater::Finish() { impl_->Finish(); }
void CheckpointingInflater::RequestCheckpoint() { impl_->RequestCheckpoint(); }
void CheckpointingInflater::OnSpanStart(SpanStartSink sink) { impl_->OnSpanStart(std::move(sink)); }
void CheckpointingInflater::MeasureProofs(uint64_t proof_size, ProofSink sink) {
  impl_->MeasureProofs(proof_size, std::move(sink));
}
void CheckpointingInflater::HandOffOutputBuffers(OutputBufferSource take, RetiredOutputSink retire) {
  impl_->HandOffOutputBuffers(std::move(take), std::move(retire));
}
uint64_t CheckpointingInflater::settled_input() const { return impl_->settled_input(); }
uint64_t CheckpointingInflater::compressed_consumed() const { return impl_->compressed_consumed(); }
uint64_t CheckpointingInflater::uncompressed_produced() const { return impl_->uncompressed_produced(); }

}  // namespace clip::core
