// TarEntry: everything the index keeps about one member of a layer tarball.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace clip::core {

enum class EntryType : uint8_t {
  kRegular = 0,
  kDirectory = 1,
  kSymlink = 2,
  kHardlink = 3,
  kCharDevice = 4,
  kBlockDevice = 5,
  kFifo = 6,
};

const char* EntryTypeName(EntryType type);  // "file", "dir", "symlink", "hardlink", "char", "block", "fifo"

struct TarEntry {
  std::string path;          // as stored (PAX path / GNU long name / prefix+name), unnormalized;
                             // whiteouts (.wh.*) are passed through for the merger
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;         // permission bits incl. setuid/setgid/sticky (mask 07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string uname;
  std::string gname;
  int64_t mtime_sec = 0;     // seconds since the epoch (may be negative)
  uint32_t mtime_nsec = 0;   // nanoseconds, from PAX mtime
  uint64_t size = 0;         // content bytes (regular files only; 0 otherwise)
  uint64_t data_offset = 0;  // uncompressed offset of the first content byte (regular files; 0 otherwise)
  uint64_t header_offset = 0;  // uncompressed offset of the entry's first header block (incl. its own PAX 'x' /
                               // GNU 'L' 'K' prefix headers; not global 'g' headers, which belong to no entry)
  uint32_t devmajor = 0;
  uint32_t devminor = 0;
  std::string link_target;   // symlink target, or hardlink target path
  std::vector<std::pair<std::string, std::string>> xattrs;  // SCHILY.xattr.NAME -> raw value bytes, in archive order
};

}  // namespace clip::core
