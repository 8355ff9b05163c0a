// Where a RangeReader gets compressed layer bytes from.
//
// A source answers positional reads (pread semantics): no shared file
// position, so any number of threads may read one source at once. FileSource
// wraps a layer blob on disk; MemorySource wraps bytes that TypeScript fetched
// (an HTTP Range response) and knows at which blob offset they begin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "file_descriptor.h"

namespace clip::core {

class CompressedSource {
 public:
  virtual ~CompressedSource() = default;
  // Reads up to `len` bytes at blob offset `offset` into `out`. Returns the
  // number of bytes read, which is short only at the end of what the source
  // holds. Throws CoreError(kIo) when the operating system fails the read.
  virtual size_t ReadAt(uint64_t offset, uint8_t* out, size_t len) const = 0;
  // The source's own bytes [offset, offset + len) when it holds them in
  // memory (no copy needed), else nullptr.
  virtual const uint8_t* View(uint64_t, size_t) const { return nullptr; }
};

// A layer blob in a file, read with pread(2). Owns the descriptor.
class FileSource final : public CompressedSource {
 public:
  // Opens `path` read-only. Throws CoreError(kIo) naming the path on failure.
  explicit FileSource(const std::string& path);
  size_t ReadAt(uint64_t offset, uint8_t* out, size_t len) const override;
  uint64_t size() const { return size_; }

 private:
  FileDescriptor fd_;
  uint64_t size_ = 0;
};

// Bytes [base, base + len) of a blob, held by the caller for the source's life.
class MemorySource final : public CompressedSource {
 public:
  MemorySource(uint64_t base, const uint8_t* data, size_t len) : base_(base), data_(data), len_(len) {}
  // Reads outside [base, base + len) return 0 bytes (as at end of file), so a
  // span that was fetched too short shows up as ETRUNCATED, never as garbage.
  size_t ReadAt(uint64_t offset, uint8_t* out, size_t len) const override;
  const uint8_t* View(uint64_t offset, size_t len) const override;

 private:
  uint64_t base_;
  const uint8_t* data_;
  size_t len_;
};

}  // namespace clip::core
