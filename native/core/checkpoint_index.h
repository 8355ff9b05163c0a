// CheckpointIndex: the restart points of one layer blob, and their on-disk form.
//
// A checkpoint lets inflation restart in the middle of a gzip stream: it names
// a deflate block boundary by its position in the uncompressed stream and in
// the compressed blob (byte + bit), and keeps the up to 32 KiB of
// uncompressed output before it (the window back-references may reach into;
// never reaching back before the start of its gzip member). Windows are
// stored deflate-compressed; only a checkpoint being used is inflated. A
// window may be sparse: the parts no later data copies from hold filler
// bytes instead of the real ones (see CheckpointingInflater), which is
// invisible to a reader but makes the stored window much smaller.
//
// Layers that are plain tar have no checkpoints: uncompressed offset equals
// blob offset.
//
// Proofs. A range fetched from the source (an HTTP Range body, a pread on
// a blob) cannot be checked against the blob's digest, so the index carries
// digests of small pieces of it. Each checkpoint's span, the compressed
// bytes a read starting at it needs to reach the next checkpoint (from its
// first byte, the byte holding its leading bits if any, up to the next
// checkpoint's compressed_offset; the last one's: to the end of the blob),
// is cut into proofs of proof_size bytes (the last one shorter; an empty
// span has one empty proof). Each proof records the SHA-256 of its bytes
// and output_end: how far inflation restarted at the checkpoint gets with
// the span's bytes up to the proof's end (every symbol wholly inside them;
// the indexer measures it by stopping its input there). A read of
// [offset, end) therefore needs only the proofs from Find(offset)'s first
// up to the first one whose output_end reaches `end` (SpanFor), and
// RangeReader checks each of them before inflating a byte of it: a flipped
// byte anywhere in the fetched range is EDIGEST, never wrong output. An
// output_end is a promise about output, not about bytes, so a reader whose
// engine falls short of it takes the next proof (checked the same way)
// instead of failing; the last proof's output_end is the next checkpoint's
// offset. Consecutive spans share one byte when the later checkpoint has
// leading bits. The indexer computes proofs in its single pass (it sees
// every compressed byte for the blob digest anyway).
//
// Serialized form, version 3. All integers little-endian; offsets are bytes
// from the start of the serialized index:
//
//   off  size  field
//     0     8  magic "CLIPCKPT"
//     8     4  u32 version (3). A reader rejects a newer version and versions
//              1 (no digests) and 2 (one digest per span) as kUnsupported:
//              re-index the layer.
//    12     4  u32 flags (0; no flags are defined in version 3)
//    16     1  u8 format (0 = tar, 1 = gzip)
//    17     7  reserved, zero
//    24     8  u64 compressed_size     bytes of the blob
//    32     8  u64 uncompressed_size   bytes of the tar stream
//    40     8  u64 spacing             requested bytes between checkpoints
//    48     4  u32 count               checkpoints that follow
//    52     4  u32 proof_size          compressed bytes per proof (gzip:
//                                      kMinProofSize..kMaxProofSize; tar: 0)
//    56        count x checkpoint, each 32 bytes + its proofs + its window:
//                +0   8  u64 uncompressed_offset
//                +8   8  u64 compressed_offset
//               +16   1  u8 bits (0..7)
//               +17   1  u8 kind (0 = block, 1 = member start)
//               +18   2  reserved, zero
//               +20   4  u32 window_length (<= 32768; 0 for a member start)
//               +24   4  u32 stored_length (0 iff window_length is 0;
//                        <= window_length + 64)
//               +28   4  u32 proof_count (= max(1, ceil(span bytes / proof_size)))
//               +32      proof_count x 40 bytes: u64 output_end, then the
//                        SHA-256 of the proof's bytes (raw)
//                 …      stored_length bytes: the window as raw deflate
//   end-4   4  u32 CRC-32 (zlib's crc32, the gzip polynomial) of every byte
//              before it
//
// A valid index: tar layers have no checkpoints and equal sizes; gzip layers
// have at least one, the first a member start at uncompressed offset 0;
// uncompressed offsets strictly increase, compressed offsets never decrease,
// every offset lies within its stream's size, a block checkpoint's window is
// no longer than the output before it, every checkpoint has its proof_count
// proofs whose output_ends never decrease, lie between its offset and the
// next checkpoint's (the stream's end for the last) and end at the latter,
// and no bytes follow the checksum.
// Stored windows are inflated (and checked) only when used, by LoadWindow.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

namespace clip::core {

enum class LayerFormat : uint8_t { kTar = 0, kGzip = 1 };

enum class CheckpointKind : uint8_t {
  // Inside a deflate stream: restart at `bits` bits before compressed_offset
  // with the window as dictionary.
  kBlock = 0,
  // The start of a gzip member: compressed_offset is the first byte of the
  // member's gzip header; no window is needed.
  kMemberStart = 1,
};

// One proof of a checkpoint's span: blob bytes [ProofBegin(i, j), ProofEnd(i, j)).
struct Proof {
  uint64_t output_end = 0;           // uncompressed offset inflation from the checkpoint reaches with the span up to here
  std::array<uint8_t, 32> digest{};  // SHA-256 of the proof's bytes
  bool operator==(const Proof&) const = default;
};

struct Checkpoint {
  uint64_t uncompressed_offset = 0;  // bytes from the start of the uncompressed stream
  uint64_t compressed_offset = 0;    // first whole byte of the block in the blob
  uint8_t bits = 0;                  // 0..7 bits of byte compressed_offset-1 that belong to the block
  CheckpointKind kind = CheckpointKind::kBlock;
  uint32_t window_length = 0;        // bytes of uncompressed window (<= 32768)
  std::vector<uint8_t> stored_window;  // the window, raw-deflate compressed ...
  // ... or, in an index deserialized in place, where it lies in the
  // serialized bytes (which the index keeps alive: CheckpointIndex::backing)
  std::span<const uint8_t> stored_in_place;

  std::span<const uint8_t> stored() const {
    return stored_window.empty() ? stored_in_place : std::span<const uint8_t>(stored_window);
  }
  std::vector<Proof> proofs;         // the span's proofs, in order (see the file comment)
};

struct CompressedSpan {
  uint64_t begin = 0;       // first blob byte needed
  uint64_t end = 0;         // one past the last blob byte needed
  size_t checkpoint = 0;    // index of the checkpoint inflation starts from
};

class CheckpointIndex {
 public:
  static constexpr uint32_t kMaxWindow = 32768;
  // Proof sizes an index may have. Smaller proofs let a small read fetch
  // less (a read fetches from its checkpoint up to the proof that reaches
  // its end) and cost 40 bytes each in the index.
  static constexpr uint32_t kMinProofSize = 512;
  static constexpr uint32_t kMaxProofSize = 16u << 20;
  static constexpr uint32_t kDefaultProofSize = 32u << 10;

  LayerFormat format = LayerFormat::kGzip;
  uint64_t compressed_size = 0;    // bytes of the blob
  uint64_t uncompressed_size = 0;  // bytes of the tar stream
  uint64_t spacing = 0;            // requested uncompressed bytes between checkpoints
  uint32_t proof_size = kDefaultProofSize;  // compressed bytes per proof (gzip)
  std::vector<Checkpoint> checkpoints;  // sorted by uncompressed_offset, first one at 0
  std::shared_ptr<const void> backing;  // keeps in-place stored windows' bytes alive (DeserializeInPlace)

  // Appends a checkpoint, compressing `window` (window.size() <= kMaxWindow;
  // a member start needs no window and any given is ignored). Thread-
  // compatible: callers serialize Add calls. Checkpoints must be added in
  // strictly increasing uncompressed_offset order, bits <= 7, to a gzip
  // index; throws kInvalidArgument otherwise.
  void Add(uint64_t uncompressed_offset, uint64_t compressed_offset, uint8_t bits,
           CheckpointKind kind, std::span<const uint8_t> window);

  // Inflates checkpoint i's window into `out` (resized to window_length).
  // Throws kCorrupt when the stored window does not inflate to exactly
  // window_length bytes, kInvalidArgument when i is out of range. Safe to
  // call from many threads at once.
  void LoadWindow(size_t i, std::vector<uint8_t>& out) const;

  // The last checkpoint at or before uncompressed `offset`.
  // Throws kInvalidArgument when offset >= uncompressed_size (and size > 0).
  size_t Find(uint64_t offset) const;

  // Which blob bytes are needed to produce uncompressed [offset, offset+len):
  // from the checkpoint Find(offset) (including the byte holding its leading
  // bits) to the end of the first proof (of the span holding offset+len-1)
  // whose output_end reaches offset+len. Inflation from the checkpoint needs
  // nothing past it (see the file comment; RangeReader takes more proofs if
  // its engine stops short). For tar layers, exactly [offset, offset+len).
  // len == 0 gives an empty span. Throws kInvalidArgument when the range
  // passes the end.
  CompressedSpan SpanFor(uint64_t offset, uint64_t len) const;

  // Checkpoint i's span: blob bytes [SpanBegin(i), SpanEnd(i)), the bytes a
  // read starting at it needs to reach the next checkpoint (see the file
  // comment). i must be < checkpoints.size().
  uint64_t SpanBegin(size_t i) const;
  uint64_t SpanEnd(size_t i) const;
  // How many proofs span i has (at least 1), and proof j's blob bytes.
  size_t ProofCount(size_t i) const;
  uint64_t ProofBegin(size_t i, size_t j) const;
  uint64_t ProofEnd(size_t i, size_t j) const;
  // Uncompressed offset where span i's output ends (the next checkpoint's
  // offset, or the stream's end).
  uint64_t OutputEnd(size_t i) const;

  // Gives every checkpoint its ProofCount proofs (digests kept if it had
  // them) with output_ends from `measured` (a proof end's blob offset ->
  // the output it reached, CheckpointingInflater::MeasureProofs): clamped
  // to the span's output and never decreasing; a proof end not measured
  // promises no more than the one before it; the last one ends at
  // OutputEnd. Needs compressed_size and uncompressed_size set.
  void SetProofOutputs(const std::map<uint64_t, uint64_t>& measured);

  // Computes every proof's digest from the whole blob in memory (tests and
  // tools; the indexer computes them as it streams). A checkpoint without
  // its proofs gets them as SetProofOutputs({}) gives them (nothing before
  // the span's end: a read takes its whole span). Throws kInvalidArgument
  // when blob.size() != compressed_size.
  void ComputeProofs(std::span<const uint8_t> blob);

  // Throws kDigestMismatch, naming the proof's offsets, unless `digest` (32
  // bytes) is proof j of span i's recorded digest.
  void CheckProof(size_t i, size_t j, const uint8_t* digest) const;

  // Checks blob bytes [begin, begin + bytes.size()) against the proofs:
  // every proof from span `first`'s first on up to the one ending at the
  // range's end must lie inside the range (the range SpanFor returns does)
  // and match. Throws kDigestMismatch naming the proof's offsets when one
  // does not, kTruncated when the range ends inside a proof,
  // kInvalidArgument when the range does not start at span `first`.
  void VerifySpans(size_t first, uint64_t begin, std::span<const uint8_t> bytes) const;

  // Bytes the serialized index takes.
  size_t SerializedSize() const;
  std::vector<uint8_t> Serialize() const;
  // Parses and validates a serialized index: magic, version, checksum, sorted
  // and in-range offsets, window lengths <= 32 KiB. Any violation throws
  // CoreError(kCorrupt); a newer version, or version 1 or 2, throws
  // kUnsupported. Throws kInvalidArgument from Serialize when a gzip
  // index's checkpoints lack their proofs.
  static CheckpointIndex Deserialize(std::span<const uint8_t> bytes);
  // Deserialize without copying the stored windows (most of an index's
  // bytes): each checkpoint's points into `bytes`, which `keep` owns (an
  // archive's mapping) and the index holds on to. A reader of a multi-GiB
  // layer then keeps MiBs less anonymous memory; the windows' pages are the
  // archive's, read when a read starts from their checkpoint.
  static CheckpointIndex DeserializeInPlace(std::span<const uint8_t> bytes, std::shared_ptr<const void> keep);

 private:
  static CheckpointIndex Parse(std::span<const uint8_t> bytes, bool copy_windows);
};

}  // namespace clip::core
