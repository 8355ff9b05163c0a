// MountSession: one mounted archive: the mapped archive, the filesystem
// operations over it, the libfuse session, and the native thread that runs
// its multi-threaded loop (fuse_session_loop_mt, which starts up to
// `threads` worker threads of its own; none of them is a libuv thread and
// none ever waits for JavaScript).
//
// Lifecycle: construct (opens and validates the archive), Start() (mounts,
// starts the loop, returns once the kernel has completed INIT and answered
// a stat of the mountpoint: the mount is ready), Stop() (unmounts, lazily,
// so it succeeds while files are open; then aborts the connection if open
// files keep it alive, joins the loop and fails misses still waiting).
// Stop() is idempotent and the destructor calls it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "../core/archive_view.h"
#include "clip_filesystem.h"
#include "fuse_api.h"
#include "miss_handler.h"
#include "session_stats.h"

namespace clip::fuse {

struct MountOptions {
  std::string archive_path;
  std::string mountpoint;
  unsigned threads = 4;       // most FUSE worker threads at once
  bool clone_fd = true;       // one /dev/fuse fd per worker: no shared read queue
  bool allow_other = true;    // only honoured when running as root
  std::string fsname = "clip-native";
  std::string subtype = "clip-native";
  bool debug = false;         // libfuse's request trace on stderr
  // KiB the kernel reads ahead on this mount (its bdi's read_ahead_kb; 0
  // keeps the kernel's 128). Larger means fewer, larger requests, which
  // matters most for misses (each one restarts inflation at a checkpoint).
  unsigned read_ahead_kb = 4096;
  FilesystemOptions fs;
};

class MountSession {
 public:
  // Opens and validates the archive; mounts nothing yet. `misses` (may be
  // null) must outlive the session. Errors: the archive's CoreErrors.
  // `archive`, if given, is served instead of mapping options.archive_path
  // again: the caller's mapping, shared (one copy of its pages in the
  // process's RSS); the session drops its reference at Stop().
  MountSession(MountOptions options, MissHandler* misses, std::shared_ptr<const core::ArchiveView> archive = nullptr);
  MountSession(const MountSession&) = delete;
  MountSession& operator=(const MountSession&) = delete;
  ~MountSession();

  // Mounts and starts serving. Errors: CoreError(kIo) naming the step that
  // failed (creating the session, mount(2) (e.g. the mountpoint is missing
  // or busy), the readiness stat); nothing is left mounted on failure.
  // Call once.
  void Start();

  // Unmounts and stops; see the file comment. Safe to call more than once,
  // from any thread but a FUSE worker.
  void Stop();

  // Answers miss `id` (see PendingReads). Thread-safe.
  bool Complete(uint64_t id, const void* data, size_t size) { return fs_->pending().Complete(id, data, size); }
  bool Fail(uint64_t id, int error) { return fs_->pending().Fail(id, error); }

  SessionStatsSnapshot Stats() const;
  const MountOptions& options() const { return options_; }
  // Whether the loop is running (false before Start, after Stop or after an
  // unmount from outside).
  bool running() const { return running_.load(); }

 private:
  struct SessionDeleter {
    void operator()(fuse_session* se) const { fuse_session_destroy(se); }
  };

  void RunLoop();
  void AbortConnection();
  void SetReadAhead();

  const MountOptions options_;
  MissHandler* const misses_;
  std::shared_ptr<const core::ArchiveView> archive_;
  SessionStats stats_;
  std::unique_ptr<ClipFilesystem> fs_;
  std::unique_ptr<fuse_session, SessionDeleter> session_;

  // Lock order: stop_mutex_ is taken first and held for all of Stop();
  // loop_mutex_ is a leaf guarding loop_done_.
  std::mutex stop_mutex_;
  std::mutex loop_mutex_;
  std::condition_variable loop_cv_;
  bool loop_done_ = false;
  std::atomic<bool> running_{false};
  std::atomic<bool> stopping_{false};
  bool mounted_ = false;
  dev_t device_ = 0;   // st_dev of the mounted filesystem: names its fusectl connection
  std::thread loop_;
};

}  // namespace clip::fuse
