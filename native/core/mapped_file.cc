#include "mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "error.h"
#include "file_descriptor.h"

namespace clip::core {

MappedFile MappedFile::Open(const std::string& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) Fail(ErrorCode::kIo, "cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) Fail(ErrorCode::kIo, "cannot stat " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Fail(ErrorCode::kIo, path + " is not a regular file");
  MappedFile file;
  if (st.st_size == 0) return file;
  void* data = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (data == MAP_FAILED) Fail(ErrorCode::kIo, "cannot map " + path + ": " + std::strerror(errno));
  file.data_ = data;
  file.size_ = static_cast<size_t>(st.st_size);
  // The mapping outlives the descriptor; closing it here is fine.
  return file;
}

void MappedFile::Reset() {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace clip::core
