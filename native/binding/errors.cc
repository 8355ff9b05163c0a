#include "errors.h"

namespace clip::binding {

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) ThrowInvalid(info.Env(), "setErrorClass expects a constructor");
  Data(info.Env()).error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  AddonData& data = Data(env);
  if (!data.error_class.IsEmpty()) {
    Napi::Object error = data.error_class.New({Napi::String::New(env, code), Napi::String::New(env, message)});
    return Napi::Error(env, error);
  }
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

void ThrowInvalid(Napi::Env env, const std::string& message) {
  throw MakeError(env, "EINVAL", message);
}

}  // namespace clip::binding
