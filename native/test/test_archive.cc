// Tests of ArchiveView on archives built here byte by byte (the layout in
// archive_view.h), independent of the TypeScript writer: every accessor on
// a small tree with each node type, hardlinks and xattrs; binary search on a
// large directory; concurrent readers; and damage of every kind: foreign
// files, newer versions, truncation at every length, single bit flips
// (caught by the CRCs), and records that lie about offsets with their CRCs
// recomputed (caught by the accessors' bounds checks).
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../core/archive_view.h"
#include "harness.h"

namespace {

using clip::core::ArchiveView;
using clip::core::CoreError;
using clip::core::ErrorCode;
using clip::core::Ino;
using clip::core::kRootIno;
using clip::core::NodeView;
using clip::test::FailCheck;
using clip::test::TempDir;
using clip::test::WriteFile;

using Bytes = std::vector<uint8_t>;

void Put32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(Bytes& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Get32(const Bytes& b, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{b[at + i]} << (8 * i);
  return v;
}
uint64_t Get64(const Bytes& b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{b[at + i]} << (8 * i);
  return v;
}

// Recomputes every section CRC and the header CRC from the section table,
// so a deliberate lie in a record reaches the accessors' checks.
void Reseal(Bytes& b) {
  const uint64_t count = Get32(b, 12);
  const uint64_t fits = std::min<uint64_t>(count, (b.size() - 64) / 32);
  for (uint64_t i = 0; i < fits; ++i) {
    const size_t e = 64 + i * 32;
    const uint64_t offset = Get64(b, e + 8), length = Get64(b, e + 16);
    if (offset <= b.size() && length <= b.size() - offset) {
      Put32(b, e + 24, static_cast<uint32_t>(crc32(0, b.data() + offset, static_cast<uInt>(length))));
    }
  }
  uint32_t crc = static_cast<uint32_t>(crc32(0, b.data(), 24));
  crc = static_cast<uint32_t>(crc32(crc, b.data() + 64, static_cast<uInt>(std::min<uint64_t>(count * 32, b.size() - 64))));
  Put32(b, 24, crc);
}

// Builds archives record by record. Nodes are added in inode order; a
// directory's entries are given as (name, node index) and sorted here.
class Builder {
 public:
  // a, b, c are the type-dependent fields before packing: file (size,
  // offset, layer), directory (parent, first entry, entry count), symlink
  // (length, offset), device (-, rdev).
  struct NodeRecord {
    uint32_t mode = 0, uid = 0, gid = 0, nlink = 1;
    int64_t mtime_sec = 0;
    uint32_t mtime_nsec = 0;
    uint64_t a = 0, b = 0;
    uint32_t c = 0;
    std::optional<uint32_t> first_xattr = std::nullopt;  // set only to lie; Build computes it
  };

  Builder() {
    layers_.resize(8);
    config_ = R"({"reference":"test"})";
  }

  // Returns the STRINGS offset of a raw string.
  uint32_t Raw(const std::string& s) {
    const uint32_t offset = static_cast<uint32_t>(strings_.size());
    strings_.insert(strings_.end(), s.begin(), s.end());
    return offset;
  }
  uint32_t Name(const std::string& s) {
    const uint32_t offset = static_cast<uint32_t>(strings_.size());
    strings_.push_back(static_cast<uint8_t>(s.size()));
    strings_.insert(strings_.end(), s.begin(), s.end());
    return offset;
  }

  uint32_t AddLayer(uint64_t uncompressed_size, const Bytes& checkpoints, const std::string& media_type) {
    const size_t at = layers_.size();
    layers_.resize(at + 112);
    for (int i = 0; i < 32; ++i) layers_[at + i] = static_cast<uint8_t>(i);
    for (int i = 0; i < 32; ++i) layers_[at + 32 + i] = static_cast<uint8_t>(100 + i);
    Put64(layers_, at + 64, uncompressed_size / 3);
    Put64(layers_, at + 72, uncompressed_size);
    Put32(layers_, at + 80, Raw(media_type));
    Put32(layers_, at + 84, static_cast<uint32_t>(media_type.size()));
    Put32(layers_, at + 88, 1);
    Put64(layers_, at + 96, checkpoints_.size());
    Put64(layers_, at + 104, checkpoints.size());
    checkpoints_.insert(checkpoints_.end(), checkpoints.begin(), checkpoints.end());
    while (checkpoints_.size() % 8) checkpoints_.push_back(0);
    Put32(layers_, 0, static_cast<uint32_t>((layers_.size() - 8) / 112));
    return static_cast<uint32_t>((layers_.size() - 8) / 112 - 1);
  }

  // Node index of the new node.
  uint32_t AddNode(const NodeRecord& n) {
    nodes_.push_back(n);
    return static_cast<uint32_t>(nodes_.size() - 1);
  }
  NodeRecord& node(uint32_t index) { return nodes_[index]; }

  void SetXattrs(uint32_t node, const std::vector<std::pair<std::string, std::string>>& xattrs) { xattrs_by_node_[node] = xattrs; }

  void SetEntries(uint32_t dir, std::vector<std::pair<std::string, uint32_t>> entries) {
    std::sort(entries.begin(), entries.end());  // std::string order is byte order
    nodes_[dir].b = dirents_.size() / 8;
    nodes_[dir].c = static_cast<uint32_t>(entries.size());
    for (const auto& [name, index] : entries) {
      const size_t at = dirents_.size();
      dirents_.resize(at + 8);
      Put32(dirents_, at, Name(name));
      Put32(dirents_, at + 4, index);
    }
  }

  void SetConfig(const std::string& json) { config_ = json; }
  // Overwrites a u32 of XATTRS record `record` once Build has laid them out.
  void PutXattrField(size_t record, size_t field, uint32_t value) { xattr_pokes_.push_back({record * 16 + field, value}); }

  Bytes Build() {
    // XATTRS in node order: a node's records run up to the next node's first.
    Bytes xattrs;
    Bytes strings = strings_;
    std::vector<uint32_t> first(nodes_.size());
    for (size_t i = 0; i < nodes_.size(); ++i) {
      first[i] = static_cast<uint32_t>(xattrs.size() / 16);
      auto it = xattrs_by_node_.find(static_cast<uint32_t>(i));
      if (it == xattrs_by_node_.end()) continue;
      for (const auto& [name, value] : it->second) {
        const size_t at = xattrs.size();
        xattrs.resize(at + 16);
        Put32(xattrs, at, static_cast<uint32_t>(strings.size()));
        Put32(xattrs, at + 4, static_cast<uint32_t>(name.size()));
        strings.insert(strings.end(), name.begin(), name.end());
        Put32(xattrs, at + 8, static_cast<uint32_t>(strings.size()));
        Put32(xattrs, at + 12, static_cast<uint32_t>(value.size()));
        strings.insert(strings.end(), value.begin(), value.end());
      }
    }
    for (const auto& [at, value] : xattr_pokes_) Put32(xattrs, at, value);
    Bytes nodes(nodes_.size() * 48);
    for (size_t i = 0; i < nodes_.size(); ++i) {
      const NodeRecord& n = nodes_[i];
      const size_t at = i * 48;
      Put32(nodes, at, n.mode);
      Put32(nodes, at + 4, n.uid);
      Put32(nodes, at + 8, n.gid);
      Put32(nodes, at + 12, n.nlink);
      Put64(nodes, at + 16, static_cast<uint64_t>(n.mtime_sec));
      Put32(nodes, at + 24, n.mtime_nsec);
      Put32(nodes, at + 28, n.first_xattr.value_or(first[i]));
      switch (n.mode & 0170000) {
        case 0100000:
          Put64(nodes, at + 32, n.a);
          Put64(nodes, at + 40, n.b | (uint64_t{n.c} << 48));
          break;
        case 0040000:
          Put64(nodes, at + 32, (n.a & 0xffffffffu) | (uint64_t{n.c} << 32));
          Put64(nodes, at + 40, n.b);
          break;
        default:
          Put64(nodes, at + 32, n.a);
          Put64(nodes, at + 40, n.b);
      }
    }
    const std::vector<std::pair<uint32_t, Bytes>> sections = {
        {1, strings}, {2, layers_}, {3, nodes}, {4, dirents_}, {5, xattrs}, {6, checkpoints_}, {7, Bytes(config_.begin(), config_.end())},
    };
    Bytes out(64 + sections.size() * 32);
    Put32(out, 12, static_cast<uint32_t>(sections.size()));
    std::memcpy(out.data(), "CLIPARCH", 8);
    Put32(out, 8, 1);
    for (size_t i = 0; i < sections.size(); ++i) {
      while (out.size() % 8) out.push_back(0);
      const size_t e = 64 + i * 32;
      Put32(out, e, sections[i].first);
      Put64(out, e + 8, out.size());
      Put64(out, e + 16, sections[i].second.size());
      out.insert(out.end(), sections[i].second.begin(), sections[i].second.end());
    }
    Put64(out, 16, out.size());
    Reseal(out);
    return out;
  }

 private:
  Bytes strings_, layers_, dirents_, checkpoints_;
  std::vector<NodeRecord> nodes_;
  std::map<uint32_t, std::vector<std::pair<std::string, std::string>>> xattrs_by_node_;
  std::vector<std::pair<size_t, uint32_t>> xattr_pokes_;
  std::string config_;
};

constexpr uint32_t kDir = 0040000, kFile = 0100000, kLink = 0120000, kChar = 0020000, kBlock = 0060000, kFifo = 0010000;

// The sample tree:
//   /            (node 0)   entries: bin, dev, empty, hard, hello.txt, link, pipe, z-last
//   /bin         (node 1)   entries: sh -> node 2
//   /bin/sh      (node 2)   file, layer 0, [1000, +50)
//   /hello.txt   (node 3)   file, layer 1, [512, +12), setuid, 2 xattrs, nlink 2 (also /hard)
//   /link        (node 4)   symlink -> "hello.txt"
//   /dev         (node 5)   dir with "null" (node 6, char 1:3) and "sda" (node 7, block 8:0)
//   /pipe        (node 8)   fifo
//   /empty       (node 9)   empty directory
//   /z-last      (node 10)  file, 0 bytes
struct Sample {
  Builder builder;
  Bytes bytes;
};

Sample MakeSample() {
  Sample s;
  Builder& b = s.builder;
  b.AddLayer(4096, Bytes{'C', 'K', 'P', 'T', '0'}, "application/vnd.oci.image.layer.v1.tar+gzip");
  b.AddLayer(8192, Bytes{'C', 'K', 'P', 'T', '1', '1'}, "application/vnd.oci.image.layer.v1.tar");
  b.AddNode({.mode = kDir | 0755, .nlink = 5, .mtime_sec = 1700000000, .mtime_nsec = 5, .a = 0});       // 0 /
  b.AddNode({.mode = kDir | 0755, .nlink = 2, .a = 0});                                                   // 1 /bin
  b.AddNode({.mode = kFile | 0755, .uid = 1, .gid = 2, .a = 50, .b = 1000, .c = 0});                     // 2 /bin/sh
  b.AddNode({.mode = kFile | 04755, .uid = 1000, .gid = 1001, .nlink = 2, .mtime_sec = -5, .mtime_nsec = 999999999,
             .a = 12, .b = 512, .c = 1});                                                                  // 3 /hello.txt
  b.AddNode({.mode = kLink | 0777});                                                                      // 4 /link
  b.AddNode({.mode = kDir | 01777, .nlink = 2, .a = 0});                                                  // 5 /dev
  b.AddNode({.mode = kChar | 0666, .b = (1u << 8) | 3});                                                 // 6 /dev/null
  b.AddNode({.mode = kBlock | 0660, .gid = 6, .b = (8u << 8) | 0});                                      // 7 /dev/sda
  b.AddNode({.mode = kFifo | 0644});                                                                      // 8 /pipe
  b.AddNode({.mode = kDir | 0700, .nlink = 2, .a = 0});                                                   // 9 /empty
  b.AddNode({.mode = kFile | 0644, .a = 0, .b = 4096, .c = 0});                                          // 10 /z-last
  b.node(4).b = b.Raw("hello.txt");
  b.node(4).a = 9;
  b.SetXattrs(3, {{"security.capability", std::string("\x01\x00\x00\x02\x00\x20", 6)}, {"user.note", "hi"}});
  b.SetEntries(0, {{"bin", 1}, {"hello.txt", 3}, {"hard", 3}, {"link", 4}, {"dev", 5}, {"pipe", 8}, {"empty", 9}, {"z-last", 10}});
  b.SetEntries(1, {{"sh", 2}});
  b.node(1).a = 0;
  b.SetEntries(5, {{"null", 6}, {"sda", 7}});
  b.SetEntries(9, {});
  s.bytes = b.Build();
  return s;
}

std::vector<std::string> List(const ArchiveView& view, Ino dir, uint64_t offset = 0) {
  std::vector<std::string> names;
  view.ReadDir(dir, offset, [&](const clip::core::DirEntryView& e, uint64_t) {
    names.emplace_back(e.name);
    return true;
  });
  return names;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

// Expects `fn` to throw kCorrupt (or, with any_code, any CoreError); true if it did.
template <typename Fn>
bool ThrowsCorrupt(Fn&& fn) {
  try {
    fn();
  } catch (const CoreError& e) {
    return e.code() == ErrorCode::kCorrupt;
  }
  return false;
}

// Touches everything reachable from the root; returns the number of nodes visited.
size_t WalkAll(const ArchiveView& view) {
  size_t visited = 0;
  std::vector<Ino> stack = {kRootIno};
  std::vector<bool> seen(view.node_count() + 1);
  while (!stack.empty()) {
    const Ino ino = stack.back();
    stack.pop_back();
    if (seen[ino]) continue;
    seen[ino] = true;
    ++visited;
    const NodeView n = view.Node(ino);
    for (uint32_t i = 0; i < n.xattr_count; ++i) view.Xattr(n, i);
    if (n.is_symlink()) view.ReadLink(ino);
    if (n.is_dir()) {
      view.ReadDir(ino, 0, [&](const clip::core::DirEntryView& e, uint64_t) {
        if (view.Lookup(n, e.name) == 0) FailCheck(__FILE__, __LINE__, "a listed name is not found");
        stack.push_back(e.ino);
        return true;
      });
    }
  }
  for (uint32_t i = 0; i < view.layer_count(); ++i) view.Layer(i);
  view.Config();
  return visited;
}

TEST(archive_reads_every_node_type) {
  Sample s = MakeSample();
  ArchiveView view = ArchiveView::FromBytes(s.bytes);
  CHECK_EQ(view.node_count(), 11u);
  CHECK_EQ(view.layer_count(), 2u);
  CHECK_EQ(view.info().dirent_count, 11u);
  CHECK_EQ(view.info().xattr_count, 2u);

  NodeView root = view.Node(kRootIno);
  CHECK(root.is_dir());
  CHECK_EQ(root.mode, kDir | 0755);
  CHECK_EQ(root.nlink, 5u);
  CHECK_EQ(root.mtime_sec, 1700000000);
  CHECK_EQ(root.mtime_nsec, 5u);
  CHECK_EQ(root.parent, kRootIno);
  CHECK_EQ(root.dirent_count, 8u);
  CHECK_EQ(Join(List(view, kRootIno)), "bin,dev,empty,hard,hello.txt,link,pipe,z-last");

  const Ino hello = view.Lookup(kRootIno, "hello.txt");
  CHECK_EQ(hello, 4u);
  CHECK_EQ(view.Lookup(kRootIno, "hard"), hello);
  NodeView h = view.Node(hello);
  CHECK(h.is_file());
  CHECK_EQ(h.mode, kFile | 04755);
  CHECK_EQ(h.uid, 1000u);
  CHECK_EQ(h.gid, 1001u);
  CHECK_EQ(h.nlink, 2u);
  CHECK_EQ(h.mtime_sec, -5);
  CHECK_EQ(h.mtime_nsec, 999999999u);
  CHECK_EQ(h.size, 12u);
  CHECK_EQ(h.data_offset, 512u);
  CHECK_EQ(h.layer, 1u);
  CHECK_EQ(h.xattr_count, 2u);
  auto cap = view.GetXattr(hello, "security.capability");
  CHECK(cap.has_value());
  CHECK_EQ(cap->size(), 6u);
  CHECK_EQ(int{(*cap)[3]}, 2);
  CHECK_EQ(std::string(reinterpret_cast<const char*>(view.GetXattr(hello, "user.note")->data()), 2), "hi");
  CHECK(!view.GetXattr(hello, "user.none").has_value());
  CHECK_EQ(view.Xattr(h, 0).name, "security.capability");

  const Ino link = view.LookupPath("link");
  CHECK_EQ(view.ReadLink(link), "hello.txt");
  CHECK_EQ(view.Node(link).size, 9u);
  CHECK_THROWS_CODE(view.ReadLink(hello), ErrorCode::kInvalidArgument);

  NodeView null_dev = view.Node(view.LookupPath("/dev/null"));
  CHECK_EQ(null_dev.type(), kChar);
  CHECK_EQ(null_dev.rdev, (1u << 8) | 3u);
  CHECK_EQ(view.Node(view.LookupPath("dev/sda")).type(), kBlock);
  CHECK_EQ(view.Node(view.LookupPath("pipe")).type(), kFifo);
  CHECK_EQ(view.Node(view.LookupPath("dev")).mode, kDir | 01777);

  NodeView sh = view.Node(view.LookupPath("bin/sh"));
  CHECK_EQ(sh.size, 50u);
  CHECK_EQ(sh.uid, 1u);
  CHECK_EQ(view.Node(view.LookupPath("bin")).parent, kRootIno);

  CHECK_EQ(view.LookupPath(""), kRootIno);
  CHECK_EQ(view.LookupPath("/"), kRootIno);
  CHECK_EQ(view.LookupPath("./bin//sh/"), view.LookupPath("bin/sh"));
  CHECK_EQ(view.LookupPath("bin/../dev/./null"), view.LookupPath("dev/null"));
  CHECK_EQ(view.LookupPath("../../bin"), view.LookupPath("bin"));
  CHECK_EQ(view.LookupPath("bin/sh/x"), 0u);   // through a file
  CHECK_EQ(view.LookupPath("link/x"), 0u);     // symlinks are not followed
  CHECK_EQ(view.LookupPath("nope"), 0u);
  CHECK_EQ(view.Lookup(kRootIno, "a"), 0u);     // before the first
  CHECK_EQ(view.Lookup(kRootIno, "zz"), 0u);    // after the last
  CHECK_EQ(view.Lookup(kRootIno, "hello"), 0u); // a prefix of an entry
  CHECK_EQ(view.Lookup(kRootIno, "hello.txt2"), 0u);
  CHECK_EQ(view.Lookup(kRootIno, ""), 0u);
  CHECK_EQ(List(view, view.LookupPath("empty")).size(), 0u);
  CHECK_THROWS_CODE(view.Lookup(hello, "x"), ErrorCode::kInvalidArgument);
  CHECK_THROWS_CODE(view.Node(0), ErrorCode::kInvalidArgument);
  CHECK_THROWS_CODE(view.Node(12), ErrorCode::kInvalidArgument);

  auto l1 = view.Layer(1);
  CHECK_EQ(l1.uncompressed_size, 8192u);
  CHECK_EQ(l1.media_type, "application/vnd.oci.image.layer.v1.tar");
  CHECK_EQ(l1.checkpoints.size(), 6u);
  CHECK_EQ(int{l1.checkpoints[5]}, '1');
  CHECK_EQ(int{l1.digest[31]}, 31);
  CHECK_EQ(int{l1.diff_id[0]}, 100);
  CHECK_EQ(view.Layer(0).checkpoints.size(), 5u);
  CHECK_THROWS_CODE(view.Layer(2), ErrorCode::kInvalidArgument);
  CHECK_EQ(view.Config(), R"({"reference":"test"})");
  CHECK_EQ(WalkAll(view), 11u);
}

TEST(archive_readdir_resumes_at_an_offset) {
  Sample s = MakeSample();
  ArchiveView view = ArchiveView::FromBytes(s.bytes);
  CHECK_EQ(Join(List(view, kRootIno, 6)), "pipe,z-last");
  CHECK_EQ(List(view, kRootIno, 8).size(), 0u);
  CHECK_EQ(List(view, kRootIno, 100).size(), 0u);
  // Stop after two, resume from the offset given.
  uint64_t resume = 0;
  std::vector<std::string> got;
  view.ReadDir(kRootIno, 0, [&](const clip::core::DirEntryView& e, uint64_t next) {
    got.emplace_back(e.name);
    resume = next;
    return got.size() < 2;
  });
  CHECK_EQ(resume, 2u);
  CHECK_EQ(Join(List(view, kRootIno, resume)), "empty,hard,hello.txt,link,pipe,z-last");
}

TEST(archive_opens_a_file_by_mmap) {
  Sample s = MakeSample();
  const std::string path = TempDir() + "/sample.clip";
  WriteFile(path, s.bytes);
  ArchiveView view = ArchiveView::Open(path);
  ArchiveView moved = std::move(view);
  CHECK_EQ(moved.ReadLink(moved.LookupPath("link")), "hello.txt");
  CHECK_THROWS_CODE(ArchiveView::Open(TempDir() + "/missing.clip"), ErrorCode::kIo);
  WriteFile(TempDir() + "/empty.clip", {});
  CHECK_THROWS_CODE(ArchiveView::Open(TempDir() + "/empty.clip"), ErrorCode::kCorrupt);
}

TEST(archive_binary_search_finds_every_name_in_a_large_directory) {
  Builder b;
  b.AddLayer(1 << 20, {}, "t");
  b.AddNode({.mode = kDir | 0755, .nlink = 2});
  std::vector<std::pair<std::string, uint32_t>> entries;
  for (uint32_t i = 0; i < 5000; ++i) {
    // Names of varying length, bytes above 0x7f (UTF-8), shared prefixes.
    std::string name = "f" + std::to_string(i * 7919 % 5000);
    if (i % 3 == 0) name += "\xc3\xa9";
    if (i % 5 == 0) name = std::string(1 + i % 200, 'x') + name;
    entries.emplace_back(name, b.AddNode({.mode = kFile | 0644, .a = 1, .b = i, .c = 0}));
  }
  b.SetEntries(0, entries);
  Bytes bytes = b.Build();
  ArchiveView view = ArchiveView::FromBytes(bytes);
  for (const auto& [name, index] : entries) {
    CHECK_EQ(view.Lookup(kRootIno, name), Ino{index} + 1);
    CHECK_EQ(view.Lookup(kRootIno, name + "\x01"), 0u);
  }
}

TEST(archive_concurrent_readers_agree) {
  Sample s = MakeSample();
  ArchiveView view = ArchiveView::FromBytes(s.bytes);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        if (view.LookupPath("dev/null") != 7 || view.Lookup(kRootIno, "z-last") != 11 ||
            view.ReadLink(5) != "hello.txt" || view.Node(4).size != 12) {
          ++wrong;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK_EQ(wrong.load(), 0);
}

TEST(archive_refuses_foreign_and_newer_files) {
  auto message = [](const Bytes& bytes) {
    try {
      ArchiveView::FromBytes(bytes);
    } catch (const CoreError& e) {
      return std::string(clip::core::ErrorCodeName(e.code())) + " " + e.what();
    }
    return std::string("accepted");
  };
  CHECK_EQ(message({}), "ECORRUPT not a clip archive");
  CHECK_EQ(message(Bytes{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0}), "ECORRUPT not a clip archive");
  Bytes text(4096, 'a');
  CHECK_EQ(message(text), "ECORRUPT not a clip archive");
  Sample s = MakeSample();
  Bytes newer = s.bytes;
  Put32(newer, 8, 2);
  Reseal(newer);
  CHECK_THROWS_CODE(ArchiveView::FromBytes(newer), ErrorCode::kUnsupported);
  Bytes zero = s.bytes;
  Put32(zero, 8, 0);
  Reseal(zero);
  CHECK_THROWS_CODE(ArchiveView::FromBytes(zero), ErrorCode::kCorrupt);
  Bytes longer = s.bytes;
  longer.push_back(0);
  CHECK_THROWS_CODE(ArchiveView::FromBytes(longer), ErrorCode::kCorrupt);
}

TEST(archive_truncated_at_every_length_is_corrupt) {
  Sample s = MakeSample();
  for (size_t n = 0; n < s.bytes.size(); ++n) {
    Bytes cut(s.bytes.begin(), s.bytes.begin() + static_cast<ptrdiff_t>(n));
    if (!ThrowsCorrupt([&] { ArchiveView::FromBytes(cut); })) FailCheck(__FILE__, __LINE__, "accepted a cut at " + std::to_string(n));
  }
}

TEST(archive_any_bit_flip_is_caught) {
  Sample s = MakeSample();
  for (size_t i = 0; i < s.bytes.size(); ++i) {
    for (int bit : {0, 5}) {
      Bytes flipped = s.bytes;
      flipped[i] ^= static_cast<uint8_t>(1u << bit);
      bool refused = false;
      try {
        ArchiveView::FromBytes(flipped);
      } catch (const CoreError& e) {
        // A flipped version byte can read as a newer version.
        refused = e.code() == ErrorCode::kCorrupt || (i >= 8 && i < 12 && e.code() == ErrorCode::kUnsupported);
        if (!refused) FailCheck(__FILE__, __LINE__, std::string("wrong error: ") + e.what());
      }
      if (!refused) {
        // Accepted: only padding between sections is outside every CRC, by design.
        bool in_section = false;
        const uint32_t count = Get32(s.bytes, 12);
        for (uint32_t k = 0; k < count; ++k) {
          const uint64_t off = Get64(s.bytes, 64 + k * 32 + 8), len = Get64(s.bytes, 64 + k * 32 + 16);
          if (i >= off && i < off + len) in_section = true;
        }
        if (i < 64 + count * 32 || in_section) FailCheck(__FILE__, __LINE__, "a flip at byte " + std::to_string(i) + " went unnoticed");
      }
    }
  }
}

// Records that lie, with their CRCs recomputed: Open may accept them, but
// the access that meets the lie must throw kCorrupt.
TEST(archive_lying_records_fail_at_access) {
  struct Case {
    const char* name;
    std::function<void(Builder&)> mangle;
    std::function<void(const ArchiveView&)> access;
  };
  const std::vector<Case> cases = {
      {"dirent node index past NODES", [](Builder& b) { b.SetEntries(1, {{"sh", 99}}); },
       [](const ArchiveView& v) { v.LookupPath("bin/sh"); }},
      {"dirent points at the root", [](Builder& b) { b.SetEntries(1, {{"sh", 0}}); },
       [](const ArchiveView& v) { v.LookupPath("bin/sh"); }},
      {"dirent range past DIRENTS", [](Builder& b) { b.node(9).b = 1000; b.node(9).c = 2; },
       [](const ArchiveView& v) { v.Node(10); }},
      {"file layer out of range", [](Builder& b) { b.node(2).c = 7; }, [](const ArchiveView& v) { v.Node(3); }},
      {"file content past its layer", [](Builder& b) { b.node(2).b = 4090; }, [](const ArchiveView& v) { v.Node(3); }},
      {"file size wraps around", [](Builder& b) { b.node(2).a = ~uint64_t{0}; }, [](const ArchiveView& v) { v.Node(3); }},
      {"symlink target past STRINGS", [](Builder& b) { b.node(4).b = 1 << 20; }, [](const ArchiveView& v) { v.ReadLink(5); }},
      {"symlink length wraps", [](Builder& b) { b.node(4).a = ~uint64_t{0} - 3; }, [](const ArchiveView& v) { v.ReadLink(5); }},
      {"unknown file type", [](Builder& b) { b.node(8).mode = 0140644; }, [](const ArchiveView& v) { v.Node(9); }},
      {"mode bits above the type", [](Builder& b) { b.node(8).mode |= 0x10000000; }, [](const ArchiveView& v) { v.Node(9); }},
      {"xattr records past XATTRS", [](Builder& b) { b.node(4).first_xattr = 9; }, [](const ArchiveView& v) { v.Node(4); }},
      {"xattr records run backwards", [](Builder& b) { b.node(3).first_xattr = 2; b.node(4).first_xattr = 1; },
       [](const ArchiveView& v) { v.Node(4); }},
      {"nanoseconds out of range", [](Builder& b) { b.node(3).mtime_nsec = 1000000000; }, [](const ArchiveView& v) { v.Node(4); }},
      {"parent out of range", [](Builder& b) { b.node(1).a = 11; }, [](const ArchiveView& v) { v.Node(2); }},
      {"entry name with a slash", [](Builder& b) { b.SetEntries(5, {{"a/b", 6}}); }, [](const ArchiveView& v) { v.LookupPath("dev/x"); }},
      {"entry name '..'", [](Builder& b) { b.SetEntries(5, {{"..", 6}}); }, [](const ArchiveView& v) { WalkAll(v); }},
      {"xattr name past STRINGS", [](Builder& b) { b.PutXattrField(1, 0, 1 << 20); },
       [](const ArchiveView& v) { WalkAll(v); }},
      {"xattr value length wraps", [](Builder& b) { b.PutXattrField(0, 12, 0xffffffff); },
       [](const ArchiveView& v) { v.GetXattr(4, "user.note"); }},
      {"xattr name with a NUL", [](Builder& b) { b.PutXattrField(0, 4, 21); },
       [](const ArchiveView& v) { v.GetXattr(4, "user.none"); }},
  };
  for (const Case& c : cases) {
    Sample s = MakeSample();
    c.mangle(s.builder);
    Bytes bytes = s.builder.Build();
    bool caught = false;
    try {
      ArchiveView view = ArchiveView::FromBytes(bytes);
      c.access(view);
    } catch (const CoreError& e) {
      caught = e.code() == ErrorCode::kCorrupt;
    }
    if (!caught) FailCheck(__FILE__, __LINE__, std::string("not caught: ") + c.name);
  }
  // Structural lies Open itself must catch.
  Sample s = MakeSample();
  auto mangled = [&](const std::function<void(Bytes&)>& fn) {
    Bytes b = s.bytes;
    fn(b);
    Reseal(b);
    return ThrowsCorrupt([&] { ArchiveView::FromBytes(b); });
  };
  CHECK(mangled([](Bytes& b) { Put64(b, 64 + 8, 12); }));                      // misaligned section
  CHECK(mangled([](Bytes& b) { Put64(b, 64 + 16, b.size()); }));               // section past the end
  CHECK(mangled([](Bytes& b) { Put32(b, 64 + 32, 1); }));                      // duplicate id
  CHECK(mangled([](Bytes& b) { Put32(b, 64 + 32 * 6, 9); }));                  // CONFIG missing (id 9 unknown)
  CHECK(mangled([](Bytes& b) { Put64(b, 64 + 32 * 2 + 16, 57); }));            // NODES not whole records
  CHECK(mangled([](Bytes& b) { Put32(b, 12, 200); }));                         // section count
  CHECK(mangled([](Bytes& b) { Put64(b, 64 + 32 * 1 + 8, Get64(b, 64 + 8)); }));  // overlapping sections
  CHECK(mangled([](Bytes& b) { b[40] = 1; }));                                 // reserved header byte
  CHECK(mangled([](Bytes& b) {                                                 // root not a directory
    const uint64_t nodes = Get64(b, 64 + 32 * 2 + 8);
    Put32(b, nodes, kFile | 0644);
  }));
  CHECK(mangled([](Bytes& b) {                                                 // layer checkpoints outside
    const uint64_t layers = Get64(b, 64 + 32 + 8);
    Put64(b, layers + 8 + 104, 1 << 20);
  }));
  CHECK(mangled([](Bytes& b) {                                                 // layer count lies
    const uint64_t layers = Get64(b, 64 + 32 + 8);
    Put32(b, layers, 3);
  }));
}

}  // namespace
