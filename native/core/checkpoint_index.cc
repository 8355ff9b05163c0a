// CheckpointIndex: adding checkpoints (window compression), finding them,
// mapping uncompressed ranges to compressed spans, and the versioned,
// checksummed on-disk form documented in checkpoint_index.h.
//
// Windows are compressed with ISA-L's level-1 deflate: adding a checkpoint
// sits on the indexing hot path, and the windows are what the index is made
// of, so the codec must be fast and still shrink tar data well. Measured on
// the full windows of a Debian layer: ISA-L level 1 takes ~0.1 ms per
// 32 KiB window and ends up 5% larger than zlib level 6, which takes ~1 ms
// (level 9: 3 ms, 0.2% smaller still). With sparse windows (see
// CheckpointingInflater) most of each window is filler and both shrink
// further. Windows are inflated with ISA-L as well (any raw deflate works).
#include "checkpoint_index.h"

#include <isa-l/igzip_lib.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "error.h"
#include "sha256.h"

namespace clip::core {

namespace {

constexpr char kMagic[8] = {'C', 'L', 'I', 'P', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 3;
constexpr size_t kHeaderSize = 56;      // bytes before the first checkpoint
constexpr size_t kCheckpointSize = 32;  // fixed bytes of one checkpoint
constexpr size_t kDigestSize = 32;
constexpr size_t kProofSize = 8 + kDigestSize;  // serialized bytes of one proof
constexpr size_t kTrailerSize = 4;      // the CRC-32
// A stored window never needs more than its length plus deflate's block
// overhead (Add falls back to stored blocks if compression would expand it).
constexpr uint32_t kMaxStoredOverhead = 64;

// ---- window codec ---------------------------------------------------------

// Raw deflate with zlib at `level` (0 = stored blocks); empty on failure.
std::vector<uint8_t> ZlibDeflate(std::span<const uint8_t> window, int level) {
  std::vector<uint8_t> out(deflateBound(nullptr, static_cast<uLong>(window.size())) + 64);
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  z.next_in = const_cast<Bytef*>(window.data());
  z.avail_in = static_cast<uInt>(window.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  int ret = deflate(&z, Z_FINISH);
  size_t n = z.total_out;
  deflateEnd(&z);
  if (ret != Z_STREAM_END) return {};
  out.resize(n);
  return out;
}

// Windows are compressed with zlib, whose output is a function of its input
// and level alone: archives must be byte-identical for the same image and
// settings. (ISA-L's level-1 stateless compressor was faster but gave the
// same window different, equally valid bytes from run to run.) Sparse
// windows are mostly zeros, so level 1 is quick and small.
std::vector<uint8_t> CompressWindow(std::span<const uint8_t> window) {
  if (window.empty()) return {};
  std::vector<uint8_t> out = ZlibDeflate(window, 1);
  // Incompressible: stored blocks always fit the bound Deserialize checks.
  if (out.empty() || out.size() > window.size() + kMaxStoredOverhead) out = ZlibDeflate(window, 0);
  if (out.empty() || out.size() > window.size() + kMaxStoredOverhead) {
    Fail(ErrorCode::kNoMemory, "cannot compress a checkpoint window");
  }
  return out;
}

// ---- little-endian helpers ------------------------------------------------

// Writes `bytes` low bytes of `value` at `at`, advancing it.
void Put(uint8_t*& at, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) *at++ = static_cast<uint8_t>(value >> (8 * i));
}

uint64_t Get(const uint8_t* p, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) value |= uint64_t{p[i]} << (8 * i);
  return value;
}

// zlib's crc32 of data[0, len); zlib takes a uInt length, so huge inputs go in pieces.
uint32_t Crc32(const uint8_t* data, size_t len) {
  uLong crc = crc32(0L, nullptr, 0);
  for (size_t done = 0; done < len;) {
    size_t n = std::min<size_t>(len - done, size_t{1} << 30);
    crc = crc32(crc, data + done, static_cast<uInt>(n));
    done += n;
  }
  return static_cast<uint32_t>(crc);
}

[[noreturn]] void Corrupt(const std::string& what) { Fail(ErrorCode::kCorrupt, "corrupt checkpoint index: " + what); }

}  // namespace

void CheckpointIndex::Add(uint64_t uncompressed_offset, uint64_t compressed_offset, uint8_t bits,
                          CheckpointKind kind, std::span<const uint8_t> window) {
  if (format != LayerFormat::kGzip) Fail(ErrorCode::kInvalidArgument, "a tar layer has no checkpoints");
  if (bits > 7) Fail(ErrorCode::kInvalidArgument, "checkpoint bits must be 0..7");
  if (kind != CheckpointKind::kBlock && kind != CheckpointKind::kMemberStart) {
    Fail(ErrorCode::kInvalidArgument, "unknown checkpoint kind");
  }
  if (!checkpoints.empty() && uncompressed_offset <= checkpoints.back().uncompressed_offset) {
    Fail(ErrorCode::kInvalidArgument, "checkpoints must be added in increasing uncompressed order");
  }
  if (window.size() > kMaxWindow) Fail(ErrorCode::kInvalidArgument, "checkpoint window larger than 32 KiB");
  if (kind == CheckpointKind::kBlock && window.size() > uncompressed_offset) {
    Fail(ErrorCode::kInvalidArgument, "checkpoint window longer than the output before it");
  }
  Checkpoint checkpoint;
  checkpoint.uncompressed_offset = uncompressed_offset;
  checkpoint.compressed_offset = compressed_offset;
  checkpoint.kind = kind;
  if (kind == CheckpointKind::kBlock) {
    checkpoint.bits = bits;
    checkpoint.window_length = static_cast<uint32_t>(window.size());
    checkpoint.stored_window = CompressWindow(window);
  }
  checkpoints.push_back(std::move(checkpoint));
}

void CheckpointIndex::LoadWindow(size_t i, std::vector<uint8_t>& out) const {
  if (i >= checkpoints.size()) Fail(ErrorCode::kInvalidArgument, "no such checkpoint");
  const Checkpoint& checkpoint = checkpoints[i];
  out.resize(checkpoint.window_length);
  if (checkpoint.window_length == 0) {
    if (!checkpoint.stored().empty()) Corrupt("window stored for an empty window");
    return;
  }
  // Per-thread: inflate_state is ~87 KiB, and this runs on every range read.
  thread_local std::unique_ptr<inflate_state> state;
  if (!state) state = std::make_unique<inflate_state>();
  isal_inflate_init(state.get());
  state->crc_flag = ISAL_DEFLATE;
  const std::span<const uint8_t> stored = checkpoint.stored();
  state->next_in = const_cast<uint8_t*>(stored.data());
  state->avail_in = static_cast<uint32_t>(stored.size());
  state->next_out = out.data();
  state->avail_out = checkpoint.window_length;
  int ret = isal_inflate_stateless(state.get());
  if (ret != ISAL_DECOMP_OK || state->total_out != checkpoint.window_length || state->avail_in != 0) {
    Corrupt("window of checkpoint " + std::to_string(i) + " does not inflate to " +
            std::to_string(checkpoint.window_length) + " bytes");
  }
}

size_t CheckpointIndex::Find(uint64_t offset) const {
  if (uncompressed_size > 0 && offset >= uncompressed_size) {
    Fail(ErrorCode::kInvalidArgument, "offset " + std::to_string(offset) + " is past the end of the stream (" +
                                          std::to_string(uncompressed_size) + " bytes)");
  }
  if (format == LayerFormat::kTar || checkpoints.empty()) return 0;
  auto after = std::upper_bound(checkpoints.begin(), checkpoints.end(), offset,
                                [](uint64_t value, const Checkpoint& c) { return value < c.uncompressed_offset; });
  // checkpoints[0] is at 0 in any valid index, so `after` is past the first.
  if (after == checkpoints.begin()) return 0;
  return static_cast<size_t>(after - checkpoints.begin()) - 1;
}

CompressedSpan CheckpointIndex::SpanFor(uint64_t offset, uint64_t len) const {
  if (offset > uncompressed_size || len > uncompressed_size - offset) {
    Fail(ErrorCode::kInvalidArgument, "range [" + std::to_string(offset) + ", +" + std::to_string(len) +
                                          ") passes the end of the stream (" + std::to_string(uncompressed_size) +
                                          " bytes)");
  }
  if (format == LayerFormat::kTar) return {offset, offset + len, 0};
  if (len == 0 || checkpoints.empty()) return {0, len == 0 ? 0 : compressed_size, 0};
  CompressedSpan span;
  span.checkpoint = Find(offset);
  span.begin = SpanBegin(span.checkpoint);
  const uint64_t end = offset + len;
  const size_t last = Find(end - 1);
  // The first proof of the last span whose output reaches `end`; a span
  // without its proofs (an index being built) is needed whole.
  const std::vector<Proof>& proofs = checkpoints[last].proofs;
  auto reach = std::lower_bound(proofs.begin(), proofs.end(), end,
                                [](const Proof& p, uint64_t value) { return p.output_end < value; });
  span.end = reach == proofs.end() ? SpanEnd(last) : ProofEnd(last, static_cast<size_t>(reach - proofs.begin()));
  span.end = std::max(span.end, span.begin);
  return span;
}

uint64_t CheckpointIndex::SpanBegin(size_t i) const {
  const Checkpoint& c = checkpoints.at(i);
  return c.compressed_offset - (c.bits > 0 ? 1 : 0);
}

uint64_t CheckpointIndex::SpanEnd(size_t i) const {
  const uint64_t end = i + 1 >= checkpoints.size() ? compressed_size : std::min(checkpoints[i + 1].compressed_offset, compressed_size);
  return std::max(end, SpanBegin(i));
}

size_t CheckpointIndex::ProofCount(size_t i) const {
  const uint64_t length = SpanEnd(i) - SpanBegin(i);
  return std::max<uint64_t>(1, (length + proof_size - 1) / proof_size);
}

uint64_t CheckpointIndex::ProofBegin(size_t i, size_t j) const { return SpanBegin(i) + uint64_t{proof_size} * j; }

uint64_t CheckpointIndex::ProofEnd(size_t i, size_t j) const {
  return std::min(SpanBegin(i) + uint64_t{proof_size} * (j + 1), SpanEnd(i));
}

uint64_t CheckpointIndex::OutputEnd(size_t i) const {
  return i + 1 < checkpoints.size() ? checkpoints[i + 1].uncompressed_offset : uncompressed_size;
}

void CheckpointIndex::SetProofOutputs(const std::map<uint64_t, uint64_t>& measured) {
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    std::vector<Proof>& proofs = checkpoints[i].proofs;
    proofs.resize(ProofCount(i));
    uint64_t reached = checkpoints[i].uncompressed_offset;
    const uint64_t output_end = OutputEnd(i);
    for (size_t j = 0; j < proofs.size(); ++j) {
      auto at = measured.find(ProofEnd(i, j));
      if (at != measured.end()) reached = std::clamp(at->second, reached, output_end);
      proofs[j].output_end = j + 1 == proofs.size() ? output_end : reached;
    }
  }
}

void CheckpointIndex::ComputeProofs(std::span<const uint8_t> blob) {
  if (blob.size() != compressed_size) Fail(ErrorCode::kInvalidArgument, "blob size differs from the index's");
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    if (checkpoints[i].proofs.size() != ProofCount(i)) SetProofOutputs({});
  }
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    std::vector<Proof>& proofs = checkpoints[i].proofs;
    const size_t count = proofs.size();
    for (size_t j = 0; j < count; ++j) {
      const uint64_t begin = ProofBegin(i, j);
      Sha256::Digest(blob.data() + begin, static_cast<size_t>(ProofEnd(i, j) - begin), proofs[j].digest.data());
    }
  }
}

void CheckpointIndex::CheckProof(size_t i, size_t j, const uint8_t* digest) const {
  if (std::memcmp(digest, checkpoints.at(i).proofs.at(j).digest.data(), kDigestSize) == 0) return;
  Fail(ErrorCode::kDigestMismatch, "compressed bytes " + std::to_string(ProofBegin(i, j)) + "-" +
                                       std::to_string(ProofEnd(i, j)) + " (proof " + std::to_string(j) +
                                       " of the span of checkpoint " + std::to_string(i) + " at compressed offset " +
                                       std::to_string(checkpoints[i].compressed_offset) +
                                       ") do not match the index's SHA-256: the source sent wrong bytes");
}

void CheckpointIndex::VerifySpans(size_t first, uint64_t begin, std::span<const uint8_t> bytes) const {
  if (first >= checkpoints.size() || SpanBegin(first) != begin) {
    Fail(ErrorCode::kInvalidArgument, "range to verify does not start at a checkpoint's span");
  }
  const uint64_t end = begin + bytes.size();
  uint8_t digest[kDigestSize];
  // Proofs tile their span and spans are contiguous (each starts at or one
  // byte before the previous one's end), so checking them up to the one
  // that ends at `end` proves every byte of the range.
  for (size_t i = first; i < checkpoints.size(); ++i) {
    if (checkpoints[i].proofs.size() != ProofCount(i)) {
      Fail(ErrorCode::kInvalidArgument, "checkpoint " + std::to_string(i) + " has no proofs");
    }
    for (size_t j = 0; j < checkpoints[i].proofs.size(); ++j) {
      const uint64_t proof_begin = ProofBegin(i, j), proof_end = ProofEnd(i, j);
      if (proof_end > end) {
        FailAt(ErrorCode::kTruncated, "compressed range ends inside proof " + std::to_string(j) +
                                          " of the span of checkpoint " + std::to_string(i), end);
      }
      Sha256::Digest(bytes.data() + (proof_begin - begin), static_cast<size_t>(proof_end - proof_begin), digest);
      CheckProof(i, j, digest);
      if (proof_end == end) return;
    }
  }
  FailAt(ErrorCode::kInvalidArgument, "compressed range passes the end of the blob", end);
}

size_t CheckpointIndex::SerializedSize() const {
  size_t size = kHeaderSize + kTrailerSize;
  for (const Checkpoint& c : checkpoints) size += kCheckpointSize + c.proofs.size() * kProofSize + c.stored().size();
  return size;
}

std::vector<uint8_t> CheckpointIndex::Serialize() const {
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    if (checkpoints[i].proofs.size() != ProofCount(i)) {
      Fail(ErrorCode::kInvalidArgument, "checkpoint " + std::to_string(i) + " has " +
                                            std::to_string(checkpoints[i].proofs.size()) + " proofs, not " +
                                            std::to_string(ProofCount(i)));
    }
  }
  std::vector<uint8_t> out(SerializedSize());
  uint8_t* at = out.data();
  std::memcpy(at, kMagic, sizeof(kMagic));
  at += sizeof(kMagic);
  Put(at, kVersion, 4);
  Put(at, 0, 4);  // flags
  Put(at, static_cast<uint8_t>(format), 1);
  Put(at, 0, 7);  // reserved
  Put(at, compressed_size, 8);
  Put(at, uncompressed_size, 8);
  Put(at, spacing, 8);
  Put(at, checkpoints.size(), 4);
  Put(at, format == LayerFormat::kTar ? 0 : proof_size, 4);
  for (const Checkpoint& c : checkpoints) {
    Put(at, c.uncompressed_offset, 8);
    Put(at, c.compressed_offset, 8);
    Put(at, c.bits, 1);
    Put(at, static_cast<uint8_t>(c.kind), 1);
    Put(at, 0, 2);  // reserved
    Put(at, c.window_length, 4);
    Put(at, c.stored().size(), 4);
    Put(at, c.proofs.size(), 4);
    for (const Proof& proof : c.proofs) {
      Put(at, proof.output_end, 8);
      std::memcpy(at, proof.digest.data(), kDigestSize);
      at += kDigestSize;
    }
    if (!c.stored().empty()) std::memcpy(at, c.stored().data(), c.stored().size());
    at += c.stored().size();
  }
  const size_t body = out.size() - kTrailerSize;
  Put(at, Crc32(out.data(), body), 4);
  return out;
}

CheckpointIndex CheckpointIndex::Deserialize(std::span<const uint8_t> bytes) { return Parse(bytes, true); }

CheckpointIndex CheckpointIndex::DeserializeInPlace(std::span<const uint8_t> bytes, std::shared_ptr<const void> keep) {
  CheckpointIndex index = Parse(bytes, false);
  index.backing = std::move(keep);
  return index;
}

CheckpointIndex CheckpointIndex::Parse(std::span<const uint8_t> bytes, bool copy_windows) {
  if (bytes.size() < kHeaderSize + kTrailerSize) Corrupt("too short (" + std::to_string(bytes.size()) + " bytes)");
  const uint8_t* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) Corrupt("bad magic");
  uint32_t version = static_cast<uint32_t>(Get(p + 8, 4));
  if (version == 0) Corrupt("version 0");
  if (version > kVersion) {
    Fail(ErrorCode::kUnsupported, "checkpoint index version " + std::to_string(version) +
                                      " is newer than this build reads (" + std::to_string(kVersion) + ")");
  }
  if (version < kVersion) {
    Fail(ErrorCode::kUnsupported, "checkpoint index version " + std::to_string(version) +
                                      (version == 1 ? " has no digests" : " has one digest per span (too coarse)") +
                                      ", so reads from the source could not be proven piece by piece: "
                                      "re-index the image with this build");
  }
  const size_t body = bytes.size() - kTrailerSize;
  if (Crc32(p, body) != static_cast<uint32_t>(Get(p + body, 4))) Corrupt("checksum mismatch");
  if (Get(p + 12, 4) != 0) Corrupt("unknown flags");
  for (size_t i = 17; i < 24; ++i) {
    if (p[i] != 0) Corrupt("reserved header bytes set");
  }

  CheckpointIndex index;
  uint8_t format = p[16];
  if (format > static_cast<uint8_t>(LayerFormat::kGzip)) Corrupt("unknown layer format " + std::to_string(format));
  index.format = static_cast<LayerFormat>(format);
  index.compressed_size = Get(p + 24, 8);
  index.uncompressed_size = Get(p + 32, 8);
  index.spacing = Get(p + 40, 8);
  uint64_t count = Get(p + 48, 4);
  index.proof_size = static_cast<uint32_t>(Get(p + 52, 4));
  size_t pos = kHeaderSize;
  // A lying count must not drive a huge allocation: each checkpoint takes at
  // least kCheckpointSize bytes of what is left.
  if (count > (body - pos) / kCheckpointSize) Corrupt("checkpoint count exceeds the data");
  if (index.format == LayerFormat::kTar) {
    if (count != 0) Corrupt("tar layer with checkpoints");
    if (index.compressed_size != index.uncompressed_size) Corrupt("tar layer sizes differ");
    if (index.proof_size != 0) Corrupt("tar layer with a proof size");
  } else if (count == 0) {
    Corrupt("gzip layer without checkpoints");
  } else if (index.proof_size < kMinProofSize || index.proof_size > kMaxProofSize) {
    Corrupt("proof size " + std::to_string(index.proof_size) + " out of range");
  }
  index.checkpoints.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (body - pos < kCheckpointSize) Corrupt("truncated checkpoint " + std::to_string(i));
    const uint8_t* c = p + pos;
    Checkpoint checkpoint;
    checkpoint.uncompressed_offset = Get(c, 8);
    checkpoint.compressed_offset = Get(c + 8, 8);
    checkpoint.bits = c[16];
    uint8_t kind = c[17];
    uint16_t reserved = static_cast<uint16_t>(Get(c + 18, 2));
    checkpoint.window_length = static_cast<uint32_t>(Get(c + 20, 4));
    uint32_t stored_length = static_cast<uint32_t>(Get(c + 24, 4));
    uint64_t proof_count = Get(c + 28, 4);
    pos += kCheckpointSize;
    const std::string which = "checkpoint " + std::to_string(i) + ": ";
    if (proof_count > (body - pos) / kProofSize) Corrupt(which + "proofs pass the end");
    checkpoint.proofs.resize(proof_count);
    for (Proof& proof : checkpoint.proofs) {
      proof.output_end = Get(p + pos, 8);
      std::memcpy(proof.digest.data(), p + pos + 8, kDigestSize);
      pos += kProofSize;
    }
    if (kind > static_cast<uint8_t>(CheckpointKind::kMemberStart)) Corrupt(which + "unknown kind");
    checkpoint.kind = static_cast<CheckpointKind>(kind);
    if (reserved != 0) Corrupt(which + "reserved bytes set");
    if (checkpoint.bits > 7) Corrupt(which + "bits > 7");
    if (checkpoint.window_length > kMaxWindow) Corrupt(which + "window larger than 32 KiB");
    if ((checkpoint.window_length == 0) != (stored_length == 0)) Corrupt(which + "window and stored lengths disagree");
    if (stored_length > checkpoint.window_length + kMaxStoredOverhead) Corrupt(which + "stored window too long");
    if (stored_length > body - pos) Corrupt(which + "stored window passes the end");
    if (checkpoint.uncompressed_offset > index.uncompressed_size) Corrupt(which + "offset past the stream's end");
    if (checkpoint.compressed_offset > index.compressed_size) Corrupt(which + "offset past the blob's end");
    if (checkpoint.kind == CheckpointKind::kMemberStart) {
      if (checkpoint.bits != 0 || checkpoint.window_length != 0) Corrupt(which + "member start with bits or window");
      if (checkpoint.compressed_offset >= index.compressed_size) Corrupt(which + "member starts at the blob's end");
    } else {
      if (checkpoint.window_length > checkpoint.uncompressed_offset) Corrupt(which + "window longer than the output");
      if (checkpoint.bits > 0 && checkpoint.compressed_offset == 0) Corrupt(which + "bits before the first byte");
    }
    if (i == 0) {
      if (checkpoint.uncompressed_offset != 0 || checkpoint.kind != CheckpointKind::kMemberStart) {
        Corrupt("the first checkpoint is not a member start at offset 0");
      }
    } else {
      const Checkpoint& previous = index.checkpoints.back();
      if (checkpoint.uncompressed_offset <= previous.uncompressed_offset) Corrupt(which + "offsets not increasing");
      if (checkpoint.compressed_offset < previous.compressed_offset) Corrupt(which + "compressed offsets decrease");
    }
    if (copy_windows) {
      checkpoint.stored_window.assign(p + pos, p + pos + stored_length);
    } else {
      checkpoint.stored_in_place = std::span<const uint8_t>(p + pos, stored_length);
    }
    pos += stored_length;
    index.checkpoints.push_back(std::move(checkpoint));
  }
  if (pos != body) Corrupt("trailing bytes after the last checkpoint");
  // Proofs need the next checkpoint's offsets: checked once all are read.
  for (size_t i = 0; i < index.checkpoints.size(); ++i) {
    const std::vector<Proof>& proofs = index.checkpoints[i].proofs;
    const std::string which = "checkpoint " + std::to_string(i) + ": ";
    if (proofs.size() != index.ProofCount(i)) Corrupt(which + "wrong number of proofs");
    uint64_t previous = index.checkpoints[i].uncompressed_offset;
    for (const Proof& proof : proofs) {
      if (proof.output_end < previous) Corrupt(which + "proof output ends decrease");
      previous = proof.output_end;
    }
    if (previous != index.OutputEnd(i)) Corrupt(which + "last proof does not end at the next checkpoint");
  }
  return index;
}

}  // namespace clip::core
