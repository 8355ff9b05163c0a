#include "memory_binding.h"

#include <malloc.h>

namespace clip::binding {

void RegisterMemoryFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("trimMemory", Napi::Function::New<TrimMemory>(env, "trimMemory"));
  exports.Set("releaseBuffer", Napi::Function::New<ReleaseBuffer>(env, "releaseBuffer"));
  exports.Set("tuneMalloc", Napi::Function::New<TuneMalloc>(env, "tuneMalloc"));
  exports.Set("mallocStats", Napi::Function::New<MallocStats>(env, "mallocStats"));
}

Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
}

Napi::Value ReleaseBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // A Buffer is a Uint8Array (napi's IsBuffer also takes other views).
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    return Napi::Boolean::New(env, false);
  auto buffer = info[0].As<Napi::Uint8Array>();
  Napi::ArrayBuffer whole = buffer.ArrayBuffer();
  const size_t length = buffer.ByteLength();
  if (length == 0 || buffer.ByteOffset() != 0 || whole.ByteLength() != length) return Napi::Boolean::New(env, false);
  bool detached = false;
  if (napi_is_detached_arraybuffer(env, whole, &detached) != napi_ok || detached) return Napi::Boolean::New(env, false);
  return Napi::Boolean::New(env, napi_detach_arraybuffer(env, whole) == napi_ok);
}

Napi::Value TuneMalloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) return Napi::Boolean::New(env, false);
  const int bytes = info[0].As<Napi::Number>().Int32Value();
  if (bytes <= 0) return Napi::Boolean::New(env, false);
  // A fixed threshold also turns off glibc's dynamic one, which rises to the
  // size of the largest block freed (Buffers of 128 KiB to 1 MiB here) and
  // would move those blocks back into the arenas.
  const bool ok = mallopt(M_MMAP_THRESHOLD, bytes) == 1 && mallopt(M_TRIM_THRESHOLD, 2 * bytes) == 1;
  return Napi::Boolean::New(env, ok);
}

Napi::Value MallocStats(const Napi::CallbackInfo& info) {
  const struct mallinfo2 m = mallinfo2();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("arenaBytes", static_cast<double>(m.arena));
  out.Set("mmappedBytes", static_cast<double>(m.hblkhd));
  out.Set("inUseBytes", static_cast<double>(m.uordblks));
  out.Set("freeBytes", static_cast<double>(m.fordblks));
  return out;
}

}  // namespace clip::binding
