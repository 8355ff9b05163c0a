#include "compressed_source.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "error.h"

namespace clip::core {

FileSource::FileSource(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
  if (!fd_.valid()) Fail(ErrorCode::kIo, "cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) Fail(ErrorCode::kIo, "cannot stat " + path + ": " + std::strerror(errno));
  size_ = static_cast<uint64_t>(st.st_size);
}

size_t FileSource::ReadAt(uint64_t offset, uint8_t* out, size_t len) const {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd_.get(), out + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      FailAt(ErrorCode::kIo, std::string("read failed: ") + std::strerror(errno), offset + done);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

size_t MemorySource::ReadAt(uint64_t offset, uint8_t* out, size_t len) const {
  if (offset < base_ || offset >= base_ + len_) return 0;
  size_t available = static_cast<size_t>(base_ + len_ - offset);
  size_t n = len < available ? len : available;
  std::memcpy(out, data_ + (offset - base_), n);
  return n;
}


const uint8_t* MemorySource::View(uint64_t offset, size_t len) const {
  if (offset < base_ || offset - base_ > len_ || len > len_ - (offset - base_)) return nullptr;
  return data_ + (offset - base_);
}

}  // namespace clip::core
