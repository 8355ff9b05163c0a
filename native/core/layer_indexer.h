// LayerIndexer: one streaming pass over a layer blob that yields everything
// the archive needs to know about it, and nothing of its contents.
//
// Bytes of the blob are pushed in chunks of any size (a file read, or a
// registry download as it streams). The indexer detects the format from the
// first bytes (gzip or plain tar; zstd, bzip2 and xz are refused as
// EUNSUPPORTED, anything else as ECORRUPT), inflates with checkpoints, parses
// the tar stream, and hashes both the blob (its digest) and the uncompressed
// stream (its diff_id).
//
// Threads: Feed/Finish run on the caller's thread and do inflation and tar
// parsing; hashing, sparse-window analysis and window compression run on one
// side thread,
// fed through a bounded queue, so a two-core host inflates and hashes at once
// and memory stays bounded (kSideQueueBytes, a 4 MiB buffer pool and the
// engine's few MiB)
// however large the layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint_index.h"
#include "inflate_engine.h"
#include "tar_entry.h"

namespace clip::core {

struct LayerIndexOptions {
  InflateEngine engine = InflateEngine::kIsal;
  uint64_t spacing = 2u << 20;                  // uncompressed bytes between checkpoints
  uint32_t proof_size = CheckpointIndex::kDefaultProofSize;  // compressed bytes per proof (see CheckpointIndex)
  uint64_t large_file_threshold = 512u << 10;   // files above this get a checkpoint of their own
  std::string name = "layer";                   // how errors name the layer (a digest or a path)
  std::string expected_digest;                  // "sha256:…"; if set, a mismatch at Finish is EDIGEST
};

struct LayerIndex {
  LayerFormat format = LayerFormat::kGzip;
  std::vector<TarEntry> entries;
  CheckpointIndex checkpoints;
  std::string digest;      // "sha256:…" of the blob as given
  std::string diff_id;     // "sha256:…" of the uncompressed tar stream
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
};

class LayerIndexer {
 public:
  static constexpr size_t kSideQueueBytes = 8u << 20;

  explicit LayerIndexer(LayerIndexOptions options);
  ~LayerIndexer();
  LayerIndexer(const LayerIndexer&) = delete;
  LayerIndexer& operator=(const LayerIndexer&) = delete;

  // Indexes `len` more bytes of the blob. Throws CoreError whose message
  // starts with the layer's name; after a throw the indexer is dead and
  // every later call throws the same error.
  void Feed(const uint8_t* data, size_t len);
  // Ends the blob and returns the index. Throws kTruncated when the blob
  // ends early (or is empty), EDIGEST on a digest mismatch.
  LayerIndex Finish();

  // Zero-copy feeding: fill a buffer from TakeBuffer (e.g. with read(2)),
  // trim it to the bytes read, and hand it to FeedOwned; after inflation it
  // moves to the hashing thread and back to the pool instead of being copied.
  std::vector<uint8_t> TakeBuffer(size_t capacity);
  void FeedOwned(std::vector<uint8_t>&& buffer);

  uint64_t bytes_fed() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Indexes the blob at `path`, reading it in 1 MiB chunks.
LayerIndex IndexLayerFile(const std::string& path, const LayerIndexOptions& options);

}  // namespace clip::core
