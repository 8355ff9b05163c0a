// The addon's entry point: registers the binding's functions and classes.
// This directory is the only place that includes napi.h; core/ and fuse/
// know nothing of Node.
#include <napi.h>

#include "archive_binding.h"
#include "errors.h"
#include "fs_binding.h"
#include "layer_fill_binding.h"
#include "layer_index_binding.h"
#include "layer_reader_binding.h"
#include "memory_binding.h"
#include "mount_binding.h"

namespace clip::binding {
namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  exports.Set("setErrorClass", Napi::Function::New<SetErrorClass>(env, "setErrorClass"));
  exports.Set("indexLayerFile", Napi::Function::New<IndexLayerFile>(env, "indexLayerFile"));
  Napi::Function indexer = LayerIndexerWrap::Define(env);
  data->layer_indexer = Napi::Persistent(indexer);
  exports.Set("LayerIndexer", indexer);
  Napi::Function reader = LayerReaderWrap::Define(env);
  data->layer_reader = Napi::Persistent(reader);
  exports.Set("LayerReader", reader);
  exports.Set("LayerFill", LayerFillWrap::Define(env));
  Napi::Function archive = ArchiveReaderWrap::Define(env);
  data->archive_reader = Napi::Persistent(archive);
  exports.Set("ArchiveReader", archive);
  exports.Set("MountSession", MountSessionWrap::Define(env));
  RegisterFsFunctions(env, exports);
  RegisterMemoryFunctions(env, exports);
  Napi::Array engines = Napi::Array::New(env, 2);
  engines.Set(0u, "isal");
  engines.Set(1u, "zlib");
  exports.Set("engines", engines);
  return exports;
}

}  // namespace
}  // namespace clip::binding

// NODE_API_MODULE pastes the name into an identifier, so it takes a plain one.
static Napi::Object InitClipNative(Napi::Env env, Napi::Object exports) { return clip::binding::Init(env, exports); }
NODE_API_MODULE(clip_native, InitClipNative)
