// Conversions between core structs and plain JavaScript values, and the
// argument checks the binding does itself (TypeScript checks the rest).
#pragma once

#include <napi.h>

#include <string>

#include "../core/layer_indexer.h"

namespace clip::binding {

// Reads {engine, spacing, largeFileThreshold, name, expectedDigest} from `options`.
core::LayerIndexOptions ToIndexOptions(Napi::Env env, Napi::Value options);
core::InflateEngine ToEngine(Napi::Env env, Napi::Value value);
uint64_t ToOffset(Napi::Env env, Napi::Value value, const char* what);
// The whole index as a plain object: {format, digest, diffId, compressedSize,
// uncompressedSize, checkpoints: Buffer, checkpointCount, entries: [...]}.
Napi::Object FromLayerIndex(Napi::Env env, const core::LayerIndex& index);

}  // namespace clip::binding
