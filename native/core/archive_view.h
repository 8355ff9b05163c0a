// ArchiveView: read-only access to a `.clip` archive, straight from its
// bytes (an mmap of the file, or a buffer the caller owns).
//
// The archive is the merged tree of an image's layers plus the layers'
// checkpoints and the image config, laid out so that nothing is decoded
// before use: Open() checks the header, the section table and every
// section's CRC-32, then each accessor reads the fixed-size records it
// needs, O(1) for a node, O(log n) for a name in a directory, and checks
// every offset it reads against the section it points into. A damaged or
// malicious file therefore fails with CoreError(kCorrupt) at the access
// that meets the damage, never with a crash. Accessors allocate nothing and
// return views into the mapping, valid as long as the ArchiveView lives.
//
// The view is immutable after Open(): any number of threads may use one at
// once with no locking (the FUSE session's threads do).
//
// Byte layout, version 1 (docs/format.md is the same table in prose). All
// integers little-endian; offsets are bytes from the start of the file
// unless said otherwise; CRC-32 is zlib's crc32 (the gzip polynomial).
//
//   Header, 64 bytes at offset 0:
//     0   8  magic "CLIPARCH"
//     8   4  u32 version (1); a newer one is refused with kUnsupported
//    12   4  u32 section count N (1..64)
//    16   8  u64 total file size
//    24   4  u32 CRC-32 of bytes 0..23 followed by the N-entry section table
//    28  36  reserved, zero
//   Section table at 64: N x 32 bytes, in increasing id order:
//     0   4  u32 id             4  4  reserved, zero
//     8   8  u64 offset (8-byte aligned, past the table)
//    16   8  u64 length        24  4  u32 CRC-32 of the section's bytes
//    28   4  reserved, zero
//   Sections (each id at most once; all seven required; ids above 7 are
//   skipped; sections never overlap; the padding between them is zero and
//   is the only part of the file no CRC covers):
//     1 STRINGS      bytes other sections point into by offset (u32 range).
//                    A directory entry name is a u8 length (1..255) then its
//                    bytes; other strings' lengths are kept by the pointer.
//     2 LAYERS       u32 count, u32 reserved, count x 112-byte records:
//                      0 32 blob digest (sha256, raw)   32 32 diff_id (raw)
//                     64  8 compressed size             72  8 uncompressed size
//                     80  4 media type offset (STRINGS) 84  4 media type length
//                     88  4 format: 0 tar, 1 gzip       92  4 reserved
//                     96  8 checkpoint index offset (in CHECKPOINTS)
//                    104  8 checkpoint index length
//     3 NODES        count x 48-byte records; node i is inode i + 1; node 0
//                    is the root directory:
//                      0  4 mode: st_mode (file type bits + 07777)
//                      4  4 uid               8  4 gid
//                     12  4 nlink (names; a directory: 2 + subdirectories)
//                     16  8 mtime seconds (signed)   24  4 mtime nanoseconds
//                     28  4 first xattr record: the node's records run up to
//                           the next node's first (the last node's, to the
//                           end of XATTRS), so the values never decrease
//                     32  8 file: size in bytes; symlink: target length;
//                           directory: u32 parent node index (the root: 0),
//                           then u32 entry count; otherwise 0
//                     40  8 file: uncompressed offset of the content in its
//                           layer (low 48 bits) and the layer index (high 16);
//                           directory: first directory entry (index);
//                           symlink: target offset (STRINGS); char/block
//                           device: rdev (glibc makedev encoding); fifo: 0
//     4 DIRENTS      count x 8 bytes: u32 name offset (STRINGS), u32 node
//                    index (never 0). A directory's entries are contiguous
//                    and sorted by name bytes (memcmp, shorter first on a
//                    tie). Names are never empty, "." or "..", and hold no
//                    '/' or NUL.
//     5 XATTRS       count x 16 bytes: u32 name offset, u32 name length,
//                    u32 value offset, u32 value length (all into STRINGS).
//                    A node's records are contiguous, sorted by name bytes.
//     6 CHECKPOINTS  the layers' serialized checkpoint indexes
//                    (checkpoint_index.h), each 8-byte aligned.
//     7 CONFIG       UTF-8 JSON: the image reference, digests, platform and
//                    the run config (Env, Cmd, ...).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "mapped_file.h"

namespace clip::core {

// Inode numbers as FUSE sees them: node index + 1, so the root is 1
// (FUSE_ROOT_ID). 0 means "no such node".
using Ino = uint64_t;
constexpr Ino kRootIno = 1;

constexpr uint32_t kArchiveVersion = 1;
constexpr size_t kArchiveHeaderSize = 64;
constexpr size_t kArchiveSectionEntrySize = 32;
constexpr size_t kArchiveNodeSize = 48;
constexpr size_t kArchiveDirentSize = 8;
constexpr size_t kArchiveXattrSize = 16;
constexpr size_t kArchiveLayerSize = 112;
constexpr size_t kArchiveMaxSections = 64;

enum class ArchiveSection : uint32_t {
  kStrings = 1,
  kLayers = 2,
  kNodes = 3,
  kDirents = 4,
  kXattrs = 5,
  kCheckpoints = 6,
  kConfig = 7,
};

// One node, decoded from its record. Which fields mean something depends on
// the file type in `mode` (the others are 0).
struct NodeView {
  Ino ino = 0;
  uint32_t mode = 0;       // st_mode: type bits | 07777
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;  // < 1e9
  uint64_t size = 0;        // st_size: file bytes, symlink target length, 0 for the rest
  uint64_t rdev = 0;        // char/block devices
  // Regular files: where the bytes are.
  uint32_t layer = 0;
  uint64_t data_offset = 0;  // uncompressed offset in the layer's tar stream
  // Directories.
  uint64_t first_dirent = 0;
  uint32_t dirent_count = 0;
  Ino parent = 0;            // the root's parent is the root
  // Extended attributes: records [first_xattr, first_xattr + xattr_count).
  uint32_t first_xattr = 0;
  uint32_t xattr_count = 0;

  uint32_t type() const { return mode & 0170000; }
  bool is_dir() const { return type() == 0040000; }
  bool is_file() const { return type() == 0100000; }
  bool is_symlink() const { return type() == 0120000; }
};

struct DirEntryView {
  std::string_view name;  // 1..255 bytes, no '/' or NUL, never "." or ".."
  Ino ino = 0;
};

struct XattrView {
  std::string_view name;
  std::span<const uint8_t> value;
};

struct LayerView {
  std::span<const uint8_t, 32> digest;   // sha256 of the blob
  std::span<const uint8_t, 32> diff_id;  // sha256 of the tar stream
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  std::string_view media_type;
  uint32_t format = 0;                   // 0 tar, 1 gzip
  std::span<const uint8_t> checkpoints;  // serialized CheckpointIndex
};

struct ArchiveInfo {
  uint32_t version = 0;
  uint64_t file_size = 0;
  uint64_t node_count = 0;
  uint64_t dirent_count = 0;
  uint64_t xattr_count = 0;
  uint32_t layer_count = 0;
  uint64_t strings_size = 0;
  uint64_t checkpoints_size = 0;
  uint64_t config_size = 0;
};

class ArchiveView {
 public:
  ArchiveView() = default;
  ArchiveView(const ArchiveView&) = delete;
  ArchiveView& operator=(const ArchiveView&) = delete;
  ArchiveView(ArchiveView&&) noexcept = default;
  ArchiveView& operator=(ArchiveView&&) noexcept = default;

  // Maps `path` and validates it (see FromBytes).
  // Errors: kIo (cannot open or map), and FromBytes' errors.
  static ArchiveView Open(const std::string& path);

  // Validates `bytes` as an archive without copying them; the caller keeps
  // them alive and unchanged for the view's lifetime.
  // Checks: magic, version, header CRC, total size, section bounds, overlap,
  // alignment and CRCs, record-size multiples, the layer table, a directory
  // root. Errors: kCorrupt ("not a clip archive" for a foreign file, else
  // what is wrong), kUnsupported (a newer format version).
  static ArchiveView FromBytes(std::span<const uint8_t> bytes);

  const ArchiveInfo& info() const { return info_; }
  uint64_t node_count() const { return info_.node_count; }
  uint32_t layer_count() const { return info_.layer_count; }

  // The node `ino` (1..node_count). Errors: kInvalidArgument for an ino out
  // of range; kCorrupt when the record is inconsistent (unknown type, a
  // range outside its section, a layer index or content range the layer
  // does not have).
  NodeView Node(Ino ino) const;

  // The entry `name` of directory `dir`: its inode, or 0 when there is none.
  // Binary search over the sorted entries, no allocation.
  // Errors: kInvalidArgument when `dir` is not a directory; kCorrupt.
  Ino Lookup(Ino dir, std::string_view name) const;
  Ino Lookup(const NodeView& dir, std::string_view name) const;

  // Entry `index` (0..dirent_count-1) of directory `dir`.
  // Errors: kInvalidArgument (not a directory, index out of range); kCorrupt
  // (a name or node index outside its section, an invalid name).
  DirEntryView DirEntry(const NodeView& dir, uint64_t index) const;

  // Calls fn(entry, next_offset) for the entries of `dir` from `offset` on,
  // in name order, until fn returns false or the entries end. next_offset
  // is what to pass to resume after this entry (FUSE readdir's offset).
  // Errors: as DirEntry.
  template <typename Fn>
  void ReadDir(Ino dir, uint64_t offset, Fn&& fn) const {
    const NodeView node = Node(dir);
    RequireDir(node);
    for (uint64_t i = offset; i < node.dirent_count; ++i) {
      if (!fn(DirEntry(node, i), i + 1)) break;
    }
  }

  // The target of symlink `ino`. Errors: kInvalidArgument when `ino` is not
  // a symlink; kCorrupt.
  std::string_view ReadLink(Ino ino) const;

  // Extended attribute `index` (0..xattr_count-1) of `node`.
  // Errors: kInvalidArgument (index out of range); kCorrupt.
  XattrView Xattr(const NodeView& node, uint32_t index) const;
  // The value of xattr `name` of `ino`, or nullopt. Errors: as Node, Xattr.
  std::optional<std::span<const uint8_t>> GetXattr(Ino ino, std::string_view name) const;

  // Layer `index` (0..layer_count-1), bottom first; checked by Open.
  // Errors: kInvalidArgument for an index out of range.
  LayerView Layer(uint32_t index) const;

  // The CONFIG section's JSON text.
  std::string_view Config() const;

  // Resolves "a/b/c" from the root ('/' separated; empty and "." components
  // skipped, ".." goes to the parent, the root's parent is the root),
  // following no symlinks. Returns 0 when a component is missing or a
  // non-final component is not a directory. Errors: kCorrupt.
  Ino LookupPath(std::string_view path) const;

 private:
  struct Span {
    uint64_t offset = 0;
    uint64_t length = 0;
  };

  void Validate();
  const uint8_t* SectionBytes(const Span& s) const { return bytes_.data() + s.offset; }
  // STRINGS[offset, offset + length), or kCorrupt naming `what`.
  std::string_view String(uint64_t offset, uint64_t length, const char* what) const;
  // The length-prefixed entry name at STRINGS[offset], or kCorrupt.
  std::string_view EntryName(uint64_t offset) const;
  static void RequireDir(const NodeView& node);

  MappedFile mapping_;
  std::span<const uint8_t> bytes_;
  ArchiveInfo info_;
  Span strings_, layers_, nodes_, dirents_, xattrs_, checkpoints_, config_;
};

// The inode's d_type-style file type name, for messages ("dir", "file", ...).
const char* NodeTypeName(uint32_t mode);

}  // namespace clip::core
