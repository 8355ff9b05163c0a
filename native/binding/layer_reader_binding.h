// JavaScript face of core::RangeReader: random access to one layer's
// uncompressed stream, from the blob on disk (read) or from compressed bytes
// TypeScript fetched itself (readFrom, after asking spanFor which bytes).
#pragma once

#include <napi.h>

#include <memory>

#include "../core/checkpoint_index.h"
#include "../core/compressed_source.h"
#include "../core/inflate_engine.h"

namespace clip::binding {

// Immutable after construction, so any number of reads may be in flight on
// libuv threads at once; each holds a reference to the wrapper's JS object.
class LayerReaderWrap : public Napi::ObjectWrap<LayerReaderWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new LayerReader(checkpoints: Buffer, blobPath: string | null, engine?: "isal" | "zlib")
  explicit LayerReaderWrap(const Napi::CallbackInfo& info);

  const core::CheckpointIndex& index() const { return index_; }
  const core::FileSource* file() const { return file_.get(); }
  core::InflateEngine engine() const { return engine_; }

 private:
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value ReadFrom(const Napi::CallbackInfo& info);
  Napi::Value SpanFor(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  // window(i): Buffer, checkpoint i's window inflated (its window_length bytes).
  Napi::Value Window(const Napi::CallbackInfo& info);
  void CheckRange(Napi::Env env, uint64_t offset, uint64_t length) const;

  core::CheckpointIndex index_;
  std::unique_ptr<core::FileSource> file_;
  core::InflateEngine engine_ = core::InflateEngine::kIsal;
};

}  // namespace clip::binding
