#include "layer_fill_binding.h"

#include <functional>

#include "convert.h"
#include "errors.h"
#include "promise_worker.h"

namespace clip::binding {
namespace {

// Runs one step of the fill on a libuv thread; holds references to the
// wrapper (and to a pushed Buffer) so neither is collected meanwhile.
class FillWorker final : public PromiseWorker {
 public:
  // `step` returns what the promise resolves to (a byte count for pushFile).
  FillWorker(Napi::Env env, LayerFillWrap* wrap, Napi::Object self, std::function<double()> step)
      : PromiseWorker(env), wrap_(wrap), self_(Napi::Persistent(self)), step_(std::move(step)) {}
  ~FillWorker() override { wrap_->set_busy(false); }

  void Keep(Napi::Buffer<uint8_t> chunk) { chunk_ = Napi::Persistent(chunk); }
  void ResolveWithCount() { counts_ = true; }

 protected:
  void Run() override { result_ = step_(); }
  Napi::Value Resolve(Napi::Env env) override { return counts_ ? Napi::Number::New(env, result_) : env.Undefined(); }

 private:
  LayerFillWrap* wrap_;
  Napi::ObjectReference self_;
  Napi::Reference<Napi::Buffer<uint8_t>> chunk_;
  std::function<double()> step_;
  double result_ = 0;
  bool counts_ = false;
};

std::string StringOption(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

}  // namespace

Napi::Function LayerFillWrap::Define(Napi::Env env) {
  return DefineClass(env, "LayerFill",
                     {InstanceMethod<&LayerFillWrap::Push>("push"), InstanceMethod<&LayerFillWrap::PushFile>("pushFile"),
                      InstanceMethod<&LayerFillWrap::Finish>("finish"), InstanceMethod<&LayerFillWrap::Cancel>("cancel")});
}

// new LayerFill(fd, {format: 'gzip'|'tar', uncompressedSize, diffId, blobDigest?, blobSize?, engine?, name?})
LayerFillWrap::LayerFillWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerFillWrap>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || info[0].As<Napi::Number>().Int32Value() < 0) ThrowInvalid(env, "LayerFill expects a file descriptor");
  if (!info[1].IsObject()) ThrowInvalid(env, "LayerFill expects options");
  Napi::Object o = info[1].As<Napi::Object>();
  core::LayerFillOptions options;
  options.engine = ToEngine(env, o.Get("engine"));
  const std::string format = StringOption(o, "format");
  if (format != "gzip" && format != "tar") ThrowInvalid(env, "format must be 'gzip' or 'tar'");
  options.format = format == "gzip" ? core::LayerFormat::kGzip : core::LayerFormat::kTar;
  options.uncompressed_size = ToOffset(env, o.Get("uncompressedSize"), "uncompressedSize");
  options.diff_id = StringOption(o, "diffId");
  if (options.diff_id.empty()) ThrowInvalid(env, "diffId is required");
  options.blob_digest = StringOption(o, "blobDigest");
  if (!options.blob_digest.empty()) options.blob_size = ToOffset(env, o.Get("blobSize"), "blobSize");
  if (o.Get("name").IsString()) options.name = StringOption(o, "name");
  filler_ = std::make_unique<core::LayerFiller>(info[0].As<Napi::Number>().Int32Value(), std::move(options));
}

void LayerFillWrap::CheckIdle(Napi::Env env) {
  if (finished_) throw MakeError(env, "EINVAL", "this LayerFill has finished");
  if (busy_) throw MakeError(env, "EBUSY", "wait for the previous call to settle before the next push(), pushFile() or finish()");
}

Napi::Value LayerFillWrap::Push(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  if (!info[0].IsBuffer()) ThrowInvalid(env, "push expects a Buffer");
  auto chunk = info[0].As<Napi::Buffer<uint8_t>>();
  const uint8_t* data = chunk.Data();
  const size_t len = chunk.Length();
  busy_ = true;
  auto* worker = new FillWorker(env, this, info.This().As<Napi::Object>(), [this, data, len] {
    filler_->Feed(data, len);
    return 0.0;
  });
  worker->Keep(chunk);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value LayerFillWrap::PushFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  if (!info[0].IsString()) ThrowInvalid(env, "pushFile expects a path");
  const uint64_t offset = ToOffset(env, info[1], "offset");
  const uint64_t max_bytes = ToOffset(env, info[2], "maxBytes");
  busy_ = true;
  auto* worker = new FillWorker(env, this, info.This().As<Napi::Object>(),
                                [this, path = info[0].As<Napi::String>().Utf8Value(), offset, max_bytes] {
                                  return static_cast<double>(filler_->FeedFileRange(path, offset, max_bytes, cancelled_));
                                });
  worker->ResolveWithCount();
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value LayerFillWrap::Finish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckIdle(env);
  busy_ = true;
  finished_ = true;
  auto* worker = new FillWorker(env, this, info.This().As<Napi::Object>(), [this] {
    filler_->Finish();
    return 0.0;
  });
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value LayerFillWrap::Cancel(const Napi::CallbackInfo& info) {
  cancelled_ = true;
  return info.Env().Undefined();
}

}  // namespace clip::binding
