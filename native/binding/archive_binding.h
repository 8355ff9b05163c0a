// JavaScript face of core::ArchiveView: class ArchiveReader, a `.clip`
// archive opened by mmap, for TypeScript's inspect/ls/tests (the FUSE
// session uses ArchiveView directly, with no JavaScript in the way).
//
// Every method is synchronous: each one reads a few fixed-size records from
// the mapping (mapping and validating happen once, in the constructor).
// Inode numbers are plain numbers (root = 1); a missing name is null, not an
// error. Core errors become ClipErrors with their code (ECORRUPT for damage,
// EINVAL for a bad inode or a wrong node type).
#pragma once

#include <napi.h>

#include <memory>

#include "../core/archive_view.h"

namespace clip::binding {

class ArchiveReaderWrap : public Napi::ObjectWrap<ArchiveReaderWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new ArchiveReader(path: string)
  explicit ArchiveReaderWrap(const Napi::CallbackInfo& info);

  // The mapped archive, shared with whoever takes it (a mount session serves
  // from the same mapping as the store's reader instead of mapping the file
  // again: each mapping's pages count in the process's RSS). Null once closed.
  std::shared_ptr<const core::ArchiveView> shared_view() const { return view_; }
  // `value`'s mapping when it is an open ArchiveReader; EINVAL naming
  // `what` otherwise (not one, or closed).
  static std::shared_ptr<const core::ArchiveView> SharedViewOf(Napi::Env env, Napi::Value value, const std::string& what);

 private:
  // info(): {version, fileSize, nodeCount, direntCount, xattrCount, layerCount, stringsSize, checkpointsSize, configSize}
  Napi::Value Info(const Napi::CallbackInfo& info);
  // lookupPath(path: string): number | null
  Napi::Value LookupPath(const Napi::CallbackInfo& info);
  // lookup(dirIno: number, name: string): number | null
  Napi::Value Lookup(const Napi::CallbackInfo& info);
  // stat(ino): {ino, type, mode, uid, gid, nlink, size, mtimeSec, mtimeNsec, devmajor, devminor,
  //             layer, dataOffset, parent, entries, xattrCount}
  Napi::Value Stat(const Napi::CallbackInfo& info);
  // readdir(ino, offset = 0, limit = all): Array<{name, ino}>
  Napi::Value ReadDir(const Napi::CallbackInfo& info);
  // readlink(ino): string
  Napi::Value ReadLink(const Napi::CallbackInfo& info);
  // xattrs(ino): {[name]: Buffer}
  Napi::Value Xattrs(const Napi::CallbackInfo& info);
  // layers(): Array<{digest, diffId, mediaType, compressedSize, uncompressedSize, format, checkpointsSize}>
  Napi::Value Layers(const Napi::CallbackInfo& info);
  // checkpoints(layerIndex): Buffer (a copy of the serialized checkpoint index)
  Napi::Value Checkpoints(const Napi::CallbackInfo& info);
  // config(): string (JSON text)
  Napi::Value Config(const Napi::CallbackInfo& info);
  // close(): unmaps; any later call throws EINVAL.
  Napi::Value Close(const Napi::CallbackInfo& info);

  const core::ArchiveView& view(Napi::Env env) const;
  core::Ino ToIno(Napi::Env env, Napi::Value value) const;

  std::shared_ptr<const core::ArchiveView> view_;  // null: closed
};

}  // namespace clip::binding
