// Conversions between core structs and plain JavaScript values, and the
// argument checks the binding does itself (TypeScript checks the rest).
#pragma once

#include <napi.h>

#include <string>
#include <string_view>

#include "../core/layer_indexer.h"

namespace clip::binding {

// Reads {engine, spacing, largeFileThreshold, name, expectedDigest} from `options`.
core::LayerIndexOptions ToIndexOptions(Napi::Env env, Napi::Value options);
core::InflateEngine ToEngine(Napi::Env env, Napi::Value value);
uint64_t ToOffset(Napi::Env env, Napi::Value value, const char* what);
// The whole index as a plain object: {format, digest, diffId, compressedSize,
// uncompressedSize, checkpoints: Buffer, checkpointCount, entries: [...]}.
Napi::Object FromLayerIndex(Napi::Env env, const core::LayerIndex& index);

// Paths (tar names, link targets, directory entry names) are bytes that need
// not be UTF-8. They cross to JavaScript losslessly: valid UTF-8 as a string,
// anything else as a Buffer holding the UTF-16LE of its escaped form, in
// which each byte that is not part of a valid UTF-8 sequence is the lone
// surrogate U+DC00 + byte (Python's "surrogateescape"; no valid UTF-8
// decodes to one). src/path-bytes.ts turns the Buffer into the
// string (fromNativePath) and strings back into bytes (pathBytes).
Napi::Value PathToJs(Napi::Env env, std::string_view bytes);
// A path string back to its bytes (a lone surrogate outside U+DC80..U+DCFF,
// which PathToJs never makes, becomes U+FFFD, as Node's UTF-8 encoder does).
// A Buffer is taken as the bytes themselves. Throws EINVAL for other values.
std::string PathFromJs(Napi::Env env, Napi::Value value, const char* what);

}  // namespace clip::binding
