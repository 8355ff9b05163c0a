#include "clip_filesystem.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "../core/error.h"

namespace clip::fuse {
namespace {

// Thrown inside an operation to answer with a plain errno, no log line.
struct ErrnoReply {
  int error;
};

// Runs `body` for request `req`; turns any exception into the request's one
// error reply (only thread cancellation passes through). `body` replies itself on success and must not throw after it
// replied (all fuse_reply_* are C functions and do not throw).
template <typename Body>
void Guarded(fuse_req_t req, SessionStats& stats, const char* op, Body&& body) {
  try {
    body();
  } catch (const ErrnoReply& e) {
    fuse_reply_err(req, e.error);
  } catch (const abi::__forced_unwind&) {
    throw;  // thread cancellation must unwind (libfuse disables it during callbacks anyway)
  } catch (const std::bad_alloc&) {
    SessionStats::Add(stats.errors);
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    SessionStats::Add(stats.errors);
    std::fprintf(stderr, "clip-native fuse: %s failed: %s\n", op, e.what());
    fuse_reply_err(req, EIO);
  } catch (...) {
    SessionStats::Add(stats.errors);
    std::fprintf(stderr, "clip-native fuse: %s failed with an unknown exception\n", op);
    fuse_reply_err(req, EIO);
  }
}

ClipFilesystem* Self(fuse_req_t req) { return static_cast<ClipFilesystem*>(fuse_req_userdata(req)); }

}  // namespace

InitReplyPatch& InitPatchOf(void* userdata) { return static_cast<ClipFilesystem*>(userdata)->init_patch(); }

// The C trampolines libfuse calls; each forwards to the member function
// under Guarded(). A struct so that it can be the class's friend.
struct Op {
  static SessionStats& Stats(fuse_req_t req) { return Self(req)->stats_; }

  static void init(void* userdata, fuse_conn_info* conn) {
    try {
      static_cast<ClipFilesystem*>(userdata)->Init(conn);
    } catch (...) {
      std::fprintf(stderr, "clip-native fuse: init failed\n");
    }
  }
  static void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    Guarded(req, Stats(req), "lookup", [&] { Self(req)->Lookup(req, parent, name); });
  }
  static void forget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
  static void forget_multi(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }
  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    Guarded(req, Stats(req), "getattr", [&] { Self(req)->GetAttr(req, ino); });
  }
  static void readlink(fuse_req_t req, fuse_ino_t ino) {
    Guarded(req, Stats(req), "readlink", [&] { Self(req)->ReadLink(req, ino); });
  }
  static void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guarded(req, Stats(req), "opendir", [&] { Self(req)->OpenDir(req, ino, fi); });
  }
  static void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Guarded(req, Stats(req), "readdir", [&] { Self(req)->ReadDir(req, ino, size, off, false); });
  }
  static void readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Guarded(req, Stats(req), "readdirplus", [&] { Self(req)->ReadDir(req, ino, size, off, true); });
  }
  static void release_ok(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
  static void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    Self(req)->Release(ino);
    fuse_reply_err(req, 0);
  }
  static void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Guarded(req, Stats(req), "open", [&] { Self(req)->Open(req, ino, fi); });
  }
  static void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Guarded(req, Stats(req), "read", [&] { Self(req)->Read(req, ino, size, off); });
  }
  static void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    Guarded(req, Stats(req), "getxattr", [&] { Self(req)->GetXattr(req, ino, name, size); });
  }
  static void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    Guarded(req, Stats(req), "listxattr", [&] { Self(req)->ListXattr(req, ino, size); });
  }
  static void statfs(fuse_req_t req, fuse_ino_t) {
    Guarded(req, Stats(req), "statfs", [&] { Self(req)->StatFs(req); });
  }
  static void access(fuse_req_t req, fuse_ino_t ino, int mask) {
    Guarded(req, Stats(req), "access", [&] { Self(req)->Access(req, ino, mask); });
  }
  // Nothing to flush or sync; ENOSYS makes the kernel stop asking (without
  // an OPEN reply it cannot be told FOPEN_NOFLUSH, so it would send a FLUSH
  // on every close).
  static void flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, ENOSYS); }
  static void fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, ENOSYS); }

  // Write-type operations: the image is read-only.
  static void Erofs(fuse_req_t req) {
    SessionStats::Add(Stats(req).erofs);
    fuse_reply_err(req, EROFS);
  }
  static void setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) { Erofs(req); }
  static void mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { Erofs(req); }
  static void mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { Erofs(req); }
  static void unlink(fuse_req_t req, fuse_ino_t, const char*) { Erofs(req); }
  static void rmdir(fuse_req_t req, fuse_ino_t, const char*) { Erofs(req); }
  static void symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { Erofs(req); }
  static void rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) { Erofs(req); }
  static void link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { Erofs(req); }
  static void write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) { Erofs(req); }
  static void write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec*, off_t, fuse_file_info*) { Erofs(req); }
  static void create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { Erofs(req); }
  static void setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { Erofs(req); }
  static void removexattr(fuse_req_t req, fuse_ino_t, const char*) { Erofs(req); }
  static void fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) { Erofs(req); }
  static void copy_file_range(fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t, off_t, fuse_file_info*,
                              size_t, int) {
    Erofs(req);
  }
};

const fuse_lowlevel_ops& ClipFilesystem::Ops() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o;
    std::memset(&o, 0, sizeof o);
    o.init = Op::init;
    o.lookup = Op::lookup;
    o.forget = Op::forget;
    o.forget_multi = Op::forget_multi;
    o.getattr = Op::getattr;
    o.readlink = Op::readlink;
    o.opendir = Op::opendir;
    o.readdir = Op::readdir;
    o.readdirplus = Op::readdirplus;
    o.releasedir = Op::release_ok;
    o.open = Op::open;
    o.read = Op::read;
    o.release = Op::release;
    o.flush = Op::flush;
    o.fsync = Op::fsync;
    o.getxattr = Op::getxattr;
    o.listxattr = Op::listxattr;
    o.statfs = Op::statfs;
    o.access = Op::access;
    o.setattr = Op::setattr;
    o.mknod = Op::mknod;
    o.mkdir = Op::mkdir;
    o.unlink = Op::unlink;
    o.rmdir = Op::rmdir;
    o.symlink = Op::symlink;
    o.rename = Op::rename;
    o.link = Op::link;
    o.write = Op::write;
    o.write_buf = Op::write_buf;
    o.create = Op::create;
    o.setxattr = Op::setxattr;
    o.removexattr = Op::removexattr;
    o.fallocate = Op::fallocate;
    o.copy_file_range = Op::copy_file_range;
    return o;
  }();
  return ops;
}

namespace {

// `min_bytes` when some regular file of the archive is at least that large,
// else 0: an image with no large file keeps passthrough off, and so keeps
// the kernel from sending OPEN/RELEASE for every file (see Init).
uint64_t PassthroughThreshold(const core::ArchiveView& archive, uint64_t min_bytes) {
  if (min_bytes == 0) return 0;
  for (uint64_t ino = 1; ino <= archive.node_count(); ++ino) {
    const core::NodeView node = archive.Node(ino);
    if (node.is_file() && node.size >= min_bytes) return min_bytes;
  }
  return 0;
}

}  // namespace

ClipFilesystem::ClipFilesystem(const core::ArchiveView& archive, const FilesystemOptions& options,
                               MissHandler* misses, SessionStats& stats)
    : archive_(archive),
      options_(options),
      misses_(misses),
      stats_(stats),
      layers_(archive, options.cache_dir),
      passthrough_(layers_, options.cache_dir, PassthroughThreshold(archive, options.passthrough_min_bytes), stats),
      pending_(options.deadline, stats) {
  for (uint32_t i = 0; i < archive.layer_count(); ++i) total_bytes_ += archive.Layer(i).uncompressed_size;
}

namespace {

// The node behind an inode the kernel sent; an inode this archive never
// handed out is stale (e.g. from a previous mount of another archive).
core::NodeView NodeOf(const core::ArchiveView& archive, fuse_ino_t ino) {
  if (ino == 0 || ino > archive.node_count()) throw ErrnoReply{ESTALE};
  return archive.Node(ino);
}

// Whether this process holds `cap` in its effective set (CapEff in
// /proc/self/status: a hex bit mask).
bool HasCapability(int cap) {
  FILE* f = std::fopen("/proc/self/status", "re");
  if (f == nullptr) return false;
  char line[256];
  unsigned long long mask = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "CapEff: %llx", &mask) == 1) break;
  }
  std::fclose(f);
  return (mask >> cap) & 1;
}

// The largest read request whose reply libfuse can still splice. libfuse
// splices a reply through a per-thread pipe that must hold the reply (data
// plus its 16-byte header) plus three pages; when the pipe cannot grow that far
// (F_SETPIPE_SZ above /proc/sys/fs/pipe-max-size, 1 MiB by default, needs
// CAP_SYS_RESOURCE, which containers usually drop), it silently falls back
// to pread into a fresh mmap'd buffer plus writev for every read: 4x slower
// sequential reads. So requests are capped to what one pipe of the
// permitted size can carry; with CAP_SYS_RESOURCE the pipe grows and the
// cap is the configured size.
unsigned RequestBytesForSplice(unsigned wanted) {
  const long page = ::sysconf(_SC_PAGESIZE);
  unsigned long pipe_max = 1u << 20;
  if (FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "re")) {
    if (std::fscanf(f, "%lu", &pipe_max) != 1) pipe_max = 1u << 20;
    std::fclose(f);
  }
  if (HasCapability(CAP_SYS_RESOURCE)) return wanted;
  // Three pages of slack and one for the header: 1 MiB pipes carry 1008 KiB reads.
  const unsigned long cap = pipe_max > 5ul * page ? (pipe_max - 4ul * page) / page * page : page;
  return static_cast<unsigned>(std::min<unsigned long>(wanted, cap));
}

}  // namespace

void ClipFilesystem::Init(fuse_conn_info* conn) {
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  // Reads answered from a layer file go fd -> pipe -> /dev/fuse with no copy
  // (libfuse calls writing a reply by splice SPLICE_WRITE). SPLICE_READ
  // (reading requests by splice) only helps large writes, which a read-only
  // filesystem never gets, and costs a pipe round trip per request, so it
  // stays off.
  want(FUSE_CAP_SPLICE_WRITE);
  want(FUSE_CAP_SPLICE_MOVE);
  // Always readdirplus: a directory listing then fills the kernel's dentry
  // and attribute caches at once, so `find`/`ls -l` need no lookup per entry.
  want(FUSE_CAP_READDIRPLUS);
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_CACHE_SYMLINKS);
  // Large files read through a backing file (FUSE passthrough) when the
  // kernel offers it; init_patch_ adds the flag to libfuse's INIT reply.
  // An open then must reach us, to name the backing file.
  if (passthrough_.configured() && init_patch_.offered() && device_fd_ >= 0) {
    init_patch_.Want();
    passthrough_.Enable(device_fd_);
  }
  // Opening a file or directory needs nothing from us (no handle, no
  // state): where the kernel allows it, the first open answers ENOSYS and
  // the kernel stops sending OPEN/OPENDIR and RELEASE/RELEASEDIR, keeping
  // page and readdir caches as keep_cache/cache_readdir would. Two round
  // trips fewer for every open(2), exec and directory walk.
  if ((conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) && !init_patch_.offered_and_wanted()) {
    conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
    no_open_ = true;
  }
  if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) {
    conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
    no_opendir_ = true;
  }
  want(FUSE_CAP_ASYNC_READ);
  // The image never changes: never drop cached pages because of an mtime.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // libfuse derives max_pages (the largest request) from max_write.
  conn->max_write = RequestBytesForSplice(options_.max_pages_bytes);
  conn->max_background = 64;  // readahead and async reads in flight at once
  conn->congestion_threshold = 48;
  conn->time_gran = 1;  // nanosecond mtimes
}

void ClipFilesystem::FillStat(const core::NodeView& node, struct stat* st) const {
  std::memset(st, 0, sizeof *st);
  st->st_ino = node.ino;
  st->st_mode = node.mode;
  st->st_nlink = node.nlink;
  st->st_uid = node.uid;
  st->st_gid = node.gid;
  st->st_size = static_cast<off_t>(node.size);
  st->st_blocks = static_cast<blkcnt_t>((node.size + 511) / 512);
  st->st_blksize = 4096;
  st->st_rdev = static_cast<dev_t>(node.rdev);
  st->st_mtim.tv_sec = node.mtime_sec;
  st->st_mtim.tv_nsec = node.mtime_nsec;
  // The archive keeps one time per node; atime and ctime repeat it, as
  // they would in a freshly unpacked image.
  st->st_atim = st->st_mtim;
  st->st_ctim = st->st_mtim;
}

void ClipFilesystem::FillEntry(const core::NodeView& node, fuse_entry_param* e) const {
  std::memset(e, 0, sizeof *e);
  e->ino = node.ino;
  e->generation = 1;
  e->attr_timeout = options_.entry_timeout;
  e->entry_timeout = options_.entry_timeout;
  FillStat(node, &e->attr);
}

void ClipFilesystem::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  SessionStats::Add(stats_.lookups);
  const core::NodeView dir = NodeOf(archive_, parent);
  if (!dir.is_dir()) throw ErrnoReply{ENOTDIR};
  const size_t len = std::strlen(name);
  if (len > 255) throw ErrnoReply{ENAMETOOLONG};
  const core::Ino ino = archive_.Lookup(dir, std::string_view(name, len));
  fuse_entry_param e;
  if (ino == 0) {
    // A negative entry (ino 0) with a timeout: the kernel remembers that the
    // name is absent, which saves every later PATH search and dlopen probe.
    SessionStats::Add(stats_.negative_lookups);
    std::memset(&e, 0, sizeof e);
    e.entry_timeout = options_.entry_timeout;
    fuse_reply_entry(req, &e);
    return;
  }
  FillEntry(archive_.Node(ino), &e);
  fuse_reply_entry(req, &e);
}

void ClipFilesystem::GetAttr(fuse_req_t req, fuse_ino_t ino) {
  SessionStats::Add(stats_.getattrs);
  struct stat st;
  FillStat(NodeOf(archive_, ino), &st);
  fuse_reply_attr(req, &st, options_.entry_timeout);
}

void ClipFilesystem::ReadLink(fuse_req_t req, fuse_ino_t ino) {
  const core::NodeView node = NodeOf(archive_, ino);
  if (!node.is_symlink()) throw ErrnoReply{EINVAL};
  const std::string target(archive_.ReadLink(ino));  // fuse_reply_readlink wants a C string
  fuse_reply_readlink(req, target.c_str());
}

void ClipFilesystem::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (!NodeOf(archive_, ino).is_dir()) throw ErrnoReply{ENOTDIR};
  if (no_opendir_) throw ErrnoReply{ENOSYS};  // see Init
  // Let the kernel cache the listing and keep it across opens.
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void ClipFilesystem::ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  SessionStats::Add(stats_.readdirs);
  const core::NodeView dir = NodeOf(archive_, ino);
  if (!dir.is_dir()) throw ErrnoReply{ENOTDIR};
  if (off < 0) throw ErrnoReply{EINVAL};
  // Offsets: 0 is ".", 1 is "..", 2 + i is the archive's entry i. The value
  // passed with an entry is the offset of the one after it.
  std::vector<char> buf(size);
  size_t used = 0;
  std::string name;  // fuse_add_direntry wants NUL-terminated names
  auto add = [&](std::string_view entry_name, const core::NodeView& node, off_t next) {
    name.assign(entry_name);
    size_t len;
    if (plus) {
      fuse_entry_param e;
      FillEntry(node, &e);
      len = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e, next);
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof st);
      st.st_ino = node.ino;
      st.st_mode = node.mode;
      len = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st, next);
    }
    if (len > size - used) return false;  // did not fit: the kernel asks again from here
    used += len;
    return true;
  };
  bool more = true;
  if (off == 0) more = add(".", dir, 1);
  if (more && off <= 1) more = add("..", dir.parent == dir.ino ? dir : archive_.Node(dir.parent), 2);
  if (more) {
    const uint64_t first = off <= 2 ? 0 : static_cast<uint64_t>(off) - 2;
    archive_.ReadDir(ino, first, [&](const core::DirEntryView& entry, uint64_t next) {
      return add(entry.name, archive_.Node(entry.ino), static_cast<off_t>(next + 2));
    });
  }
  fuse_reply_buf(req, buf.data(), used);
}

void ClipFilesystem::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  SessionStats::Add(stats_.opens);
  const core::NodeView node = NodeOf(archive_, ino);
  if (node.is_dir()) throw ErrnoReply{EISDIR};
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
    SessionStats::Add(stats_.erofs);
    throw ErrnoReply{EROFS};
  }
  if (no_open_) throw ErrnoReply{ENOSYS};  // see Init
  const int backing_id = passthrough_.Open(ino, node);
  if (backing_id > 0) {
    const OpenOutWithBacking out{0, kOpenPassthrough | kOpenNoFlush, backing_id};
    // Not sent (the open was interrupted): the kernel holds no open.
    if (fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof out) != 0) passthrough_.Release(ino);
    return;
  }
  // Pages read once stay valid forever: the image is immutable.
  fi->keep_cache = 1;
  fi->noflush = 1;
  if (fuse_reply_open(req, fi) != 0) passthrough_.Release(ino);
}

void ClipFilesystem::Release(fuse_ino_t ino) { passthrough_.Release(ino); }

void ClipFilesystem::Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  const core::NodeView node = NodeOf(archive_, ino);
  if (!node.is_file()) throw ErrnoReply{node.is_dir() ? EISDIR : EINVAL};
  if (off < 0) throw ErrnoReply{EINVAL};
  if (static_cast<uint64_t>(off) >= node.size || size == 0) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  const uint64_t length = std::min<uint64_t>(size, node.size - static_cast<uint64_t>(off));
  const uint64_t position = node.data_offset + static_cast<uint64_t>(off);
  SessionStats::Add(stats_.reads);

  const int fd = layers_.Fd(node.layer);
  if (fd >= 0) {
    SessionStats::Add(stats_.cached_reads);
    SessionStats::Add(stats_.cached_bytes, length);
    SessionStats::Add(stats_.read_bytes, length);
    fuse_bufvec buf = FUSE_BUFVEC_INIT(length);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = static_cast<off_t>(position);
    // libfuse splices fd -> pipe -> /dev/fuse, or falls back to pread, and
    // replies (an error too) itself.
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
    return;
  }

  if (misses_ == nullptr) throw ErrnoReply{EIO};
  SessionStats::Add(stats_.misses);
  SessionStats::Add(stats_.miss_bytes, length);
  // From Add() on, the request belongs to PendingReads: it may be answered
  // (or time out) on another thread before Submit() even returns.
  const uint64_t id = pending_.Add(req, static_cast<uint32_t>(length));
  if (!misses_->Submit(MissRequest{id, node.layer, position, static_cast<uint32_t>(length)})) pending_.Fail(id, EIO);
}

void ClipFilesystem::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  NodeOf(archive_, ino);
  const auto value = archive_.GetXattr(ino, name);
  if (!value) throw ErrnoReply{ENODATA};
  if (size == 0) {
    fuse_reply_xattr(req, value->size());
  } else if (size < value->size()) {
    throw ErrnoReply{ERANGE};
  } else {
    fuse_reply_buf(req, reinterpret_cast<const char*>(value->data()), value->size());
  }
}

void ClipFilesystem::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  const core::NodeView node = NodeOf(archive_, ino);
  size_t total = 0;
  for (uint32_t i = 0; i < node.xattr_count; ++i) total += archive_.Xattr(node, i).name.size() + 1;
  if (size == 0) {
    fuse_reply_xattr(req, total);
    return;
  }
  if (size < total) throw ErrnoReply{ERANGE};
  std::string names;
  names.reserve(total);
  for (uint32_t i = 0; i < node.xattr_count; ++i) {
    names.append(archive_.Xattr(node, i).name);
    names.push_back('\0');
  }
  fuse_reply_buf(req, names.data(), names.size());
}

void ClipFilesystem::StatFs(fuse_req_t req) {
  struct statvfs st;
  std::memset(&st, 0, sizeof st);
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_blocks = (total_bytes_ + 4095) / 4096;
  st.f_files = archive_.node_count();
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

void ClipFilesystem::Access(fuse_req_t req, fuse_ino_t ino, int mask) {
  NodeOf(archive_, ino);
  // Permission bits are the kernel's job (default_permissions); only
  // writing is refused here.
  fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

}  // namespace clip::fuse
