// MappedFile: a whole file mapped read-only into memory, unmapped exactly
// once. Move-only; the mapped bytes never move, so spans into them stay
// valid when the MappedFile itself is moved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

namespace clip::core {

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { Reset(); }

  // Maps all of `path` read-only (MAP_PRIVATE). An empty file gives an empty
  // mapping (mmap cannot map zero bytes), not an error.
  // Errors: kIo naming the path and the OS error (including a missing file).
  static MappedFile Open(const std::string& path);

  std::span<const uint8_t> bytes() const { return {static_cast<const uint8_t*>(data_), size_}; }
  size_t size() const { return size_; }

 private:
  void Reset();

  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace clip::core
