// JavaScript face of core::LayerFiller: the class LayerFill {push(buffer),
// pushFile(path, offset, maxBytes) -> bytes fed, finish(), cancel()} that the disk cache's fills write
// through (src/storage/fill.ts).
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "../core/layer_filler.h"

namespace clip::binding {

// One layer being written into a file descriptor that TypeScript owns and
// keeps open until the last call settles. Like LayerIndexerWrap, at most one
// push, pushFile or finish may be pending (each runs on a libuv thread);
// cancel() may be called at any time and stops a running pushFile within
// one read.
class LayerFillWrap : public Napi::ObjectWrap<LayerFillWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LayerFillWrap(const Napi::CallbackInfo& info);

  core::LayerFiller& filler() { return *filler_; }
  const std::atomic<bool>& cancelled() const { return cancelled_; }
  void set_busy(bool busy) { busy_ = busy; }

 private:
  Napi::Value Push(const Napi::CallbackInfo& info);
  Napi::Value PushFile(const Napi::CallbackInfo& info);
  Napi::Value Finish(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  void CheckIdle(Napi::Env env);

  std::unique_ptr<core::LayerFiller> filler_;
  std::atomic<bool> cancelled_{false};
  bool busy_ = false;
  bool finished_ = false;
};

}  // namespace clip::binding
