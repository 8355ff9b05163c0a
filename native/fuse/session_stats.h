// SessionStats: counters of one mount, bumped lock-free by the FUSE threads
// and read as a snapshot by stats(). Relaxed atomics: the numbers are for
// people and benchmarks, not for synchronisation.
#pragma once

#include <atomic>
#include <cstdint>

namespace clip::fuse {

struct SessionStatsSnapshot {
  uint64_t lookups = 0;
  uint64_t negative_lookups = 0;
  uint64_t getattrs = 0;
  uint64_t readdirs = 0;
  uint64_t opens = 0;
  uint64_t reads = 0;          // read requests with at least one byte to send
  uint64_t read_bytes = 0;     // bytes answered to reads, both paths
  uint64_t cached_reads = 0;   // served by splice from a cached layer file
  uint64_t cached_bytes = 0;
  uint64_t misses = 0;         // handed to the MissHandler
  uint64_t miss_bytes = 0;
  uint64_t miss_completed = 0;
  uint64_t miss_failed = 0;    // failed by the handler (its errno)
  uint64_t miss_timeouts = 0;  // failed with EIO by the deadline
  uint64_t late_answers = 0;   // Complete/Fail for a request already answered
  uint64_t pending = 0;        // misses waiting right now
  uint64_t layers_open = 0;    // cached layer files open and pinned
  uint64_t passthrough_opens = 0;  // opens the kernel serves from a backing file
  uint64_t backing_copies = 0;     // large files copied out of their layer for passthrough
  uint64_t errors = 0;         // callbacks that caught an exception
  uint64_t erofs = 0;          // write-type requests refused
};

class SessionStats {
 public:
  using Counter = std::atomic<uint64_t>;
  static void Add(Counter& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

  Counter lookups{0}, negative_lookups{0}, getattrs{0}, readdirs{0}, opens{0};
  Counter reads{0}, read_bytes{0}, cached_reads{0}, cached_bytes{0};
  Counter misses{0}, miss_bytes{0}, miss_completed{0}, miss_failed{0}, miss_timeouts{0}, late_answers{0};
  Counter passthrough_opens{0}, backing_copies{0};
  Counter errors{0}, erofs{0};

  SessionStatsSnapshot Snapshot() const {
    auto g = [](const Counter& c) { return c.load(std::memory_order_relaxed); };
    SessionStatsSnapshot s;
    s.lookups = g(lookups);
    s.negative_lookups = g(negative_lookups);
    s.getattrs = g(getattrs);
    s.readdirs = g(readdirs);
    s.opens = g(opens);
    s.reads = g(reads);
    s.read_bytes = g(read_bytes);
    s.cached_reads = g(cached_reads);
    s.cached_bytes = g(cached_bytes);
    s.misses = g(misses);
    s.miss_bytes = g(miss_bytes);
    s.miss_completed = g(miss_completed);
    s.miss_failed = g(miss_failed);
    s.miss_timeouts = g(miss_timeouts);
    s.late_answers = g(late_answers);
    s.passthrough_opens = g(passthrough_opens);
    s.backing_copies = g(backing_copies);
    s.errors = g(errors);
    s.erofs = g(erofs);
    return s;
  }
};

}  // namespace clip::fuse
