#include "convert.h"

#include <cmath>

#include "errors.h"

namespace clip::binding {

core::InflateEngine ToEngine(Napi::Env env, Napi::Value value) {
  if (value.IsUndefined()) return core::InflateEngine::kIsal;
  if (!value.IsString()) ThrowInvalid(env, "engine must be \"isal\" or \"zlib\"");
  auto engine = core::ParseInflateEngine(value.As<Napi::String>().Utf8Value());
  if (!engine) ThrowInvalid(env, "engine must be \"isal\" or \"zlib\"");
  return *engine;
}

uint64_t ToOffset(Napi::Env env, Napi::Value value, const char* what) {
  if (!value.IsNumber()) ThrowInvalid(env, std::string(what) + " must be a number");
  double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d)
    ThrowInvalid(env, std::string(what) + " must be a non-negative integer");
  return static_cast<uint64_t>(d);
}

core::LayerIndexOptions ToIndexOptions(Napi::Env env, Napi::Value value) {
  core::LayerIndexOptions options;
  if (value.IsUndefined() || value.IsNull()) return options;
  if (!value.IsObject()) ThrowInvalid(env, "options must be an object");
  Napi::Object o = value.As<Napi::Object>();
  options.engine = ToEngine(env, o.Get("engine"));
  if (o.Has("spacing") && !o.Get("spacing").IsUndefined()) options.spacing = ToOffset(env, o.Get("spacing"), "spacing");
  if (options.spacing == 0) ThrowInvalid(env, "spacing must be positive");
  if (o.Has("largeFileThreshold") && !o.Get("largeFileThreshold").IsUndefined())
    options.large_file_threshold = ToOffset(env, o.Get("largeFileThreshold"), "largeFileThreshold");
  if (o.Get("name").IsString()) options.name = o.Get("name").As<Napi::String>().Utf8Value();
  if (o.Get("expectedDigest").IsString()) options.expected_digest = o.Get("expectedDigest").As<Napi::String>().Utf8Value();
  return options;
}

namespace {

Napi::Object FromEntry(Napi::Env env, const core::TarEntry& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", e.path);
  o.Set("type", core::EntryTypeName(e.type));
  o.Set("mode", e.mode);
  o.Set("uid", e.uid);
  o.Set("gid", e.gid);
  o.Set("uname", e.uname);
  o.Set("gname", e.gname);
  o.Set("mtimeSec", static_cast<double>(e.mtime_sec));
  o.Set("mtimeNsec", e.mtime_nsec);
  o.Set("size", static_cast<double>(e.size));
  o.Set("dataOffset", static_cast<double>(e.data_offset));
  o.Set("headerOffset", static_cast<double>(e.header_offset));
  o.Set("devmajor", e.devmajor);
  o.Set("devminor", e.devminor);
  o.Set("linkTarget", e.link_target);
  Napi::Object xattrs = Napi::Object::New(env);
  for (const auto& [name, value] : e.xattrs)
    xattrs.Set(name, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(value.data()), value.size()));
  o.Set("xattrs", xattrs);
  return o;
}

}  // namespace

Napi::Object FromLayerIndex(Napi::Env env, const core::LayerIndex& index) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("format", index.format == core::LayerFormat::kGzip ? "gzip" : "tar");
  o.Set("digest", index.digest);
  o.Set("diffId", index.diff_id);
  o.Set("compressedSize", static_cast<double>(index.compressed_size));
  o.Set("uncompressedSize", static_cast<double>(index.uncompressed_size));
  std::vector<uint8_t> checkpoints = index.checkpoints.Serialize();
  o.Set("checkpoints", Napi::Buffer<uint8_t>::Copy(env, checkpoints.data(), checkpoints.size()));
  o.Set("checkpointCount", static_cast<double>(index.checkpoints.checkpoints.size()));
  Napi::Array entries = Napi::Array::New(env, index.entries.size());
  for (size_t i = 0; i < index.entries.size(); ++i) entries.Set(static_cast<uint32_t>(i), FromEntry(env, index.entries[i]));
  o.Set("entries", entries);
  return o;
}

}  // namespace clip::binding
