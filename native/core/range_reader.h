// RangeReader: random access to a layer's uncompressed stream.
//
// Read(offset, len) finds the nearest checkpoint at or before `offset`,
// reads the compressed bytes from there through the source (pread or a
// fetched buffer), verifies them against the index's span digests, restarts inflation with the checkpoint's window, discards
// output up to `offset` and returns exactly `len` bytes.
//
// Concurrency: a RangeReader is immutable after construction. Each Read uses
// its own inflate state and buffers, so any number of threads may call Read
// at once with no lock (the index and source are shared read-only).
#pragma once

#include <cstddef>
#include <cstdint>

#include "checkpoint_index.h"
#include "compressed_source.h"
#include "inflate_engine.h"

namespace clip::core {

class RangeReader {
 public:
  // The index and source must outlive the reader.
  RangeReader(const CheckpointIndex& index, const CompressedSource& source, InflateEngine engine);

  // Fills out[0, len) with uncompressed bytes [offset, offset + len).
  // Throws kInvalidArgument if the range passes the end of the stream,
  // kDigestMismatch if the compressed span does not match the index's span
  // digests (nothing is written to `out` then),
  // kTruncated if the source ends before the range is produced, kCorrupt if
  // the compressed bytes do not inflate (a wrong window, bad data, a CRC that
  // fails when the range reaches a member's end), kIo from the source.
  void Read(uint64_t offset, uint8_t* out, size_t len) const;

 private:
  const CheckpointIndex& index_;
  const CompressedSource& source_;
  InflateEngine engine_;
};

}  // namespace clip::core
