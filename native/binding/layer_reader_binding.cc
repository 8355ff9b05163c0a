#include "layer_reader_binding.h"

#include "archive_binding.h"

#include "../core/range_reader.h"
#include "convert.h"
#include "errors.h"
#include "promise_worker.h"

namespace clip::binding {
namespace {

// Reads are capped so one request cannot ask the addon for gigabytes at once.
constexpr uint64_t kMaxReadLength = 64u << 20;

class ReadWorker final : public PromiseWorker {
 public:
  ReadWorker(Napi::Env env, const LayerReaderWrap* reader, Napi::Object self, uint64_t offset, size_t length)
      : PromiseWorker(env), reader_(reader), self_(Napi::Persistent(self)), offset_(offset), length_(length) {}

  // Reads from a buffer TypeScript fetched: bytes [base, base + len) of the blob.
  void UseBuffer(Napi::Buffer<uint8_t> buffer, uint64_t base) {
    buffer_ = Napi::Persistent(buffer);
    memory_ = std::make_unique<core::MemorySource>(base, buffer.Data(), buffer.Length());
  }

 protected:
  void Run() override {
    const core::CompressedSource* source = memory_ ? static_cast<const core::CompressedSource*>(memory_.get())
                                                   : static_cast<const core::CompressedSource*>(reader_->file());
    out_ = std::make_unique<uint8_t[]>(length_ ? length_ : 1);
    core::RangeReader(reader_->index(), *source, reader_->engine()).Read(offset_, out_.get(), length_);
  }
  Napi::Value Resolve(Napi::Env env) override {
    size_t length = length_;
    return Napi::Buffer<uint8_t>::New(env, out_.release(), length, [](Napi::Env, uint8_t* data) { delete[] data; });
  }

 private:
  const LayerReaderWrap* reader_;
  Napi::ObjectReference self_;
  Napi::Reference<Napi::Buffer<uint8_t>> buffer_;
  std::unique_ptr<core::MemorySource> memory_;
  uint64_t offset_;
  size_t length_;
  std::unique_ptr<uint8_t[]> out_;
};

}  // namespace

Napi::Function LayerReaderWrap::Define(Napi::Env env) {
  return DefineClass(env, "LayerReader",
                     {InstanceMethod<&LayerReaderWrap::Read>("read"),
                      InstanceMethod<&LayerReaderWrap::ReadFrom>("readFrom"),
                      InstanceMethod<&LayerReaderWrap::SpanFor>("spanFor"),
                      InstanceMethod<&LayerReaderWrap::Info>("info"),
                      InstanceMethod<&LayerReaderWrap::Window>("window")});
}

LayerReaderWrap::LayerReaderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerReaderWrap>(info) {
  Napi::Env env = info.Env();
  const bool from_archive = info[0].IsObject() && !info[0].IsBuffer();
  if (!info[0].IsBuffer() && !from_archive)
    ThrowInvalid(env, "LayerReader expects the serialized checkpoints as a Buffer, or {archive, layer}");
  try {
    if (from_archive) {
      // {archive: ArchiveReader, layer}: the index is read in place in the
      // archive's mapping, which the index keeps alive.
      Napi::Object o = info[0].As<Napi::Object>();
      std::shared_ptr<const core::ArchiveView> view = ArchiveReaderWrap::SharedViewOf(env, o.Get("archive"), "LayerReader: archive");
      const uint64_t layer = ToOffset(env, o.Get("layer"), "layer");
      if (layer >= view->layer_count()) ThrowInvalid(env, "LayerReader: layer " + std::to_string(layer) + " is out of range");
      const std::span<const uint8_t> bytes = view->Layer(static_cast<uint32_t>(layer)).checkpoints;
      index_ = core::CheckpointIndex::DeserializeInPlace(bytes, view);
    } else {
      auto bytes = info[0].As<Napi::Buffer<uint8_t>>();
      index_ = core::CheckpointIndex::Deserialize({bytes.Data(), bytes.Length()});
    }
    if (info[1].IsString()) file_ = std::make_unique<core::FileSource>(info[1].As<Napi::String>().Utf8Value());
  } catch (const core::CoreError& e) {
    throw MakeError(env, core::ErrorCodeName(e.code()), e.what());
  }
  engine_ = ToEngine(env, info[2]);
}

void LayerReaderWrap::CheckRange(Napi::Env env, uint64_t offset, uint64_t length) const {
  if (length > kMaxReadLength) ThrowInvalid(env, "read length is above the 64 MiB limit");
  if (offset > index_.uncompressed_size || length > index_.uncompressed_size - offset)
    ThrowInvalid(env, "range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                          ") passes the end of the layer (" + std::to_string(index_.uncompressed_size) + " bytes)");
}

Napi::Value LayerReaderWrap::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!file_) ThrowInvalid(env, "this LayerReader has no blob file; use readFrom()");
  uint64_t offset = ToOffset(env, info[0], "offset");
  uint64_t length = ToOffset(env, info[1], "length");
  CheckRange(env, offset, length);
  auto* worker = new ReadWorker(env, this, info.This().As<Napi::Object>(), offset, static_cast<size_t>(length));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// readFrom(buffer, base, offset, length): buffer holds blob bytes [base, base + buffer.length).
Napi::Value LayerReaderWrap::ReadFrom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer()) ThrowInvalid(env, "readFrom expects a Buffer of compressed bytes");
  uint64_t base = ToOffset(env, info[1], "base");
  uint64_t offset = ToOffset(env, info[2], "offset");
  uint64_t length = ToOffset(env, info[3], "length");
  CheckRange(env, offset, length);
  auto* worker = new ReadWorker(env, this, info.This().As<Napi::Object>(), offset, static_cast<size_t>(length));
  worker->UseBuffer(info[0].As<Napi::Buffer<uint8_t>>(), base);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value LayerReaderWrap::SpanFor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t offset = ToOffset(env, info[0], "offset");
  uint64_t length = ToOffset(env, info[1], "length");
  CheckRange(env, offset, length);
  core::CompressedSpan span = index_.SpanFor(offset, length);
  Napi::Object o = Napi::Object::New(env);
  o.Set("begin", static_cast<double>(span.begin));
  o.Set("end", static_cast<double>(span.end));
  o.Set("checkpoint", static_cast<double>(span.checkpoint));
  return o;
}

Napi::Value LayerReaderWrap::Window(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t i = ToOffset(env, info[0], "checkpoint");
  if (i >= index_.checkpoints.size()) ThrowInvalid(env, "no checkpoint " + std::to_string(i));
  std::vector<uint8_t> window;
  try {
    index_.LoadWindow(static_cast<size_t>(i), window);
  } catch (const core::CoreError& e) {
    throw MakeError(env, core::ErrorCodeName(e.code()), e.what());
  }
  return Napi::Buffer<uint8_t>::Copy(env, window.data(), window.size());
}

Napi::Value LayerReaderWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("format", index_.format == core::LayerFormat::kGzip ? "gzip" : "tar");
  o.Set("compressedSize", static_cast<double>(index_.compressed_size));
  o.Set("uncompressedSize", static_cast<double>(index_.uncompressed_size));
  o.Set("spacing", static_cast<double>(index_.spacing));
  o.Set("checkpointCount", static_cast<double>(index_.checkpoints.size()));
  o.Set("engine", core::InflateEngineName(engine_));
  return o;
}

}  // namespace clip::binding
