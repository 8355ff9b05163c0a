// MissHandler: how the FUSE session hands a read it cannot serve from a
// local cached layer to whoever can fetch the bytes (in the addon: a
// thread-safe call into TypeScript's storage tiers).
//
// Submit() is called on a FUSE worker thread and must never block on the
// fetch: it only queues the request. The answer comes back later, from any
// thread, through MountSession::Complete / Fail with the same id. A request
// nobody answers is failed with EIO when its deadline passes.
#pragma once

#include <cstdint>

namespace clip::fuse {

struct MissRequest {
  uint64_t id = 0;      // names the pending FUSE request (PendingReads)
  uint32_t layer = 0;   // layer index in the archive, bottom = 0
  uint64_t offset = 0;  // bytes: offset in the layer's uncompressed tar stream
  uint32_t length = 0;  // bytes wanted, exactly (already clamped to the file)
};

class MissHandler {
 public:
  virtual ~MissHandler() = default;
  // Queues `miss`. Returns false when it cannot (shutting down); the caller
  // then fails the request at once. Must not throw and must not block.
  virtual bool Submit(const MissRequest& miss) noexcept = 0;
  // The session's loop ended by itself (the mount was unmounted from
  // outside, or the connection was aborted). Called once, from the loop
  // thread, never after MountSession::Stop() began. Must not block.
  virtual void SessionEnded() noexcept = 0;
};

}  // namespace clip::fuse
