#include "archive_view.h"

#include <zlib.h>

#include <bit>
#include <cstring>

#include "error.h"

namespace clip::core {
namespace {

constexpr char kMagic[8] = {'C', 'L', 'I', 'P', 'A', 'R', 'C', 'H'};
constexpr uint32_t kRequiredSections = 7;
constexpr uint64_t kU32Range = uint64_t{1} << 32;

template <typename T>
T Load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    if constexpr (sizeof(T) == 2) value = static_cast<T>(__builtin_bswap16(static_cast<uint16_t>(value)));
    if constexpr (sizeof(T) == 4) value = static_cast<T>(__builtin_bswap32(static_cast<uint32_t>(value)));
    if constexpr (sizeof(T) == 8) value = static_cast<T>(__builtin_bswap64(static_cast<uint64_t>(value)));
  }
  return value;
}

uint32_t Crc32(uint32_t crc, const uint8_t* data, uint64_t length) {
  // zlib's crc32 takes a uInt length; feed large sections in slices.
  while (length > 0) {
    const uInt n = static_cast<uInt>(length > (1u << 30) ? (1u << 30) : length);
    crc = static_cast<uint32_t>(crc32(crc, data, n));
    data += n;
    length -= n;
  }
  return crc;
}

[[noreturn]] void Corrupt(const std::string& message) { Fail(ErrorCode::kCorrupt, "clip archive: " + message); }

bool ValidName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

// a < b in name-byte order (memcmp, shorter first on a tie): the DIRENTS order.
int CompareNames(std::string_view a, std::string_view b) {
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  const int c = n ? std::memcmp(a.data(), b.data(), n) : 0;
  if (c != 0) return c;
  return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

constexpr uint32_t kTypeFifo = 0010000, kTypeChar = 0020000, kTypeDir = 0040000, kTypeBlock = 0060000,
                   kTypeFile = 0100000, kTypeSymlink = 0120000;

}  // namespace

const char* NodeTypeName(uint32_t mode) {
  switch (mode & 0170000) {
    case kTypeFifo: return "fifo";
    case kTypeChar: return "char";
    case kTypeDir: return "dir";
    case kTypeBlock: return "block";
    case kTypeFile: return "file";
    case kTypeSymlink: return "symlink";
  }
  return "unknown";
}

ArchiveView ArchiveView::Open(const std::string& path) {
  ArchiveView view;
  view.mapping_ = MappedFile::Open(path);
  view.bytes_ = view.mapping_.bytes();
  try {
    view.Validate();
  } catch (const CoreError& e) {
    Fail(e.code(), path + ": " + e.what());
  }
  return view;
}

ArchiveView ArchiveView::FromBytes(std::span<const uint8_t> bytes) {
  ArchiveView view;
  view.bytes_ = bytes;
  view.Validate();
  return view;
}

void ArchiveView::Validate() {
  const uint8_t* base = bytes_.data();
  const uint64_t size = bytes_.size();
  if (size < 8 || std::memcmp(base, kMagic, 8) != 0) Fail(ErrorCode::kCorrupt, "not a clip archive");
  if (size < kArchiveHeaderSize) Corrupt("the header is cut short (" + std::to_string(size) + " bytes)");
  const uint32_t version = Load<uint32_t>(base + 8);
  if (version > kArchiveVersion) {
    Fail(ErrorCode::kUnsupported, "clip archive format version " + std::to_string(version) +
                                      " is newer than this reader (" + std::to_string(kArchiveVersion) + ")");
  }
  if (version == 0) Corrupt("format version 0");
  const uint32_t count = Load<uint32_t>(base + 12);
  if (count == 0 || count > kArchiveMaxSections) Corrupt("section count " + std::to_string(count));
  const uint64_t table_end = kArchiveHeaderSize + uint64_t{count} * kArchiveSectionEntrySize;
  if (size < table_end) Corrupt("the section table is cut short");
  uint32_t crc = Crc32(static_cast<uint32_t>(crc32(0, nullptr, 0)), base, 24);
  crc = Crc32(crc, base + kArchiveHeaderSize, table_end - kArchiveHeaderSize);
  if (crc != Load<uint32_t>(base + 24)) Corrupt("header checksum mismatch");
  const uint64_t total = Load<uint64_t>(base + 16);
  if (total != size) {
    Corrupt(total > size ? "file is truncated (" + std::to_string(size) + " of " + std::to_string(total) + " bytes)"
                         : "file has " + std::to_string(size - total) + " bytes after its end");
  }
  for (size_t i = 28; i < kArchiveHeaderSize; ++i) {
    if (base[i] != 0) Corrupt("reserved header bytes are not zero");
  }

  Span* slots[] = {&strings_, &layers_, &nodes_, &dirents_, &xattrs_, &checkpoints_, &config_};
  uint32_t seen = 0;
  uint32_t last_id = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* entry = base + kArchiveHeaderSize + uint64_t{i} * kArchiveSectionEntrySize;
    const uint32_t id = Load<uint32_t>(entry);
    const uint64_t offset = Load<uint64_t>(entry + 8);
    const uint64_t length = Load<uint64_t>(entry + 16);
    if (id <= last_id) Corrupt("section table is not in increasing id order");
    last_id = id;
    if (Load<uint32_t>(entry + 4) != 0 || Load<uint32_t>(entry + 28) != 0) Corrupt("reserved section table bytes are not zero");
    if (offset % 8 != 0 || offset < table_end || offset > size || length > size - offset) {
      Corrupt("section " + std::to_string(id) + " [" + std::to_string(offset) + ", +" + std::to_string(length) +
              ") lies outside the file or is misaligned");
    }
    if (Crc32(static_cast<uint32_t>(crc32(0, nullptr, 0)), base + offset, length) != Load<uint32_t>(entry + 24)) {
      Corrupt("section " + std::to_string(id) + " checksum mismatch");
    }
    if (id >= 1 && id <= kRequiredSections) {
      *slots[id - 1] = Span{offset, length};
      seen |= 1u << id;
    }
  }
  if (seen != ((1u << (kRequiredSections + 1)) - 2)) Corrupt("a required section is missing");
  // Sections must not overlap one another (each byte belongs to one CRC).
  for (Span* a : slots) {
    for (Span* b : slots) {
      if (a != b && a->length && b->length && a->offset < b->offset + b->length && b->offset < a->offset + a->length) {
        Corrupt("sections overlap");
      }
    }
  }

  if (strings_.length >= kU32Range) Corrupt("STRINGS is larger than 4 GiB");
  if (nodes_.length == 0 || nodes_.length % kArchiveNodeSize != 0) Corrupt("NODES is not a whole number of records");
  if (dirents_.length % kArchiveDirentSize != 0) Corrupt("DIRENTS is not a whole number of records");
  if (xattrs_.length % kArchiveXattrSize != 0) Corrupt("XATTRS is not a whole number of records");
  if (layers_.length < 8) Corrupt("LAYERS is cut short");
  const uint32_t layer_count = Load<uint32_t>(SectionBytes(layers_));
  if (layers_.length != 8 + uint64_t{layer_count} * kArchiveLayerSize) Corrupt("LAYERS length disagrees with its count");

  info_.version = version;
  info_.file_size = size;
  info_.node_count = nodes_.length / kArchiveNodeSize;
  info_.dirent_count = dirents_.length / kArchiveDirentSize;
  info_.xattr_count = xattrs_.length / kArchiveXattrSize;
  info_.layer_count = layer_count;
  info_.strings_size = strings_.length;
  info_.checkpoints_size = checkpoints_.length;
  info_.config_size = config_.length;
  if (info_.node_count >= kU32Range) Corrupt("too many nodes");

  for (uint32_t i = 0; i < layer_count; ++i) {
    const uint8_t* r = SectionBytes(layers_) + 8 + uint64_t{i} * kArchiveLayerSize;
    const std::string which = "layer " + std::to_string(i);
    String(Load<uint32_t>(r + 80), Load<uint32_t>(r + 84), "a layer media type");
    const uint32_t format = Load<uint32_t>(r + 88);
    if (format > 1) Corrupt(which + " has unknown format " + std::to_string(format));
    const uint64_t cp_offset = Load<uint64_t>(r + 96);
    const uint64_t cp_length = Load<uint64_t>(r + 104);
    if (cp_offset > checkpoints_.length || cp_length > checkpoints_.length - cp_offset) {
      Corrupt(which + "'s checkpoints lie outside CHECKPOINTS");
    }
  }
  if (!Node(kRootIno).is_dir()) Corrupt("the root node is not a directory");
}

std::string_view ArchiveView::String(uint64_t offset, uint64_t length, const char* what) const {
  if (offset > strings_.length || length > strings_.length - offset) {
    Corrupt(std::string(what) + " [" + std::to_string(offset) + ", +" + std::to_string(length) + ") lies outside STRINGS");
  }
  return {reinterpret_cast<const char*>(SectionBytes(strings_) + offset), static_cast<size_t>(length)};
}

std::string_view ArchiveView::EntryName(uint64_t offset) const {
  if (offset >= strings_.length) Corrupt("a directory entry name lies outside STRINGS");
  const uint8_t length = SectionBytes(strings_)[offset];
  std::string_view name = String(offset + 1, length, "a directory entry name");
  if (!ValidName(name)) Corrupt("invalid directory entry name");
  return name;
}

NodeView ArchiveView::Node(Ino ino) const {
  if (ino == 0 || ino > info_.node_count) {
    Fail(ErrorCode::kInvalidArgument, "inode " + std::to_string(ino) + " is not in the archive (1.." +
                                          std::to_string(info_.node_count) + ")");
  }
  const uint8_t* r = SectionBytes(nodes_) + (ino - 1) * kArchiveNodeSize;
  NodeView n;
  n.ino = ino;
  n.mode = Load<uint32_t>(r);
  n.uid = Load<uint32_t>(r + 4);
  n.gid = Load<uint32_t>(r + 8);
  n.nlink = Load<uint32_t>(r + 12);
  n.mtime_sec = Load<int64_t>(r + 16);
  n.mtime_nsec = Load<uint32_t>(r + 24);
  n.first_xattr = Load<uint32_t>(r + 28);
  // A node's xattr records end where the next node's begin.
  const uint64_t xattr_end = ino < info_.node_count ? Load<uint32_t>(r + kArchiveNodeSize + 28) : info_.xattr_count;
  const uint64_t a = Load<uint64_t>(r + 32);
  const uint64_t b = Load<uint64_t>(r + 40);
  auto bad = [&](const char* why) { Corrupt("inode " + std::to_string(ino) + ": " + why); };
  if (n.mtime_nsec >= 1000000000u) bad("mtime nanoseconds out of range");
  if (n.mode & ~uint32_t{0177777}) bad("unknown mode bits");
  if (n.first_xattr > xattr_end || xattr_end > info_.xattr_count) bad("xattr records lie outside XATTRS");
  n.xattr_count = static_cast<uint32_t>(xattr_end - n.first_xattr);
  switch (n.type()) {
    case kTypeFile: {
      const uint32_t layer = static_cast<uint32_t>(b >> 48);
      const uint64_t offset = b & ((uint64_t{1} << 48) - 1);
      if (layer >= info_.layer_count) bad("layer index out of range");
      const uint64_t layer_size = Load<uint64_t>(SectionBytes(layers_) + 8 + uint64_t{layer} * kArchiveLayerSize + 72);
      if (offset > layer_size || a > layer_size - offset) bad("content lies outside its layer");
      n.size = a;
      n.data_offset = offset;
      n.layer = layer;
      break;
    }
    case kTypeDir: {
      const uint32_t parent = static_cast<uint32_t>(a);
      const uint32_t count = static_cast<uint32_t>(a >> 32);
      if (parent >= info_.node_count) bad("parent index out of range");
      if (b > info_.dirent_count || count > info_.dirent_count - b) bad("directory entries lie outside DIRENTS");
      n.parent = Ino{parent} + 1;
      n.first_dirent = b;
      n.dirent_count = count;
      break;
    }
    case kTypeSymlink:
      if (b > strings_.length || a > strings_.length - b) bad("symlink target lies outside STRINGS");
      n.size = a;
      n.data_offset = b;
      break;
    case kTypeChar:
    case kTypeBlock:
      n.rdev = b;
      break;
    case kTypeFifo:
      break;
    default:
      bad("unknown file type");
  }
  return n;
}

void ArchiveView::RequireDir(const NodeView& node) {
  if (!node.is_dir()) {
    Fail(ErrorCode::kInvalidArgument, "inode " + std::to_string(node.ino) + " is a " + NodeTypeName(node.mode) +
                                          ", not a directory");
  }
}

DirEntryView ArchiveView::DirEntry(const NodeView& dir, uint64_t index) const {
  RequireDir(dir);
  if (index >= dir.dirent_count) Fail(ErrorCode::kInvalidArgument, "directory entry index out of range");
  const uint8_t* r = SectionBytes(dirents_) + (dir.first_dirent + index) * kArchiveDirentSize;
  const uint32_t node = Load<uint32_t>(r + 4);
  if (node >= info_.node_count) Corrupt("a directory entry of inode " + std::to_string(dir.ino) + " points past NODES");
  if (node == 0) Corrupt("a directory entry of inode " + std::to_string(dir.ino) + " points at the root");
  return DirEntryView{EntryName(Load<uint32_t>(r)), Ino{node} + 1};
}

Ino ArchiveView::Lookup(Ino dir, std::string_view name) const { return Lookup(Node(dir), name); }

Ino ArchiveView::Lookup(const NodeView& dir, std::string_view name) const {
  RequireDir(dir);
  uint64_t lo = 0, hi = dir.dirent_count;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    const DirEntryView entry = DirEntry(dir, mid);
    const int c = CompareNames(entry.name, name);
    if (c == 0) return entry.ino;
    if (c < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return 0;
}

std::string_view ArchiveView::ReadLink(Ino ino) const {
  const NodeView node = Node(ino);
  if (!node.is_symlink()) {
    Fail(ErrorCode::kInvalidArgument, "inode " + std::to_string(ino) + " is a " + NodeTypeName(node.mode) + ", not a symlink");
  }
  return String(node.data_offset, node.size, "a symlink target");
}

XattrView ArchiveView::Xattr(const NodeView& node, uint32_t index) const {
  if (index >= node.xattr_count) Fail(ErrorCode::kInvalidArgument, "xattr index out of range");
  const uint8_t* r = SectionBytes(xattrs_) + (uint64_t{node.first_xattr} + index) * kArchiveXattrSize;
  std::string_view name = String(Load<uint32_t>(r), Load<uint32_t>(r + 4), "an xattr name");
  if (name.empty() || name.find('\0') != std::string_view::npos) Corrupt("invalid xattr name");
  std::string_view value = String(Load<uint32_t>(r + 8), Load<uint32_t>(r + 12), "an xattr value");
  return XattrView{name, {reinterpret_cast<const uint8_t*>(value.data()), value.size()}};
}

std::optional<std::span<const uint8_t>> ArchiveView::GetXattr(Ino ino, std::string_view name) const {
  const NodeView node = Node(ino);
  for (uint32_t i = 0; i < node.xattr_count; ++i) {
    const XattrView x = Xattr(node, i);
    if (x.name == name) return x.value;
  }
  return std::nullopt;
}

LayerView ArchiveView::Layer(uint32_t index) const {
  if (index >= info_.layer_count) Fail(ErrorCode::kInvalidArgument, "layer index " + std::to_string(index) + " out of range");
  const uint8_t* r = SectionBytes(layers_) + 8 + uint64_t{index} * kArchiveLayerSize;
  const uint64_t cp_offset = Load<uint64_t>(r + 96);
  const uint64_t cp_length = Load<uint64_t>(r + 104);
  return LayerView{
      std::span<const uint8_t, 32>(r, 32),
      std::span<const uint8_t, 32>(r + 32, 32),
      Load<uint64_t>(r + 64),
      Load<uint64_t>(r + 72),
      String(Load<uint32_t>(r + 80), Load<uint32_t>(r + 84), "a layer media type"),
      Load<uint32_t>(r + 88),
      {SectionBytes(checkpoints_) + cp_offset, static_cast<size_t>(cp_length)},
  };
}

std::string_view ArchiveView::Config() const {
  return {reinterpret_cast<const char*>(SectionBytes(config_)), static_cast<size_t>(config_.length)};
}

Ino ArchiveView::LookupPath(std::string_view path) const {
  Ino ino = kRootIno;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view name = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (name.empty() || name == ".") continue;
    const NodeView node = Node(ino);
    if (!node.is_dir()) return 0;
    if (name == "..") {
      ino = node.parent;
      continue;
    }
    if (name.size() > 255) return 0;
    ino = Lookup(node, name);
    if (ino == 0) return 0;
  }
  return ino;
}

}  // namespace clip::core
