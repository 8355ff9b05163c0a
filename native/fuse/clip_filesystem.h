// ClipFilesystem: the FUSE lowlevel operations over one mmap'd `.clip`
// archive. Metadata (lookup, getattr, readdir, readlink, xattrs, statfs)
// comes straight from the archive's records on the calling FUSE thread;
// reads are spliced from a cached layer file when the disk cache has the
// layer, and otherwise handed to the MissHandler and answered later (or
// failed with EIO at the deadline) through PendingReads.
//
// The image is immutable, so there is no inode table: an inode number is the
// archive's node index + 1 (stable across mounts, shared by hardlinks), the
// kernel's lookup counts need no bookkeeping (forget just acknowledges),
// entries, attributes, negative lookups, readdir results and page cache are
// kept for a long time, and opens carry no state (where the kernel supports
// it, it stops sending OPEN/OPENDIR at all). Every write-type operation
// answers EROFS.
//
// Each callback turns every exception into an errno (bad_alloc -> ENOMEM,
// anything else -> EIO plus one log line on stderr): nothing escapes into
// libfuse, and every request gets exactly one reply.
#pragma once

#include <string>

#include "../core/archive_view.h"
#include "fuse_api.h"
#include "kernel_passthrough.h"
#include "layer_cache_files.h"
#include "miss_handler.h"
#include "passthrough_files.h"
#include "pending_reads.h"
#include "session_stats.h"

namespace clip::fuse {

struct FilesystemOptions {
  std::string cache_dir;                 // "" for none
  std::chrono::milliseconds deadline{30000};  // per miss
  double entry_timeout = 86400.0 * 365;  // seconds; the image never changes
  unsigned max_pages_bytes = 1u << 20;   // bytes: largest read the kernel sends
  // Files at least this large are served by FUSE passthrough from a copy
  // in the disk cache (see passthrough_files.h); 0: never.
  uint64_t passthrough_min_bytes = 16ull << 20;
};

class ClipFilesystem {
 public:
  // `archive`, `misses` (may be null: every miss then fails with EIO) and
  // `stats` must outlive this object.
  ClipFilesystem(const core::ArchiveView& archive, const FilesystemOptions& options, MissHandler* misses,
                 SessionStats& stats);
  ClipFilesystem(const ClipFilesystem&) = delete;
  ClipFilesystem& operator=(const ClipFilesystem&) = delete;

  // The operation table; each op finds this object through fuse_req_userdata.
  static const fuse_lowlevel_ops& Ops();

  PendingReads& pending() { return pending_; }
  LayerCacheFiles& layers() { return layers_; }
  PassthroughFiles& passthrough() { return passthrough_; }
  InitReplyPatch& init_patch() { return init_patch_; }
  // The session's /dev/fuse fd (backing files are registered through it);
  // set before the session loop starts.
  void set_device_fd(int fd) { device_fd_ = fd; }

 private:
  friend struct Op;

  void Init(fuse_conn_info* conn);
  void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void GetAttr(fuse_req_t req, fuse_ino_t ino);
  void ReadLink(fuse_req_t req, fuse_ino_t ino);
  void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus);
  void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Release(fuse_ino_t ino);
  void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void StatFs(fuse_req_t req);
  void Access(fuse_req_t req, fuse_ino_t ino, int mask);

  void FillStat(const core::NodeView& node, struct stat* st) const;
  void FillEntry(const core::NodeView& node, fuse_entry_param* e) const;

  const core::ArchiveView& archive_;
  const FilesystemOptions options_;
  MissHandler* const misses_;
  SessionStats& stats_;
  LayerCacheFiles layers_;
  PassthroughFiles passthrough_;
  InitReplyPatch init_patch_;
  PendingReads pending_;
  int device_fd_ = -1;
  uint64_t total_bytes_ = 0;  // sum of the layers' uncompressed sizes, for statfs
  // Set once by Init, before any other request is read.
  bool no_open_ = false;     // the kernel may skip OPEN/RELEASE
  bool no_opendir_ = false;  // the kernel may skip OPENDIR/RELEASEDIR
};

}  // namespace clip::fuse
