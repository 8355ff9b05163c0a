#include "layer_cache_files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace clip::fuse {
namespace {

std::string HexOf(std::span<const uint8_t, 32> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

}  // namespace

LayerCacheFiles::LayerCacheFiles(const core::ArchiveView& archive, std::string cache_dir)
    : cache_dir_(std::move(cache_dir)), count_(archive.layer_count()) {
  slots_ = std::make_unique<Slot[]>(count_);
  for (uint32_t i = 0; i < count_; ++i) {
    const core::LayerView layer = archive.Layer(i);
    slots_[i].size = layer.uncompressed_size;
    slots_[i].hex = HexOf(layer.diff_id);
    if (!cache_dir_.empty()) slots_[i].path = cache_dir_ + "/layers/sha256/" + slots_[i].hex;
  }
}

LayerCacheFiles::~LayerCacheFiles() { ReleaseAll(); }

void LayerCacheFiles::ReleaseAll() {
  std::lock_guard lock(open_mutex_);
  released_ = true;
  for (uint32_t i = 0; i < count_; ++i) {
    const int fd = slots_[i].fd.exchange(-1);
    if (fd >= 0) ::close(fd);  // closing drops the flock
  }
}

int LayerCacheFiles::Fd(uint32_t index) {
  if (index >= count_) return -1;
  Slot& slot = slots_[index];
  const int fd = slot.fd.load(std::memory_order_acquire);
  if (fd >= 0 || slot.path.empty()) return fd;
  return TryOpen(slot);
}

int LayerCacheFiles::TryOpen(Slot& slot) {
  std::lock_guard lock(open_mutex_);
  int fd = slot.fd.load(std::memory_order_acquire);
  if (fd >= 0 || released_) return fd;  // another thread won, or the mount is over
  fd = ::open(slot.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::open(slot.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  // Non-blocking: an evictor holding LOCK_EX for a moment makes this read a
  // miss, never a stalled FUSE thread; the next miss tries again.
  struct stat st;
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<uint64_t>(st.st_size) != slot.size) {
    ::close(fd);
    return -1;
  }
  // LRU stamp for eviction (oldest atime first); best effort: a file of
  // another user only loses its place in the order.
  const struct timespec times[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
  ::futimens(fd, times);
  slot.fd.store(fd, std::memory_order_release);
  return fd;
}

void LayerCacheFiles::PinCached() {
  for (uint32_t i = 0; i < count_; ++i) Fd(i);
}

const std::string& LayerCacheFiles::Hex(uint32_t index) const {
  static const std::string kNone;
  return index < count_ ? slots_[index].hex : kNone;
}

uint32_t LayerCacheFiles::open_count() const {
  uint32_t n = 0;
  for (uint32_t i = 0; i < count_; ++i) n += slots_[i].fd.load(std::memory_order_relaxed) >= 0;
  return n;
}

}  // namespace clip::fuse
