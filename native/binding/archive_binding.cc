#include "archive_binding.h"

#include <sys/sysmacros.h>

#include <string>

#include "convert.h"
#include "errors.h"

namespace clip::binding {
namespace {

// Runs `fn`, turning a CoreError into a thrown ClipError with its code.
template <typename Fn>
auto Guard(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const core::CoreError& e) {
    throw MakeError(env, core::ErrorCodeName(e.code()), e.what());
  }
}

std::string Hex(std::span<const uint8_t, 32> bytes) {
  static const char* const kDigits = "0123456789abcdef";
  std::string out = "sha256:";
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

Napi::String Utf8(Napi::Env env, std::string_view s) { return Napi::String::New(env, s.data(), s.size()); }

}  // namespace

Napi::Function ArchiveReaderWrap::Define(Napi::Env env) {
  return DefineClass(env, "ArchiveReader",
                     {InstanceMethod<&ArchiveReaderWrap::Info>("info"),
                      InstanceMethod<&ArchiveReaderWrap::LookupPath>("lookupPath"),
                      InstanceMethod<&ArchiveReaderWrap::Lookup>("lookup"),
                      InstanceMethod<&ArchiveReaderWrap::Stat>("stat"),
                      InstanceMethod<&ArchiveReaderWrap::ReadDir>("readdir"),
                      InstanceMethod<&ArchiveReaderWrap::ReadLink>("readlink"),
                      InstanceMethod<&ArchiveReaderWrap::Xattrs>("xattrs"),
                      InstanceMethod<&ArchiveReaderWrap::Layers>("layers"),
                      InstanceMethod<&ArchiveReaderWrap::Checkpoints>("checkpoints"),
                      InstanceMethod<&ArchiveReaderWrap::Config>("config"),
                      InstanceMethod<&ArchiveReaderWrap::Close>("close")});
}

ArchiveReaderWrap::ArchiveReaderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ArchiveReaderWrap>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowInvalid(env, "ArchiveReader expects the archive's path");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  view_ = std::make_shared<const core::ArchiveView>(Guard(env, [&] { return core::ArchiveView::Open(path); }));
}

std::shared_ptr<const core::ArchiveView> ArchiveReaderWrap::SharedViewOf(Napi::Env env, Napi::Value value,
                                                                         const std::string& what) {
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(Data(env).archive_reader.Value()))
    ThrowInvalid(env, what + " must be an ArchiveReader");
  std::shared_ptr<const core::ArchiveView> view = Unwrap(value.As<Napi::Object>())->shared_view();
  if (!view) ThrowInvalid(env, what + " is closed");
  return view;
}

const core::ArchiveView& ArchiveReaderWrap::view(Napi::Env env) const {
  if (!view_) ThrowInvalid(env, "the archive is closed");
  return *view_;
}

core::Ino ArchiveReaderWrap::ToIno(Napi::Env env, Napi::Value value) const {
  const uint64_t ino = ToOffset(env, value, "ino");
  if (ino == 0 || ino > view(env).node_count()) {
    ThrowInvalid(env, "inode " + std::to_string(ino) + " is not in the archive (1.." + std::to_string(view(env).node_count()) + ")");
  }
  return ino;
}

Napi::Value ArchiveReaderWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const core::ArchiveInfo& i = view(env).info();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", i.version);
  o.Set("fileSize", static_cast<double>(i.file_size));
  o.Set("nodeCount", static_cast<double>(i.node_count));
  o.Set("direntCount", static_cast<double>(i.dirent_count));
  o.Set("xattrCount", static_cast<double>(i.xattr_count));
  o.Set("layerCount", i.layer_count);
  o.Set("stringsSize", static_cast<double>(i.strings_size));
  o.Set("checkpointsSize", static_cast<double>(i.checkpoints_size));
  o.Set("configSize", static_cast<double>(i.config_size));
  return o;
}

Napi::Value ArchiveReaderWrap::LookupPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = PathFromJs(env, info[0], "lookupPath's path");
  const core::Ino ino = Guard(env, [&] { return view(env).LookupPath(path); });
  return ino ? Napi::Number::New(env, static_cast<double>(ino)) : env.Null();
}

Napi::Value ArchiveReaderWrap::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const core::Ino dir = ToIno(env, info[0]);
  const std::string name = PathFromJs(env, info[1], "lookup's name");
  const core::Ino ino = Guard(env, [&] { return view(env).Lookup(dir, name); });
  return ino ? Napi::Number::New(env, static_cast<double>(ino)) : env.Null();
}

Napi::Value ArchiveReaderWrap::Stat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const core::Ino ino = ToIno(env, info[0]);
  const core::NodeView n = Guard(env, [&] { return view(env).Node(ino); });
  Napi::Object o = Napi::Object::New(env);
  o.Set("ino", static_cast<double>(n.ino));
  o.Set("type", core::NodeTypeName(n.mode));
  o.Set("mode", n.mode);
  o.Set("uid", n.uid);
  o.Set("gid", n.gid);
  o.Set("nlink", n.nlink);
  o.Set("size", static_cast<double>(n.size));
  o.Set("mtimeSec", static_cast<double>(n.mtime_sec));
  o.Set("mtimeNsec", n.mtime_nsec);
  o.Set("devmajor", static_cast<double>(gnu_dev_major(n.rdev)));
  o.Set("devminor", static_cast<double>(gnu_dev_minor(n.rdev)));
  o.Set("layer", n.is_file() ? Napi::Value(Napi::Number::New(env, n.layer)) : env.Null());
  o.Set("dataOffset", static_cast<double>(n.data_offset));
  o.Set("parent", n.is_dir() ? Napi::Value(Napi::Number::New(env, static_cast<double>(n.parent))) : env.Null());
  o.Set("entries", n.dirent_count);
  o.Set("xattrCount", n.xattr_count);
  return o;
}

Napi::Value ArchiveReaderWrap::ReadDir(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const core::Ino ino = ToIno(env, info[0]);
  const uint64_t offset = info[1].IsUndefined() ? 0 : ToOffset(env, info[1], "offset");
  const uint64_t limit = info[2].IsUndefined() ? UINT64_MAX : ToOffset(env, info[2], "limit");
  Napi::Array out = Napi::Array::New(env);
  uint32_t count = 0;
  Guard(env, [&] {
    view(env).ReadDir(ino, offset, [&](const core::DirEntryView& e, uint64_t) {
      Napi::Object entry = Napi::Object::New(env);
      entry.Set("name", PathToJs(env, e.name));
      entry.Set("ino", static_cast<double>(e.ino));
      out.Set(count++, entry);
      return count < limit;
    });
    return 0;
  });
  return out;
}

Napi::Value ArchiveReaderWrap::ReadLink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const core::Ino ino = ToIno(env, info[0]);
  return PathToJs(env, Guard(env, [&] { return view(env).ReadLink(ino); }));
}

Napi::Value ArchiveReaderWrap::Xattrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const core::Ino ino = ToIno(env, info[0]);
  Napi::Object out = Napi::Object::New(env);
  Guard(env, [&] {
    const core::NodeView node = view(env).Node(ino);
    for (uint32_t i = 0; i < node.xattr_count; ++i) {
      const core::XattrView x = view(env).Xattr(node, i);
      out.Set(Utf8(env, x.name), Napi::Buffer<uint8_t>::Copy(env, x.value.data(), x.value.size()));
    }
    return 0;
  });
  return out;
}

Napi::Value ArchiveReaderWrap::Layers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const core::ArchiveView& v = view(env);
  Napi::Array out = Napi::Array::New(env, v.layer_count());
  for (uint32_t i = 0; i < v.layer_count(); ++i) {
    const core::LayerView l = Guard(env, [&] { return v.Layer(i); });
    Napi::Object o = Napi::Object::New(env);
    o.Set("digest", Hex(l.digest));
    o.Set("diffId", Hex(l.diff_id));
    o.Set("mediaType", Utf8(env, l.media_type));
    o.Set("compressedSize", static_cast<double>(l.compressed_size));
    o.Set("uncompressedSize", static_cast<double>(l.uncompressed_size));
    o.Set("format", l.format == 1 ? "gzip" : "tar");
    o.Set("checkpointsSize", static_cast<double>(l.checkpoints.size()));
    out.Set(i, o);
  }
  return out;
}

Napi::Value ArchiveReaderWrap::Checkpoints(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t index = ToOffset(env, info[0], "layer index");
  const core::ArchiveView& v = view(env);
  if (index >= v.layer_count()) ThrowInvalid(env, "layer index " + std::to_string(index) + " is out of range");
  const core::LayerView l = Guard(env, [&] { return v.Layer(static_cast<uint32_t>(index)); });
  return Napi::Buffer<uint8_t>::Copy(env, l.checkpoints.data(), l.checkpoints.size());
}

Napi::Value ArchiveReaderWrap::Config(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Utf8(env, view(env).Config());
}

Napi::Value ArchiveReaderWrap::Close(const Napi::CallbackInfo& info) {
  view_.reset();
  return info.Env().Undefined();
}

}  // namespace clip::binding
