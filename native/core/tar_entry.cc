// TarEntry helpers: the stable names of entry types, used in logs, test
// output and the N-API binding (so they must never change).
#include "tar_entry.h"

namespace clip::core {

const char* EntryTypeName(EntryType type) {
  switch (type) {
    case EntryType::kRegular: return "file";
    case EntryType::kDirectory: return "dir";
    case EntryType::kSymlink: return "symlink";
    case EntryType::kHardlink: return "hardlink";
    case EntryType::kCharDevice: return "char";
    case EntryType::kBlockDevice: return "block";
    case EntryType::kFifo: return "fifo";
  }
  return "unknown";
}

}  // namespace clip::core
