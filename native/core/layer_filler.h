// LayerFiller: writes a layer's uncompressed tar stream into a file while
// proving it, for the disk cache's fills.
//
// Blob bytes are pushed in any chunking (or read from a local blob file);
// a gzip blob is inflated (ISA-L or zlib, multi-member like gzip), a plain
// tar passes through. Every output byte is hashed and written with pwrite
// at its offset before the call returns. Memory is the inflater's and one
// read buffer, whatever the layer's size: nothing is handed back to the
// caller, so a fill costs a Node process no Buffers at all (the reason this
// exists: streaming a layer through zlib's Buffers and node:crypto left
// tens of MiB of dead Buffers behind a mount's fill; see src/mount/memory.ts).
//
// The result is accepted only by Finish(): the stream must have exactly the
// recorded size and hash to the recorded diff_id, and when a blob digest is
// given the blob bytes must have its size and hash. A stream that grows past
// the recorded size fails at once (kDigestMismatch) without writing past
// it. Bad gzip is kCorrupt, a blob that ends early kTruncated, a failed
// write kIo (ENOSPC named). After any throw the filler is dead; the caller
// discards the file.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "checkpoint_index.h"
#include "inflate_engine.h"

namespace clip::core {

struct LayerFillOptions {
  InflateEngine engine = InflateEngine::kIsal;
  LayerFormat format = LayerFormat::kGzip;
  uint64_t uncompressed_size = 0;  // the recorded size of the tar stream
  std::string diff_id;             // its recorded "sha256:…"
  std::string blob_digest;         // if set: the blob's "sha256:…", checked at Finish
  uint64_t blob_size = 0;          // with blob_digest: the blob's size
  std::string name = "layer";      // how errors name the layer
};

class LayerFiller {
 public:
  // Writes into `fd` (not owned) from offset 0.
  LayerFiller(int fd, LayerFillOptions options);
  ~LayerFiller();
  LayerFiller(const LayerFiller&) = delete;
  LayerFiller& operator=(const LayerFiller&) = delete;

  void Feed(const uint8_t* data, size_t len);
  // Feeds blob bytes [offset, offset + max_bytes) of the file at `path`
  // (fewer at its end), checking `cancelled` between reads (kIo when set:
  // an abandoned fill stops within one read). Returns the bytes fed, 0 at
  // the end of the file. A caller on a shared thread pool feeds a large
  // blob in pieces, so a fill never holds a pool thread for a whole layer.
  size_t FeedFileRange(const std::string& path, uint64_t offset, uint64_t max_bytes, const std::atomic<bool>& cancelled);
  // Feeds the whole blob file at `path` (FeedFileRange piece after piece).
  void FeedFile(const std::string& path, const std::atomic<bool>& cancelled);
  // Ends the blob and checks it (see above).
  void Finish();

  uint64_t blob_bytes() const;
  uint64_t written() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace clip::core
