// JavaScript face of core::LayerIndexer: indexLayerFile(path, options) and
// the streaming class LayerIndexer {push(buffer), finish()}.
#pragma once

#include <napi.h>

#include <memory>

#include "../core/layer_indexer.h"

namespace clip::binding {

Napi::Value IndexLayerFile(const Napi::CallbackInfo& info);

// One layer being indexed from chunks that TypeScript pushes (a download as
// it streams). At most one push or finish may be pending at a time: each is
// an AsyncWorker that touches the core indexer on a libuv thread, and the
// `busy_` flag (read and written only on the JS thread) keeps them serial.
class LayerIndexerWrap : public Napi::ObjectWrap<LayerIndexerWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LayerIndexerWrap(const Napi::CallbackInfo& info);

  core::LayerIndexer& indexer() { return *indexer_; }
  void set_busy(bool busy) { busy_ = busy; }

 private:
  Napi::Value Push(const Napi::CallbackInfo& info);
  Napi::Value Finish(const Napi::CallbackInfo& info);
  void CheckIdle(Napi::Env env);

  std::unique_ptr<core::LayerIndexer> indexer_;
  bool busy_ = false;
  bool finished_ = false;
};

}  // namespace clip::binding
