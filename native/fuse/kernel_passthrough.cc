#include "kernel_passthrough.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace clip::fuse {
namespace {

struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned long kIocBackingOpen = _IOW(229, 1, BackingMap);

// fuse_init_out since 7.40: `max_stack_depth` is the word after flags2
// (unused[0] in the 7.38 header this builds against). The kernel accepts
// passthrough only with a depth of 1 or 2; 1 lets the backing files live on
// any plain filesystem and keeps this mount usable as an overlayfs lower
// layer (overlay adds one more level, and 2 is the kernel's limit).
constexpr size_t kMaxStackDepthOffset = offsetof(fuse_init_out, flags2) + sizeof(uint32_t);
constexpr uint32_t kMaxStackDepth = 1;

}  // namespace

int BackingOpen(int dev_fd, int fd) {
  BackingMap map{fd, 0, 0};
  const int id = ::ioctl(dev_fd, kIocBackingOpen, &map);
  return id < 0 ? -errno : id;
}

void InitReplyPatch::OnRequest(const void* buf, size_t len) {
  if (len < sizeof(fuse_in_header)) return;
  fuse_in_header in;
  std::memcpy(&in, buf, sizeof in);
  if (in.opcode != FUSE_INIT) return;
  fuse_init_in init{};
  std::memcpy(&init, static_cast<const char*>(buf) + sizeof in, std::min(sizeof init, len - sizeof in));
  const bool offered = len >= sizeof in + sizeof init && (init.flags & FUSE_INIT_EXT) &&
                       (init.flags2 & kInitFlags2Passthrough);
  offered_.store(offered, std::memory_order_release);
  init_unique_.store(in.unique, std::memory_order_release);
}

ssize_t InitReplyPatch::Read(int fd, void* buf, size_t len, void* userdata) {
  const ssize_t n = ::read(fd, buf, len);
  // Only the first request can be INIT; after it, one relaxed load a request.
  InitReplyPatch& self = InitPatchOf(userdata);
  if (n > 0 && !self.requested_.load(std::memory_order_relaxed) && self.init_unique_.load() == 0) {
    const int saved = errno;
    self.OnRequest(buf, static_cast<size_t>(n));
    errno = saved;
  }
  return n;
}

ssize_t InitReplyPatch::Writev(int fd, struct iovec* iov, int count, void* userdata) {
  InitReplyPatch& self = InitPatchOf(userdata);
  const uint64_t init_unique = self.init_unique_.load(std::memory_order_acquire);
  fuse_out_header out;
  if (init_unique == 0 || count != 2 || iov[0].iov_len != sizeof out || !self.offered() ||
      !self.wanted_.load(std::memory_order_acquire) || self.requested_.load()) {
    return ::writev(fd, iov, count);
  }
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique != init_unique || out.error != 0 || iov[1].iov_len < kMaxStackDepthOffset + sizeof(uint32_t)) {
    return ::writev(fd, iov, count);
  }
  // libfuse's reply, patched in a copy: the extended flags word carries
  // FUSE_PASSTHROUGH, and the stack depth the kernel needs with it.
  char reply[256];
  const size_t size = std::min(sizeof reply, iov[1].iov_len);
  std::memcpy(reply, iov[1].iov_base, size);
  fuse_init_out init;
  std::memcpy(&init, reply, std::min(sizeof init, size));
  init.flags |= FUSE_INIT_EXT;
  init.flags2 |= kInitFlags2Passthrough;
  std::memcpy(reply, &init, std::min(sizeof init, size));
  std::memcpy(reply + kMaxStackDepthOffset, &kMaxStackDepth, sizeof kMaxStackDepth);
  struct iovec patched[2] = {iov[0], {reply, size}};
  self.requested_.store(true, std::memory_order_release);
  return ::writev(fd, patched, 2);
}

ssize_t InitReplyPatch::SpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned flags,
                                   void*) {
  return ::splice(fdin, offin, fdout, offout, len, flags);
}

}  // namespace clip::fuse
