// libFuzzer target: ArchiveView over arbitrary bytes.
//
// A `.clip` file comes from disk (and, through a shared cache, possibly from
// another host), so FromBytes must turn any bytes into either a view or a
// CoreError, and every accessor on an accepted view must either answer or
// throw CoreError, whatever the records claim: never read outside the input,
// never loop forever, never crash. Each input is tried twice: as given, and
// with every section CRC and the header CRC recomputed from its section
// table, because random mutations almost never keep the checksums right and
// would otherwise never reach the record checks. Accepted views are then
// walked breadth-first from the root (bounded, since a crafted directory may
// list its own ancestors), looking up every listed name, reading links,
// xattrs, layers and config, and resolving a few paths.
//
// Seeds: fuzz/corpus/fuzz_archive/ holds archives written by the TypeScript
// writer (src/archive/writer.ts) for small trees with every node type,
// hardlinks, xattrs, non-ASCII and 255-byte names, a wide and a deep
// directory, plus a few mangled ones (a lying directory entry with CRCs
// resealed, a cut, a newer version). They were made with a node script
// over dist/src/archive/writer.js; any archive under 64 KiB makes a seed.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "../core/archive_view.h"
#include "../core/error.h"

namespace {

using clip::core::ArchiveView;
using clip::core::CoreError;
using clip::core::Ino;
using clip::core::NodeView;

uint64_t Get(const std::vector<uint8_t>& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{b[at + i]} << (8 * i);
  return v;
}
void Put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// Recomputes the CRCs the section table implies (what fits in the input).
void Reseal(std::vector<uint8_t>& b) {
  if (b.size() < 64) return;
  const uint64_t count = std::min<uint64_t>(Get(b, 12, 4), (b.size() - 64) / 32);
  for (uint64_t i = 0; i < count; ++i) {
    const size_t e = 64 + i * 32;
    const uint64_t offset = Get(b, e + 8, 8), length = Get(b, e + 16, 8);
    if (offset <= b.size() && length <= b.size() - offset) {
      Put32(b, e + 24, static_cast<uint32_t>(crc32(0, b.data() + offset, static_cast<uInt>(length))));
    }
  }
  uint32_t crc = static_cast<uint32_t>(crc32(0, b.data(), 24));
  crc = static_cast<uint32_t>(crc32(crc, b.data() + 64, static_cast<uInt>(count * 32)));
  Put32(b, 24, crc);
}

template <typename Fn>
void Try(Fn&& fn) {
  try {
    fn();
  } catch (const CoreError&) {
  }
}

void Exercise(const ArchiveView& view) {
  constexpr size_t kMaxVisits = 4096;
  std::vector<std::string> names;
  std::deque<Ino> queue = {clip::core::kRootIno};
  size_t visits = 0;
  while (!queue.empty() && visits++ < kMaxVisits) {
    const Ino ino = queue.front();
    queue.pop_front();
    Try([&] {
      const NodeView node = view.Node(ino);
      if (node.ino != ino) __builtin_trap();
      for (uint32_t i = 0; i < node.xattr_count && i < 64; ++i) {
        Try([&] {
          const auto x = view.Xattr(node, i);
          auto again = view.GetXattr(ino, x.name);
          if (!again) __builtin_trap();  // the first record with a name is always found
        });
      }
      Try([&] { view.GetXattr(ino, "user.none"); });
      if (node.is_symlink()) Try([&] { view.ReadLink(ino); });
      if (node.is_dir()) {
        Try([&] { view.Node(node.parent); });
        Try([&] {
          view.ReadDir(ino, 0, [&](const clip::core::DirEntryView& e, uint64_t next) {
            if (e.name.empty() || e.name.size() > 255 || next == 0) __builtin_trap();
            if (names.size() < 64) names.emplace_back(e.name);
            Try([&] { view.Lookup(node, e.name); });
            queue.push_back(e.ino);
            return queue.size() < kMaxVisits;
          });
        });
        Try([&] { view.Lookup(node, "zzzz-not-there"); });
        Try([&] { view.ReadDir(ino, node.dirent_count / 2, [](const clip::core::DirEntryView&, uint64_t) { return false; }); });
      }
    });
  }
  for (uint32_t i = 0; i < view.layer_count() && i < 16; ++i) {
    Try([&] {
      const auto layer = view.Layer(i);
      volatile uint8_t sink = 0;
      if (!layer.checkpoints.empty()) sink = static_cast<uint8_t>(sink + layer.checkpoints.back());
      if (!layer.media_type.empty()) sink = static_cast<uint8_t>(sink + static_cast<uint8_t>(layer.media_type.back()));
    });
  }
  Try([&] { view.Layer(view.layer_count()); });
  const std::string_view config = view.Config();
  volatile char last = config.empty() ? 0 : config.back();
  (void)last;
  std::string path;
  for (const std::string& name : names) {
    path += name;
    Try([&] { view.LookupPath(path); });
    path += "/../";
    Try([&] { view.LookupPath(path + name); });
    path += name + "/";
  }
  Try([&] { view.LookupPath("/../../a/./b//c"); });
  Try([&] { view.Node(0); });
  Try([&] { view.Node(view.node_count() + 1); });
}

void TryArchive(std::span<const uint8_t> bytes) {
  try {
    ArchiveView view = ArchiveView::FromBytes(bytes);
    Exercise(view);
  } catch (const CoreError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  TryArchive({data, size});
  if (size >= 64) {
    std::vector<uint8_t> resealed(data, data + size);
    Reseal(resealed);
    TryArchive(resealed);
  }
  return 0;
}
