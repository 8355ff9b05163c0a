// How native failures become JavaScript errors: one error class, owned by
// TypeScript (ClipError in src/errors.ts) and handed to the addon at load
// time by setErrorClass(), constructed as new ClipError(code, message).
// Until it is set, a plain Error with a `code` property is used.
#pragma once

#include <napi.h>

#include <string>

#include "../core/error.h"

namespace clip::binding {

// Per-environment state of the addon (worker threads each load their own).
struct AddonData {
  Napi::FunctionReference error_class;
  Napi::FunctionReference layer_indexer;
  Napi::FunctionReference layer_reader;
  Napi::FunctionReference archive_reader;
};

AddonData& Data(Napi::Env env);
Napi::Value SetErrorClass(const Napi::CallbackInfo& info);
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);
// Throws a JS TypeError("…") with code EINVAL, for argument checking.
[[noreturn]] void ThrowInvalid(Napi::Env env, const std::string& message);

}  // namespace clip::binding
