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
// Span digests. Each checkpoint carries the SHA-256 of the compressed bytes
// a read starting at it needs: its span, from its first byte (the byte
// holding its leading bits, if any) up to the next checkpoint's
// compressed_offset (the last one's: to the end of the blob), exactly what
// SpanFor asks for. A range fetched from the source (an HTTP Range body, a
// pread on a blob) cannot be checked against the blob's digest, but each
// span in it can be checked against its own, and RangeReader does so before
// inflating a byte: a flipped byte anywhere in the fetched range is EDIGEST,
// never wrong output. Consecutive spans share one byte when the later
// checkpoint has leading bits. The indexer computes them in its single pass
// (it sees every compressed byte for the blob digest anyway).
//
// Serialized form, version 2. All integers little-endian; offsets are bytes
// from the start of the serialized index:
//
//   off  size  field
//     0     8  magic "CLIPCKPT"
//     8     4  u32 version (2). A reader rejects a newer version and version 1
//              (which has no span digests, so its reads could not be proven)
//              as kUnsupported: re-index the layer.
//    12     4  u32 flags (0; no flags are defined in version 2)
//    16     1  u8 format (0 = tar, 1 = gzip)
//    17     7  reserved, zero
//    24     8  u64 compressed_size     bytes of the blob
//    32     8  u64 uncompressed_size   bytes of the tar stream
//    40     8  u64 spacing             requested bytes between checkpoints
//    48     4  u32 count               checkpoints that follow
//    52        count x checkpoint, each 60 bytes + its stored window:
//                +0   8  u64 uncompressed_offset
//                +8   8  u64 compressed_offset
//               +16   1  u8 bits (0..7)
//               +17   1  u8 kind (0 = block, 1 = member start)
//               +18   2  reserved, zero
//               +20   4  u32 window_length (<= 32768; 0 for a member start)
//               +24   4  u32 stored_length (0 iff window_length is 0;
//                        <= window_length + 64)
//               +28  32  SHA-256 of the checkpoint's span (raw bytes)
//               +60      stored_length bytes: the window as raw deflate
//   end-4   4  u32 CRC-32 (zlib's crc32, the gzip polynomial) of every byte
//              before it
//
// A valid index: tar layers have no checkpoints and equal sizes; gzip layers
// have at least one, the first a member start at uncompressed offset 0;
// uncompressed offsets strictly increase, compressed offsets never decrease,
// every offset lies within its stream's size, a block checkpoint's window is
// no longer than the output before it, and no bytes follow the checksum.
// Stored windows are inflated (and checked) only when used, by LoadWindow.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
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

struct Checkpoint {
  uint64_t uncompressed_offset = 0;  // bytes from the start of the uncompressed stream
  uint64_t compressed_offset = 0;    // first whole byte of the block in the blob
  uint8_t bits = 0;                  // 0..7 bits of byte compressed_offset-1 that belong to the block
  CheckpointKind kind = CheckpointKind::kBlock;
  uint32_t window_length = 0;        // bytes of uncompressed window (<= 32768)
  std::vector<uint8_t> stored_window;  // the window, raw-deflate compressed
  std::array<uint8_t, 32> span_digest{};  // SHA-256 of SpanBegin(i)..SpanEnd(i) of the blob
};

struct CompressedSpan {
  uint64_t begin = 0;       // first blob byte needed
  uint64_t end = 0;         // one past the last blob byte needed
  size_t checkpoint = 0;    // index of the checkpoint inflation starts from
};

class CheckpointIndex {
 public:
  static constexpr uint32_t kMaxWindow = 32768;

  LayerFormat format = LayerFormat::kGzip;
  uint64_t compressed_size = 0;    // bytes of the blob
  uint64_t uncompressed_size = 0;  // bytes of the tar stream
  uint64_t spacing = 0;            // requested uncompressed bytes between checkpoints
  std::vector<Checkpoint> checkpoints;  // sorted by uncompressed_offset, first one at 0

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
  // bits) to the compressed_offset of the first checkpoint at or past
  // offset+len, or the end of the blob. That is enough for RangeReader with
  // either engine: the symbols of [offset, offset+len) all end before that
  // boundary and neither engine needs lookahead past the input it is given.
  // For tar layers, exactly [offset, offset+len). len == 0 gives an empty
  // span. Throws kInvalidArgument when the range passes the end.
  CompressedSpan SpanFor(uint64_t offset, uint64_t len) const;

  // Checkpoint i's span: blob bytes [SpanBegin(i), SpanEnd(i)), the bytes a
  // read starting at it needs to reach the next checkpoint (see the file
  // comment). i must be < checkpoints.size().
  uint64_t SpanBegin(size_t i) const;
  uint64_t SpanEnd(size_t i) const;

  // Computes every span digest from the whole blob in memory (tests and
  // tools; the indexer computes them as it streams). Throws
  // kInvalidArgument when blob.size() != compressed_size.
  void ComputeSpanDigests(std::span<const uint8_t> blob);

  // Throws kDigestMismatch, naming span i's offsets, unless `digest` (32
  // bytes) is span i's recorded digest.
  void CheckSpanDigest(size_t i, const uint8_t* digest) const;

  // Checks blob bytes [begin, begin + bytes.size()) against the span
  // digests: every span from checkpoint `first` on up to the one ending at
  // the range's end must lie inside the range (the range SpanFor returns
  // does) and match. Throws kDigestMismatch naming the span's offsets when
  // one does not, kTruncated when the range ends inside a span,
  // kInvalidArgument when the range does not start at span `first`.
  void VerifySpans(size_t first, uint64_t begin, std::span<const uint8_t> bytes) const;

  // Bytes the serialized index takes.
  size_t SerializedSize() const;
  std::vector<uint8_t> Serialize() const;
  // Parses and validates a serialized index: magic, version, checksum, sorted
  // and in-range offsets, window lengths <= 32 KiB. Any violation throws
  // CoreError(kCorrupt); a newer version, or version 1, throws kUnsupported.
  static CheckpointIndex Deserialize(std::span<const uint8_t> bytes);
};

}  // namespace clip::core
