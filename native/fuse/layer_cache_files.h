// LayerCacheFiles: the decompressed layers this mount can read locally,
// found in the host-wide disk cache and pinned while the mount uses them.
//
// The storage tier keeps a complete, verified layer (its uncompressed tar
// stream) at <cacheDir>/layers/sha256/<diff_id hex>. A reader pins it by
// holding flock(LOCK_SH) on its open fd; eviction takes LOCK_EX|LOCK_NB and
// skips pinned files. So the first read of a layer tries to open and pin it,
// and a later miss tries again (a background fill may have finished). Once
// open, the fd stays open and pinned until the mount ends, and reads use it
// with no lock at all (the fd is published through an atomic). Every layer
// already cached is pinned when the mount starts, so a mounted image's
// layers are never evicted under it, read yet or not. Pinning also sets
// the file's atime: the cache's LRU order (a mount is a use).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/archive_view.h"

namespace clip::fuse {

class LayerCacheFiles {
 public:
  // `cache_dir` empty: no disk cache, every read is a miss.
  LayerCacheFiles(const core::ArchiveView& archive, std::string cache_dir);
  LayerCacheFiles(const LayerCacheFiles&) = delete;
  LayerCacheFiles& operator=(const LayerCacheFiles&) = delete;
  // Closes (and so unpins) every open layer file.
  ~LayerCacheFiles();

  // Closes (and so unpins) every open layer file now; later Fd() calls
  // answer -1. Call only when no thread can still be reading through an
  // fd it got from Fd() (the session's loop has ended).
  void ReleaseAll();

  // The open, pinned fd of layer `index`'s cached file, or -1 when it is not
  // (yet) in the cache. Tries to open it when it is not open; never blocks
  // on a lock. Thread-safe.
  int Fd(uint32_t index);

  // Opens and pins every layer the cache holds now (the rest are tried
  // again on their first read). Thread-safe.
  void PinCached();

  // Layers open right now.
  uint32_t open_count() const;

  // Layer `index`'s diff_id in hex (its name in the cache), "" out of range.
  const std::string& Hex(uint32_t index) const;

 private:
  struct Slot {
    std::string hex;       // the diff_id's sha256 in hex
    std::string path;      // <cacheDir>/layers/sha256/<hex>
    uint64_t size = 0;     // bytes the complete file must have
    std::atomic<int> fd{-1};
  };

  int TryOpen(Slot& slot);

  std::string cache_dir_;
  std::unique_ptr<Slot[]> slots_;
  uint32_t count_ = 0;
  // Lock order: leaf. Serialises opening so one layer is opened once;
  // readers of an open slot never take it.
  std::mutex open_mutex_;
  bool released_ = false;  // guarded by open_mutex_
};

}  // namespace clip::fuse
