#include "mount_session.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../core/error.h"
#include "../core/file_descriptor.h"

namespace clip::fuse {
namespace {

constexpr const char* kFuseControl = "/sys/fs/fuse/connections";

std::string Errno(int error) { return std::strerror(error); }

}  // namespace

MountSession::MountSession(MountOptions options, MissHandler* misses, std::shared_ptr<const core::ArchiveView> archive)
    : options_(std::move(options)),
      misses_(misses),
      archive_(archive ? std::move(archive)
                       : std::make_shared<const core::ArchiveView>(core::ArchiveView::Open(options_.archive_path))) {
  fs_ = std::make_unique<ClipFilesystem>(*archive_, options_.fs, misses_, stats_);
}

MountSession::~MountSession() {
  try {
    Stop();
  } catch (...) {
  }
  // PendingReads' timer may still be answering; it must be gone before the
  // session its requests belong to.
  fs_.reset();
  session_.reset();
}

void MountSession::Start() {
  if (!archive_) core::Fail(core::ErrorCode::kInvalidArgument, "a stopped session does not start again");
  std::string opts = "ro,default_permissions,fsname=" + options_.fsname + ",subtype=" + options_.subtype;
  if (options_.allow_other && ::geteuid() == 0) opts += ",allow_other";
  std::vector<std::string> argv_strings = {"clip-native", "-o", opts};
  if (options_.debug) argv_strings.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv_strings.size()), argv.data());
  const fuse_lowlevel_ops& ops = ClipFilesystem::Ops();
  session_.reset(fuse_session_new(&args, &ops, sizeof ops, fs_.get()));
  fuse_opt_free_args(&args);
  if (!session_) core::Fail(core::ErrorCode::kIo, "cannot create the FUSE session (bad mount options?)");

  if (fuse_session_mount(session_.get(), options_.mountpoint.c_str()) != 0) {
    session_.reset();
    core::Fail(core::ErrorCode::kIo, "cannot mount on " + options_.mountpoint +
                                         " (missing, not a directory, or busy; is /dev/fuse usable?)");
  }
  mounted_ = true;
  running_ = true;
  const int dev_fd = fuse_session_fd(session_.get());
  if (fs_->passthrough().configured()) {
    // Same fd, our hooks: they only watch INIT and add passthrough to its
    // reply (kernel_passthrough.h); every other message goes through as is.
    static const fuse_custom_io kIo = {InitReplyPatch::Writev, InitReplyPatch::Read, nullptr,
                                       InitReplyPatch::SpliceSend};
    if (fuse_session_custom_io(session_.get(), &kIo, dev_fd) == 0) fs_->set_device_fd(dev_fd);
  }
  fs_->layers().PinCached();
  loop_ = std::thread([this] { RunLoop(); });

  // The first request on a new mount waits for the INIT handshake; when this
  // stat returns, the loop is serving, and st_dev names the connection.
  struct stat st;
  if (::stat(options_.mountpoint.c_str(), &st) != 0) {
    const int error = errno;
    Stop();
    core::Fail(core::ErrorCode::kIo, "the mount on " + options_.mountpoint + " did not come up: " + Errno(error));
  }
  device_ = st.st_dev;
  SetReadAhead();
}

void MountSession::SetReadAhead() {
  if (options_.read_ahead_kb == 0) return;
  // Best effort: needs root; without it the kernel default stays.
  const std::string file = "/sys/class/bdi/" + std::to_string(major(device_)) + ":" + std::to_string(minor(device_)) +
                           "/read_ahead_kb";
  core::FileDescriptor fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return;
  const std::string value = std::to_string(options_.read_ahead_kb);
  if (::write(fd.get(), value.data(), value.size()) < 0) {
    std::fprintf(stderr, "clip-native fuse: cannot set %s: %s\n", file.c_str(), std::strerror(errno));
  }
}

void MountSession::RunLoop() {
  // Signals belong to Node's threads: block them here, and libfuse's worker
  // threads (created from this one) inherit the mask.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);

  fuse_loop_config* config = fuse_loop_cfg_create();
  if (config != nullptr) {
    fuse_loop_cfg_set_clone_fd(config, options_.clone_fd ? 1 : 0);
    fuse_loop_cfg_set_max_threads(config, options_.threads);
    fuse_loop_cfg_set_idle_threads(config, options_.threads);
    const int rc = fuse_session_loop_mt(session_.get(), config);
    if (rc != 0 && !stopping_) std::fprintf(stderr, "clip-native fuse: session loop ended with %d\n", rc);
    fuse_loop_cfg_destroy(config);
  }
  {
    std::lock_guard lock(loop_mutex_);
    loop_done_ = true;
  }
  loop_cv_.notify_all();
  running_ = false;
  if (!stopping_ && misses_ != nullptr) misses_->SessionEnded();
}

void MountSession::Stop() {
  std::lock_guard stop_lock(stop_mutex_);
  if (!mounted_) return;
  stopping_ = true;
  fuse_session_exit(session_.get());
  // Lazy unmount (MNT_DETACH when root): succeeds while files are open.
  fuse_session_unmount(session_.get());
  if (loop_.joinable()) {
    std::unique_lock lock(loop_mutex_);
    // With no file open, the unmount ends the connection and the workers'
    // reads fail with ENODEV. Open files keep it alive; abort it then.
    if (!loop_cv_.wait_for(lock, std::chrono::milliseconds(300), [this] { return loop_done_; })) {
      lock.unlock();
      AbortConnection();
      lock.lock();
      loop_cv_.wait(lock, [this] { return loop_done_; });
    }
    lock.unlock();
    loop_.join();
  }
  fs_->pending().FailAll(EIO);
  // A copy for passthrough reads a pinned layer: stop it before unpinning.
  fs_->passthrough().Stop();
  // The workers are gone: unpin the cached layers now, not when the
  // session object is collected.
  fs_->layers().ReleaseAll();
  // Nothing reads the archive any more (the filesystem's references to it
  // are only followed by FUSE requests, and Start() refuses to run again):
  // its mapping goes now, or with the caller's last reference to it.
  archive_.reset();
  mounted_ = false;
  running_ = false;
}

void MountSession::AbortConnection() {
  if (device_ == 0) return;
  // fusectl names a connection by the kernel's dev_t: major << 20 | minor.
  const unsigned long id = (static_cast<unsigned long>(major(device_)) << 20) | minor(device_);
  const std::string dir = std::string(kFuseControl) + "/" + std::to_string(id);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 && ::stat((std::string(kFuseControl) + "/.").c_str(), &st) == 0) {
    // fusectl is not mounted yet (or the connection is already gone).
    ::mount("fusectl", kFuseControl, "fusectl", 0, nullptr);
  }
  core::FileDescriptor fd(::open((dir + "/abort").c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return;  // already gone
  if (::write(fd.get(), "1", 1) != 1) {
    std::fprintf(stderr, "clip-native fuse: cannot abort connection %lu: %s\n", id, std::strerror(errno));
  }
}

SessionStatsSnapshot MountSession::Stats() const {
  SessionStatsSnapshot s = stats_.Snapshot();
  s.pending = fs_ ? fs_->pending().size() : 0;
  s.layers_open = fs_ ? fs_->layers().open_count() : 0;
  return s;
}

}  // namespace clip::fuse
