// CheckpointingInflater: one streaming pass over a gzip blob that produces the
// uncompressed stream and the CheckpointIndex at the same time.
//
// Compressed bytes are pushed in arbitrary chunks (a file read, a network
// packet); the engine sees them re-cut into fixed 128 KiB segments of the
// blob, so the checkpoints, proofs and output calls are the same however
// the blob was chunked. Uncompressed bytes come out in order through the sink. Memory is
// bounded whatever the stream size: a ~1 MiB output buffer, the engine
// state, and for checkpoints still being finished their 32 KiB windows and
// the compressed bytes after them (a few MiB at most). Pushed chunks are
// only borrowed for the call.
//
// Checkpoints are taken at deflate block boundaries: the first boundary after
// every `spacing` uncompressed bytes since the last one (spacing 0: none),
// the start of every gzip member, and the first boundary after a
// RequestCheckpoint() call (the tar indexer asks for one when it meets a
// file larger than 512 KiB). With ISA-L the boundary is found by feeding
// small input slices once a checkpoint is due: when isal_inflate stops
// inside a block header, the header's bit position is exact (see
// inflate_engine.cc and docs/architecture.md). ISA-L cannot stop inside the
// 3-bit header of a fixed-Huffman block, so with ISA-L such boundaries are
// skipped and the checkpoint lands at the next block it can stop in; if it
// finds none within 128 KiB of input it tries again half a spacing later.
//
// Multi-member gzip (concatenated members) is one stream. Trailing zero bytes
// after the last member are ignored, as gzip does; any other trailing data,
// a bad header, bad deflate data, a bad CRC32 or ISIZE is kCorrupt naming the
// compressed offset; a stream that ends early is kTruncated at Finish().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "checkpoint_index.h"
#include "inflate_engine.h"

namespace clip::core {

// What the sparse-window analysis of one block checkpoint needs, packaged
// so that it can run later and on another thread (LayerIndexer runs it on
// its hashing thread, off the inflation path).
struct WindowAnalysis {
  std::vector<uint8_t> window;     // the window; Sparsify rewrites it in place
  std::vector<uint8_t> following;  // the real output after the checkpoint, up to 32 KiB
  std::vector<uint8_t> input;      // blob bytes from the checkpoint's compressed_offset on
  uint64_t compressed_offset = 0;  // blob offset of input[0]
  uint8_t bits = 0;                // the checkpoint's leading bits ...
  uint8_t prime = 0;               // ... and their value
  bool stream_ended = false;       // the member ended within `following`
  bool analyzable = false;         // false: keep the window whole

  size_t bytes() const { return window.size() + following.size() + input.size(); }
};

// Runs sparse-window analyses (see checkpointing_inflater.cc). Holds an
// inflate engine and scratch buffers; one per thread.
class WindowSparsifier {
 public:
  explicit WindowSparsifier(InflateEngine engine);
  // Replaces the bytes of analysis.window that the output after the
  // checkpoint never copies from with zeros; leaves the window whole when
  // the analysis cannot complete. Never throws for bad data.
  void Sparsify(WindowAnalysis& analysis);

 private:
  bool RunProbe(const WindowAnalysis& analysis, const std::vector<uint8_t>& probe, std::vector<uint8_t>& out);

  InflateEngine engine_;
  std::unique_ptr<DeflateStream> analysis_;  // re-inflates captures with a probe window
  std::vector<uint8_t> probe_output_;        // probe A's output
  std::vector<uint8_t> probe_output_b_;      // probe B's output
  std::vector<uint8_t> pattern_a_;           // synthetic window A: byte i = i / group
  std::vector<uint8_t> pattern_b_;           // synthetic window B: byte i = i % group
  std::vector<uint8_t> groups_used_;         // per window byte: must keep its real value?
};

class CheckpointingInflater {
 public:
  // Uncompressed output, in order. `offset` is the uncompressed offset of data[0].
  using OutputSink = std::function<void(const uint8_t* data, size_t len, uint64_t offset)>;
  // A checkpoint was taken. `window` holds the uncompressed bytes before it
  // (up to 32 KiB, never reaching back before the start of its gzip member)
  // and is valid only during the call. Parts of the window that the data
  // after the checkpoint never copies from are replaced by a synthetic
  // filler ("sparse window"): restarting with it gives the same output, and
  // the filler compresses to almost nothing.
  // Checkpoints arrive in order but a block checkpoint may arrive after up
  // to ~300 KiB more output (its window is analysed against the data that
  // follows); all of them have arrived when Finish() returns.
  using CheckpointSink = std::function<void(uint64_t uncompressed_offset, uint64_t compressed_offset,
                                            uint8_t bits, CheckpointKind kind,
                                            std::span<const uint8_t> window)>;

  // Like CheckpointSink, but a block checkpoint's window arrives whole,
  // with what its analysis needs: the receiver runs
  // WindowSparsifier::Sparsify on it (on any thread) before storing it.
  using DeferredCheckpointSink = std::function<void(uint64_t uncompressed_offset, uint64_t compressed_offset,
                                                    uint8_t bits, CheckpointKind kind, WindowAnalysis&& analysis)>;

  CheckpointingInflater(InflateEngine engine, uint64_t spacing, OutputSink output,
                        CheckpointSink checkpoint);
  CheckpointingInflater(InflateEngine engine, uint64_t spacing, OutputSink output,
                        DeferredCheckpointSink checkpoint);
  ~CheckpointingInflater();
  CheckpointingInflater(const CheckpointingInflater&) = delete;
  CheckpointingInflater& operator=(const CheckpointingInflater&) = delete;

  // Called the moment a checkpoint's position is fixed (before its window
  // is analysed and the checkpoint sink sees it), in checkpoint order, with
  // the blob offset and leading bits of the checkpoint: where its span
  // begins and the previous one ends (see CheckpointIndex's span digests).
  using SpanStartSink = std::function<void(uint64_t compressed_offset, uint8_t bits)>;
  void OnSpanStart(SpanStartSink sink);
  // Measures proofs (see CheckpointIndex): for each blob offset
  // `span begin + k * proof_size` inside a span, the input is stopped there
  // and the output drained, and `sink(offset, output)` hears how much output
  // those bytes give: the proof's output_end. In offset order; offsets
  // inside gzip headers or trailers, or passed before a span was known, are
  // skipped. Call before the first Feed.
  using ProofSink = std::function<void(uint64_t compressed_offset, uint64_t output_end)>;
  void MeasureProofs(uint64_t proof_size, ProofSink sink);
  // A blob offset no later span starts before: every checkpoint whose span
  // begins earlier has been reported to OnSpanStart's sink. Grows as input
  // is fed; a caller hashing spans may hash blob bytes below it.
  uint64_t settled_input() const;

  // Zero-copy output (LayerIndexer hashes the output on another thread):
  // the output buffer is never reused in place. When it is full, `retire`
  // receives it with the range [begin, end) of it that was output since the
  // previous hand-off, and `take(size)` supplies the next buffer (size
  // bytes, any contents). Finish() hands off the last one. Output still
  // reaches the output sink first, as always. Call before the first Feed.
  using OutputBufferSource = std::function<std::vector<uint8_t>(size_t size)>;
  using RetiredOutputSink = std::function<void(std::vector<uint8_t>&& buffer, size_t begin, size_t end)>;
  void HandOffOutputBuffers(OutputBufferSource take, RetiredOutputSink retire);

  // Inflates `len` more compressed bytes. Calls the sinks zero or more times.
  // Throws CoreError (kCorrupt) on bad data, from the call that completes
  // the bad bytes' segment (Finish for the last one); after a throw the
  // inflater is dead.
  void Feed(const uint8_t* data, size_t len);
  // Declares the end of input: inflates the last, partial segment (and may
  // throw kCorrupt for it, like Feed). Throws kTruncated if the last member is
  // incomplete (or no member at all was seen). Feed after Finish throws
  // kInvalidArgument.
  void Finish();
  // Asks for a checkpoint at the next block boundary. May be called from
  // inside the output sink.
  void RequestCheckpoint();

  uint64_t compressed_consumed() const;
  uint64_t uncompressed_produced() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace clip::core
