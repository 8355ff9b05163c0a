#include "convert.h"

#include <cmath>
#include <vector>

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
  if (o.Has("proofSize") && !o.Get("proofSize").IsUndefined()) {
    const uint64_t proof_size = ToOffset(env, o.Get("proofSize"), "proofSize");
    if (proof_size < core::CheckpointIndex::kMinProofSize || proof_size > core::CheckpointIndex::kMaxProofSize)
      ThrowInvalid(env, "proofSize must be 512 B to 16 MiB");
    options.proof_size = static_cast<uint32_t>(proof_size);
  }
  if (o.Get("name").IsString()) options.name = o.Get("name").As<Napi::String>().Utf8Value();
  if (o.Get("expectedDigest").IsString()) options.expected_digest = o.Get("expectedDigest").As<Napi::String>().Utf8Value();
  return options;
}

namespace {

// Length of the valid UTF-8 sequence at the start of `s` (`n` bytes left),
// or 0 when the byte there does not begin one (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF).
size_t Utf8SequenceLength(const unsigned char* s, size_t n) {
  const unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) len = 3;
  else if (c >= 0xF0 && c <= 0xF4) len = 4;
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; ++i)
    if ((s[i] & 0xC0) != 0x80) return 0;
  if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F)) return 0;
  return len;
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

Napi::Object FromEntry(Napi::Env env, const core::TarEntry& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", PathToJs(env, e.path));
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
  o.Set("linkTarget", PathToJs(env, e.link_target));
  Napi::Object xattrs = Napi::Object::New(env);
  for (const auto& [name, value] : e.xattrs)
    xattrs.Set(name, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(value.data()), value.size()));
  o.Set("xattrs", xattrs);
  return o;
}

}  // namespace

Napi::Value PathToJs(Napi::Env env, std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t at = 0;
  while (at < n) {
    const size_t len = Utf8SequenceLength(s + at, n - at);
    if (len == 0) break;
    at += len;
  }
  if (at == n) return Napi::String::New(env, bytes.data(), bytes.size());  // valid UTF-8: the common case
  // napi_create_string_utf16 turns lone surrogates into U+FFFD, so the
  // escaped form goes out as UTF-16LE bytes, which Buffer#toString('utf16le') keeps.
  std::vector<char16_t> out;
  out.reserve(n);
  for (at = 0; at < n;) {
    const size_t len = Utf8SequenceLength(s + at, n - at);
    if (len == 0) {
      out.push_back(static_cast<char16_t>(0xDC00 + s[at]));
      at += 1;
      continue;
    }
    uint32_t cp = len == 1 ? s[at] : s[at] & (0x7F >> len);
    for (size_t i = 1; i < len; ++i) cp = (cp << 6) | (s[at + i] & 0x3F);
    if (cp >= 0x10000) {
      out.push_back(static_cast<char16_t>(0xD800 + ((cp - 0x10000) >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + ((cp - 0x10000) & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
    at += len;
  }
  std::vector<uint8_t> le(out.size() * 2);
  for (size_t i = 0; i < out.size(); ++i) {
    le[2 * i] = static_cast<uint8_t>(out[i] & 0xFF);
    le[2 * i + 1] = static_cast<uint8_t>(out[i] >> 8);
  }
  return Napi::Buffer<uint8_t>::Copy(env, le.data(), le.size());
}

std::string PathFromJs(Napi::Env env, Napi::Value value, const char* what) {
  if (value.IsBuffer()) {
    auto b = value.As<Napi::Buffer<char>>();
    return std::string(b.Data(), b.Length());
  }
  if (!value.IsString()) ThrowInvalid(env, std::string(what) + " must be a string");
  const std::u16string u = value.As<Napi::String>().Utf16Value();
  std::string out;
  out.reserve(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    const uint32_t c = u[i];
    if (c >= 0xD800 && c <= 0xDBFF && i + 1 < u.size() && u[i + 1] >= 0xDC00 && u[i + 1] <= 0xDFFF) {
      AppendUtf8(out, 0x10000 + ((c - 0xD800) << 10) + (u[i + 1] - 0xDC00));
      ++i;
    } else if (c >= 0xDC80 && c <= 0xDCFF) {
      out += static_cast<char>(c - 0xDC00);  // an escaped byte
    } else if (c >= 0xD800 && c <= 0xDFFF) {
      AppendUtf8(out, 0xFFFD);
    } else {
      AppendUtf8(out, c);
    }
  }
  return out;
}

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
