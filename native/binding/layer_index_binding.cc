#include "layer_index_binding.h"

#include "convert.h"
#include "errors.h"
#include "promise_worker.h"

namespace clip::binding {
namespace {

class IndexFileWorker final : public PromiseWorker {
 public:
  IndexFileWorker(Napi::Env env, std::string path, core::LayerIndexOptions options)
      : PromiseWorker(env), path_(std::move(path)), options_(std::move(options)) {}

 protected:
  void Run() override { result_ = core::IndexLayerFile(path_, options_); }
  Napi::Value Resolve(Napi::Env env) override { return FromLayerIndex(env, result_); }

 private:
  std::string path_;
  core::LayerIndexOptions options_;
  core::LayerIndex result_;
};

// Feeds one pushed Buffer; holds references to the buffer and the wrapper so
// neither is collected while a libuv thread reads them.
class PushWorker final : public PromiseWorker {
 public:
  PushWorker(Napi::Env env, LayerIndexerWrap* wrap, Napi::Object self, Napi::Buffer<uint8_t> chunk)
      : PromiseWorker(env), wrap_(wrap), self_(Napi::Persistent(self)), chunk_(Napi::Persistent(chunk)),
        data_(chunk.Data()), len_(chunk.Length()) {}
  ~PushWorker() override { wrap_->set_busy(false); }

 protected:
  void Run() override { wrap_->indexer().Feed(data_, len_); }
  Napi::Value Resolve(Napi::Env env) override { return env.Undefined(); }

 private:
  LayerIndexerWrap* wrap_;
  Napi::ObjectReference self_;
  Napi::Reference<Napi::Buffer<uint8_t>> chunk_;
  const uint8_t* data_;
  size_t len_;
};

class FinishWorker final : public PromiseWorker {
 public:
  FinishWorker(Napi::Env env, LayerIndexerWrap* wrap, Napi::Object self)
      : PromiseWorker(env), wrap_(wrap), self_(Napi::Persistent(self)) {}
  ~FinishWorker() override { wrap_->set_busy(false); }

 protected:
  void Run() override { result_ = wrap_->indexer().Finish(); }
  Napi::Value Resolve(Napi::Env env) override { return FromLayerIndex(env, result_); }

 private:
  LayerIndexerWrap* wrap_;
  Napi::ObjectReference self_;
  core::LayerIndex result_;
};

}  // namespace

Napi::Value IndexLayerFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowInvalid(env, "indexLayerFile expects a path");
  auto* worker = new IndexFileWorker(env, info[0].As<Napi::String>().Utf8Value(), ToIndexOptions(env, info[1]));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Function LayerIndexerWrap::Define(Napi::Env env) {
  return DefineClass(env, "LayerIndexer",
                     {InstanceMethod<&LayerIndexerWrap::Push>("push"),
                      InstanceMethod<&LayerIndexerWrap::Finish>("finish")});
}

LayerIndexerWrap::LayerIndexerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerIndexerWrap>(info) {
  indexer_ = std::make_unique<core::LayerIndexer>(ToIndexOptions(info.Env(), info[0]));
}

void LayerIndexerWrap::CheckIdle(Napi::Env env) {
  if (finished_) throw MakeError(env, "EINVAL", "this LayerIndexer has finished");
  if (busy_) throw MakeError(env, "EBUSY", "wait for the previous push() before calling push() or finish()");
}

Napi::Value LayerIndexerWrap::Push(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  if (!info[0].IsBuffer()) ThrowInvalid(env, "push expects a Buffer");
  busy_ = true;
  auto* worker = new PushWorker(env, this, info.This().As<Napi::Object>(), info[0].As<Napi::Buffer<uint8_t>>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value LayerIndexerWrap::Finish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  busy_ = true;
  finished_ = true;
  auto* worker = new FinishWorker(env, this, info.This().As<Napi::Object>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace clip::binding
