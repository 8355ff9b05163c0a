// FUSE passthrough (kernel 6.9+, protocol 7.40): the kernel serves reads of
// an open file straight from a "backing" file on another filesystem, with
// no request to us and no second page cache, so a large file reads at the
// speed of the disk cache's own filesystem.
//
// libfuse 3.14 (Debian bookworm) and the system's <linux/fuse.h> (7.38)
// predate it: libfuse cannot ask for FUSE_PASSTHROUGH in its INIT reply
// (conn->want is 32 bits; the flag lives in flags2) nor put a backing id
// in an OPEN reply. So this file declares the few kernel ABI pieces
// needed, and InitReplyPatch adds the flag to libfuse's INIT reply on its
// way to the kernel, through libfuse's own custom-I/O hook
// (fuse_session_custom_io): libfuse still negotiates everything else.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>

namespace clip::fuse {

// Bit 37 of the 64-bit INIT flags, so bit 5 of flags2.
constexpr uint32_t kInitFlags2Passthrough = 1u << (37 - 32);
// fuse_open_out.open_flags: this open reads through fuse_open_out.backing_id.
constexpr uint32_t kOpenPassthrough = 1u << 7;
constexpr uint32_t kOpenNoFlush = 1u << 5;  // FOPEN_NOFLUSH

// The OPEN reply as the kernel reads it since 7.40: the old padding word is
// the backing id.
struct OpenOutWithBacking {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};

// Registers `fd` with the connection behind /dev/fuse fd `dev_fd` as a
// backing file (FUSE_DEV_IOC_BACKING_OPEN; needs CAP_SYS_ADMIN). Returns
// its id (> 0), or -errno: EPERM without the capability or when the
// kernel did not accept passthrough at INIT, ELOOP when the backing file's
// filesystem is itself stacked too deep, ENOTTY on kernels without it.
int BackingOpen(int dev_fd, int fd);

// Watches the INIT exchange through libfuse's custom I/O hooks: Read()
// notes whether the kernel offers passthrough; Writev() adds it to the
// INIT reply when wanted (set between the two, by the filesystem's init).
class InitReplyPatch {
 public:
  // The libfuse fuse_custom_io read/writev hooks; `userdata` is the
  // session's userdata, whose InitReplyPatch `Of` returns.
  static ssize_t Read(int fd, void* buf, size_t len, void* userdata);
  static ssize_t Writev(int fd, struct iovec* iov, int count, void* userdata);
  static ssize_t SpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned flags,
                            void* userdata);

  // Whether the kernel offered FUSE_PASSTHROUGH in its INIT request.
  bool offered() const { return offered_.load(std::memory_order_acquire); }
  // Ask for passthrough in the INIT reply (only if offered).
  void Want() { wanted_.store(true, std::memory_order_release); }
  bool offered_and_wanted() const { return offered() && wanted_.load(std::memory_order_acquire); }
  // Whether the INIT reply went out asking for it.
  bool requested() const { return requested_.load(std::memory_order_acquire); }

 private:
  void OnRequest(const void* buf, size_t len);
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<bool> offered_{false};
  std::atomic<bool> wanted_{false};
  std::atomic<bool> requested_{false};
};

// The InitReplyPatch of a session's userdata (the ClipFilesystem).
InitReplyPatch& InitPatchOf(void* userdata);

}  // namespace clip::fuse
