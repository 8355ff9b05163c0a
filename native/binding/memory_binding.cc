#include "memory_binding.h"

#include <malloc.h>

namespace clip::binding {

void RegisterMemoryFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("trimMemory", Napi::Function::New<TrimMemory>(env, "trimMemory"));
}

Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
}

}  // namespace clip::binding
