// PassthroughFiles: large files served by the kernel from a backing file
// (see kernel_passthrough.h), so a sequential read runs at the speed of the
// disk cache's filesystem instead of paying FUSE's two copies.
//
// A backing file must hold the file's bytes at the file's own offsets, and
// a cached layer holds them at the file's offset in the tar stream. So a
// large file (at least `min_bytes`) of a cached layer gets its own copy in
// the disk cache, made once per host:
//
//   <cacheDir>/files/sha256/<layer diff_id hex>/<offset of the data in the layer>
//
// copied in the kernel (copy_file_range) from the pinned, verified layer
// file into a partial name, fsync'd, then renamed: a complete-looking copy
// always holds the right bytes. The disk cache counts these copies with
// their layer and evicts them with it (src/storage/disk-cache.ts).
//
// The first open of a large file whose copy does not exist yet is served
// the usual way (splice from the layer) and queues the copy on this
// object's one background thread; opens after the copy exists use it.
//
// The kernel refuses to mix the two kinds of open on one inode (an open
// of the other kind fails with ETXTBSY or EINVAL while any is live), so
// each large inode keeps the kind of its live opens: a new open takes the
// kind of the opens still live, and only an inode with none switches.
// The count is decremented on RELEASE, which the kernel sends only after it
// has dropped its own count, so ours is never below the kernel's.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "../core/archive_view.h"
#include "layer_cache_files.h"
#include "session_stats.h"

namespace clip::fuse {

class PassthroughFiles {
 public:
  // `min_bytes` 0 or `cache_dir` empty: never passthrough.
  PassthroughFiles(LayerCacheFiles& layers, std::string cache_dir, uint64_t min_bytes, SessionStats& stats);
  PassthroughFiles(const PassthroughFiles&) = delete;
  PassthroughFiles& operator=(const PassthroughFiles&) = delete;
  ~PassthroughFiles();

  // Whether passthrough could be used at all (then the kernel must send OPEN).
  bool configured() const { return min_bytes_ != 0 && !cache_dir_.empty(); }
  // Turns it on once the kernel accepted it at INIT; `dev_fd` is the
  // session's /dev/fuse fd (backing files are registered through it).
  void Enable(int dev_fd);

  // How to open `node` (inode `ino`): a backing id (> 0) to answer with
  // passthrough, or 0 for a normal open. Counts the open when the node is
  // large; pair with Release() (or Release() right away if the reply
  // could not be sent).
  int Open(uint64_t ino, const core::NodeView& node);
  void Release(uint64_t ino);

  // Stops the copy thread (a copy in progress is abandoned and its partial
  // file removed). Call before the layers are released.
  void Stop();

 private:
  struct Inode {
    uint32_t opens = 0;
    bool passthrough = false;  // the kind of the live opens
    int backing_id = 0;        // registered backing file, 0 if none yet
    bool copy_queued = false;
  };
  struct Copy {
    uint32_t layer;
    uint64_t offset;
    uint64_t size;
  };

  std::string CopyPath(const core::NodeView& node) const;
  int Register(const core::NodeView& node);  // backing id, or 0
  void CopyLoop();
  bool MakeCopy(const Copy& copy);

  LayerCacheFiles& layers_;
  const std::string cache_dir_;
  const uint64_t min_bytes_;
  SessionStats& stats_;

  // Lock order: leaf (never held across a syscall that can block on the
  // filesystem for long: registering a backing file is an open + ioctl).
  std::mutex mutex_;
  int dev_fd_ = -1;  // -1: passthrough off
  std::unordered_map<uint64_t, Inode> inodes_;
  std::deque<Copy> queue_;
  std::condition_variable queue_cv_;
  bool stopping_ = false;
  std::atomic<bool> stop_copy_{false};  // read by a copy in progress, without the lock
  std::thread copier_;  // started on the first queued copy
};

}  // namespace clip::fuse
