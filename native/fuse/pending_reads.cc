#include "pending_reads.h"

#include <cerrno>
#include <vector>

namespace clip::fuse {

PendingReads::PendingReads(std::chrono::milliseconds deadline, SessionStats& stats)
    : deadline_(deadline), stats_(stats), timer_([this] { TimerLoop(); }) {}

PendingReads::~PendingReads() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  timer_.join();
  FailAll(EIO);
}

uint64_t PendingReads::Add(fuse_req_t req, uint32_t length) {
  uint64_t id;
  bool was_empty;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    was_empty = waiting_.empty();
    waiting_.emplace(id, Entry{req, length, Clock::now() + deadline_});
  }
  // Only an entry that became the oldest changes when the timer must wake.
  if (was_empty) wake_.notify_one();
  return id;
}

bool PendingReads::Take(uint64_t id, Entry* out) {
  std::lock_guard lock(mutex_);
  auto it = waiting_.find(id);
  if (it == waiting_.end()) return false;
  *out = it->second;
  waiting_.erase(it);
  return true;
}

bool PendingReads::Complete(uint64_t id, const void* data, size_t size) {
  Entry e;
  if (!Take(id, &e)) {
    SessionStats::Add(stats_.late_answers);
    return false;
  }
  if (size != e.length) {
    SessionStats::Add(stats_.miss_failed);
    fuse_reply_err(e.req, EIO);
    return true;
  }
  SessionStats::Add(stats_.miss_completed);
  SessionStats::Add(stats_.read_bytes, size);
  fuse_reply_buf(e.req, static_cast<const char*>(data), size);
  return true;
}

bool PendingReads::Fail(uint64_t id, int error) {
  Entry e;
  if (!Take(id, &e)) {
    SessionStats::Add(stats_.late_answers);
    return false;
  }
  SessionStats::Add(stats_.miss_failed);
  fuse_reply_err(e.req, error > 0 && error < 4096 ? error : EIO);
  return true;
}

void PendingReads::FailAll(int error) {
  std::map<uint64_t, Entry> all;
  {
    std::lock_guard lock(mutex_);
    all.swap(waiting_);
  }
  for (auto& [id, e] : all) {
    SessionStats::Add(stats_.miss_failed);
    fuse_reply_err(e.req, error);
  }
}

size_t PendingReads::size() const {
  std::lock_guard lock(mutex_);
  return waiting_.size();
}

void PendingReads::TimerLoop() {
  std::vector<fuse_req_t> expired;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (waiting_.empty()) {
      wake_.wait(lock);
      continue;
    }
    const Clock::time_point now = Clock::now();
    // Ids are in deadline order: expire from the front.
    while (!waiting_.empty() && waiting_.begin()->second.deadline <= now) {
      expired.push_back(waiting_.begin()->second.req);
      waiting_.erase(waiting_.begin());
    }
    if (!expired.empty()) {
      lock.unlock();
      for (fuse_req_t req : expired) {
        SessionStats::Add(stats_.miss_timeouts);
        fuse_reply_err(req, EIO);
      }
      expired.clear();
      lock.lock();
      continue;
    }
    // A copy: wait_until keeps a reference while the lock is released, and
    // the entry may be answered and erased meanwhile.
    const Clock::time_point next = waiting_.begin()->second.deadline;
    wake_.wait_until(lock, next);
  }
}

}  // namespace clip::fuse
