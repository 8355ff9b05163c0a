// PromiseWorker: an AsyncWorker that settles a Promise.
//
// The baton pattern: a subclass copies its inputs into plain members on the
// JS thread, Run() does the work on a libuv thread touching only those
// members, and Resolve() converts the result back on the JS thread. A
// CoreError thrown by Run() rejects the promise with a ClipError carrying
// its stable code; any other exception becomes EIO (or ENOMEM).
#pragma once

#include <napi.h>

#include <new>
#include <string>

#include "../core/error.h"
#include "errors.h"

namespace clip::binding {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Resolve(Napi::Env env) = 0;

 private:
  void Execute() final {
    try {
      Run();
    } catch (const core::CoreError& e) {
      code_ = core::ErrorCodeName(e.code());
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "ENOMEM";
      SetError("out of memory");
    } catch (const std::exception& e) {
      code_ = "EIO";
      SetError(e.what());
    }
  }
  void OnOK() final {
    Napi::HandleScope scope(Env());
    try {
      deferred_.Resolve(Resolve(Env()));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) final {
    Napi::HandleScope scope(Env());
    deferred_.Reject(MakeError(Env(), code_, e.Message()).Value());
  }

  Napi::Promise::Deferred deferred_;
  std::string code_ = "EIO";
};

}  // namespace clip::binding
