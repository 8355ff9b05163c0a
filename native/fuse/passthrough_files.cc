#include "passthrough_files.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernel_passthrough.h"

namespace clip::fuse {
namespace {

constexpr uint64_t kCopyChunk = 64ull << 20;  // bytes per copy_file_range call: a stop waits at most this

bool MakeDir(const std::string& path) { return ::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST; }

// Copies `size` bytes at `offset` of `in` to the start of `out`, in the
// kernel where it can; stops early (false) when `stop` is set. errno says why on failure.
bool CopyRange(int in, uint64_t offset, int out, uint64_t size, const std::atomic<bool>& stop) {
  uint64_t done = 0;
  bool in_kernel = true;
  std::vector<char> buffer;
  while (done < size) {
    if (stop.load(std::memory_order_relaxed)) {
      errno = ECANCELED;
      return false;
    }
    const size_t chunk = static_cast<size_t>(std::min(size - done, kCopyChunk));
    ssize_t n;
    if (in_kernel) {
      loff_t in_off = static_cast<loff_t>(offset + done);
      loff_t out_off = static_cast<loff_t>(done);
      n = ::copy_file_range(in, &in_off, out, &out_off, chunk, 0);
      // Across filesystems on older kernels, or on filesystems without it:
      // copy through a buffer instead.
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
        in_kernel = false;
        continue;
      }
    } else {
      if (buffer.empty()) buffer.resize(1 << 20);
      n = ::pread(in, buffer.data(), std::min(chunk, buffer.size()), static_cast<off_t>(offset + done));
      if (n > 0) {
        ssize_t written = 0;
        while (written < n) {
          const ssize_t w = ::pwrite(out, buffer.data() + written, n - written, static_cast<off_t>(done + written));
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) return false;
          written += w;
        }
      }
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {  // the layer file is shorter than the archive says: never a complete copy
      errno = EIO;
      return false;
    }
    done += static_cast<uint64_t>(n);
  }
  return true;
}

}  // namespace

PassthroughFiles::PassthroughFiles(LayerCacheFiles& layers, std::string cache_dir, uint64_t min_bytes,
                                   SessionStats& stats)
    : layers_(layers), cache_dir_(std::move(cache_dir)), min_bytes_(min_bytes), stats_(stats) {}

PassthroughFiles::~PassthroughFiles() { Stop(); }

void PassthroughFiles::Enable(int dev_fd) {
  std::lock_guard lock(mutex_);
  if (configured()) dev_fd_ = dev_fd;
}

std::string PassthroughFiles::CopyPath(const core::NodeView& node) const {
  return cache_dir_ + "/files/sha256/" + layers_.Hex(node.layer) + "/" + std::to_string(node.data_offset);
}

int PassthroughFiles::Register(const core::NodeView& node) {
  int dev_fd;
  {
    std::lock_guard lock(mutex_);
    dev_fd = dev_fd_;
  }
  if (dev_fd < 0) return 0;
  const int fd = ::open(CopyPath(node).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;  // no copy yet
  struct stat st;
  const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == node.size;
  const int id = ok ? BackingOpen(dev_fd, fd) : 0;
  ::close(fd);  // the kernel holds its own reference from here on
  if (id < 0) {
    // The kernel will not take backing files on this connection (no
    // capability, a stacked cache filesystem, an old kernel): the copies
    // cannot help, so stop trying (inodes with live passthrough opens keep
    // their id).
    std::lock_guard lock(mutex_);
    if (dev_fd_ >= 0) {
      std::fprintf(stderr, "clip-native fuse: passthrough off: cannot register a backing file: %s\n",
                   std::strerror(-id));
    }
    dev_fd_ = -1;
    return 0;
  }
  return id;
}

int PassthroughFiles::Open(uint64_t ino, const core::NodeView& node) {
  if (!configured() || node.size < min_bytes_) return 0;
  std::unique_lock lock(mutex_);
  Inode& inode = inodes_[ino];  // references into an unordered_map stay valid: nothing is erased
  if (inode.opens == 0 && inode.backing_id == 0 && dev_fd_ >= 0) {
    lock.unlock();
    const int id = Register(node);
    lock.lock();
    if (inode.backing_id == 0) inode.backing_id = id;
    // (Two racing first opens may both register; the kernel frees the
    // spare id with the connection.)
  }
  if (inode.opens == 0) {
    // Nothing live: this open picks the kind.
    inode.passthrough = inode.backing_id > 0;
    if (!inode.passthrough && !inode.copy_queued && dev_fd_ >= 0 && layers_.Fd(node.layer) >= 0) {
      inode.copy_queued = true;
      queue_.push_back(Copy{node.layer, node.data_offset, node.size});
      if (!copier_.joinable() && !stopping_) copier_ = std::thread([this] { CopyLoop(); });
      queue_cv_.notify_one();
    }
  }
  ++inode.opens;
  if (!inode.passthrough) return 0;
  SessionStats::Add(stats_.passthrough_opens);
  return inode.backing_id;
}

void PassthroughFiles::Release(uint64_t ino) {
  std::lock_guard lock(mutex_);
  const auto it = inodes_.find(ino);
  if (it != inodes_.end() && it->second.opens > 0) --it->second.opens;
}

void PassthroughFiles::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    stop_copy_.store(true);
    dev_fd_ = -1;
  }
  queue_cv_.notify_all();
  if (copier_.joinable()) copier_.join();
}

void PassthroughFiles::CopyLoop() {
  // A copy is an optimisation for later opens: it should yield to the reads
  // of now (the open that queued it is being served while it runs). Lowest
  // best-effort I/O priority and a high nice value, for this thread only.
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  constexpr int kIoprioWhoProcess = 1, kIoprioClassBestEffort = 2, kIoprioClassShift = 13;
  ::syscall(SYS_ioprio_set, kIoprioWhoProcess, tid, (kIoprioClassBestEffort << kIoprioClassShift) | 7);
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 10);
  std::unique_lock lock(mutex_);
  for (;;) {
    queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    const Copy copy = queue_.front();
    queue_.pop_front();
    lock.unlock();
    if (MakeCopy(copy)) SessionStats::Add(stats_.backing_copies);
    lock.lock();
  }
}

bool PassthroughFiles::MakeCopy(const Copy& copy) {
  const int in = layers_.Fd(copy.layer);  // pinned until the mount ends, after Stop()
  if (in < 0) return false;
  const std::string dir = cache_dir_ + "/files/sha256/" + layers_.Hex(copy.layer);
  if (!MakeDir(cache_dir_ + "/files") || !MakeDir(cache_dir_ + "/files/sha256") || !MakeDir(dir)) return false;
  const std::string path = dir + "/" + std::to_string(copy.offset);
  if (::access(path.c_str(), F_OK) == 0) return true;  // another mount made it
  // The partial's name says who writes it, as a layer fill's does, so a
  // cache prune can remove the partials of a process that died.
  std::random_device random;
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, ".partial-%d-%08x", static_cast<int>(::getpid()), random());
  const std::string partial = path + suffix;
  const int out = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (out < 0) return false;
  bool ok = CopyRange(in, copy.offset, out, copy.size, stop_copy_) && ::fsync(out) == 0;
  const int error = errno;
  ::close(out);
  // Renamed only once every byte is on disk: a complete-looking copy is right.
  if (ok) ok = ::rename(partial.c_str(), path.c_str()) == 0;
  if (!ok) {
    ::unlink(partial.c_str());
    if (error != ECANCELED) {
      std::fprintf(stderr, "clip-native fuse: cannot copy a large file for passthrough to %s: %s\n", path.c_str(),
                   std::strerror(error));
    }
  }
  return ok;
}

}  // namespace clip::fuse
