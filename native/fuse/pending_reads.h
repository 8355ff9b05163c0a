// PendingReads: the FUSE read requests waiting for bytes from a MissHandler,
// and the guarantee that each gets exactly one reply.
//
// A request enters with Add() and leaves through exactly one of Complete(),
// Fail(), the deadline (EIO, answered by this class's timer thread) or
// FailAll(). Whoever removes it from the table under the lock is the one who
// replies, after releasing the lock (a reply is a write to /dev/fuse and
// must not hold up other threads); any later answer for the same id finds
// nothing and is dropped. Every request has the same deadline length, so
// ids (handed out in increasing order) are also in deadline order and the
// timer only ever looks at the oldest entry.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>

#include "fuse_api.h"
#include "session_stats.h"

namespace clip::fuse {

class PendingReads {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts the deadline timer thread. `stats` must outlive this object.
  PendingReads(std::chrono::milliseconds deadline, SessionStats& stats);
  PendingReads(const PendingReads&) = delete;
  PendingReads& operator=(const PendingReads&) = delete;
  // Stops the timer and fails whatever is still waiting with EIO.
  ~PendingReads();

  // Registers `req`, which wants exactly `length` bytes; returns its id (> 0).
  uint64_t Add(fuse_req_t req, uint32_t length);

  // Answers `id` with `size` bytes at `data`. A size other than the length
  // asked for answers EIO instead (never short or wrong bytes). Returns
  // false when `id` is not waiting (answered, timed out, or unknown).
  bool Complete(uint64_t id, const void* data, size_t size);
  // Answers `id` with errno `error` (a positive errno; anything else is
  // sent as EIO). Returns false when `id` is not waiting.
  bool Fail(uint64_t id, int error);
  // Answers every waiting request with `error` (shutdown).
  void FailAll(int error);

  size_t size() const;

 private:
  struct Entry {
    fuse_req_t req;
    uint32_t length;  // bytes
    Clock::time_point deadline;
  };

  // Removes `id` under the lock; returns whether it was there.
  bool Take(uint64_t id, Entry* out);
  void TimerLoop();

  const std::chrono::milliseconds deadline_;
  SessionStats& stats_;

  // Lock order: mutex_ is a leaf; nothing else is locked while it is held,
  // and no fuse_reply_* is called under it.
  mutable std::mutex mutex_;
  std::condition_variable wake_;  // a new oldest entry, or stopping
  std::map<uint64_t, Entry> waiting_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;

  std::thread timer_;  // last: started after every member above exists
};

}  // namespace clip::fuse
