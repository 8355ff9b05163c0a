// LayerIndexer: see layer_indexer.h. The side thread is the only owner of
// the SHA-256 states (blob, tar stream, spans), the sparse-window analyser
// and the CheckpointIndex while indexing runs; the caller's thread only hands
// it buffers it gives up (blob chunks, full output buffers, a checkpoint's
// window and the bytes around it) through the queue, so no lock guards
// anything but the queue and the buffer pool.
#include "layer_indexer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "checkpointing_inflater.h"
#include "error.h"
#include "file_descriptor.h"
#include "sha256.h"
#include "tar_parser.h"

namespace clip::core {
namespace {

// The proof digests of a gzip blob (see checkpoint_index.h), hashed as the
// blob streams by. Checkpoints report where their spans start (Start) at
// least before any blob byte at or past `settled` is handed over (Add), so
// bytes below `settled` can be hashed into every span they belong to at
// once; the few bytes above it wait in `held_` until the next chunk. Each
// span is cut into proofs of proof_size bytes from its start.
class SpanHasher {
 public:
  using Digest = std::array<uint8_t, Sha256::kSize>;

  explicit SpanHasher(uint64_t proof_size) : proof_size_(proof_size) {}

  void Start(uint64_t compressed_offset, uint8_t bits) {
    const uint64_t begin = compressed_offset - (bits > 0 ? 1 : 0);
    if (begin < hashed_to_ || compressed_offset < (open_.empty() ? 0 : open_.back().begin)) {
      Fail(ErrorCode::kInvalidArgument, "span digests: a checkpoint was reported after its bytes were hashed");
    }
    if (!open_.empty()) open_.back().end = compressed_offset;
    open_.push_back({std::make_unique<Sha256>(), begin, kOpenEnd, begin, {}});
    Close();
  }

  // Blob bytes that follow the previous ones; those below `settled` are hashed.
  void Add(const uint8_t* data, size_t len, uint64_t settled) {
    const uint64_t at = received_;
    received_ += len;
    const uint64_t limit = std::min(received_, settled);
    if (!held_.empty()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(held_.size(), limit > hashed_to_ ? limit - hashed_to_ : 0));
      Hash(held_.data(), n);
      held_.erase(held_.begin(), held_.begin() + static_cast<ptrdiff_t>(n));
      if (!held_.empty()) {
        held_.insert(held_.end(), data, data + len);
        return;
      }
    }
    const size_t n = limit > at ? static_cast<size_t>(limit - at) : 0;
    Hash(data, n);
    held_.insert(held_.end(), data + n, data + len);
  }

  // The blob has ended: hashes what is held and returns each span's proof digests.
  std::vector<std::vector<Digest>> Finish() {
    Hash(held_.data(), held_.size());
    held_.clear();
    if (!open_.empty()) open_.back().end = received_;
    Close();
    return std::move(digests_);
  }

 private:
  static constexpr uint64_t kOpenEnd = ~uint64_t{0};
  struct Span {
    std::unique_ptr<Sha256> sha;  // the current proof's
    uint64_t begin;
    uint64_t end;          // kOpenEnd until the next span starts
    uint64_t proof_begin;  // blob offset of the current proof's first byte
    std::vector<Digest> proofs;
  };

  // Hashes blob bytes [hashed_to_, hashed_to_ + n) into the spans' proofs they fall in.
  void Hash(const uint8_t* data, size_t n) {
    const uint64_t from = hashed_to_, to = hashed_to_ + n;
    for (Span& span : open_) {
      uint64_t b = std::max(from, span.begin);
      const uint64_t e = std::min(to, span.end);
      while (b < e) {
        const uint64_t proof_end = span.proof_begin + proof_size_;
        const uint64_t piece = std::min(e, proof_end);
        span.sha->Update(data + (b - from), static_cast<size_t>(piece - b));
        b = piece;
        if (b == proof_end && b < span.end) EndProof(span);
      }
    }
    hashed_to_ = to;
    Close();
  }

  void EndProof(Span& span) {
    span.sha->Finish(span.proofs.emplace_back().data());
    span.sha = std::make_unique<Sha256>();
    span.proof_begin += proof_size_;
  }

  // Finishes the spans whose every byte has been hashed, in order. A span
  // ending right at a proof boundary has no bytes in its current proof;
  // an empty span still has one (empty) proof.
  void Close() {
    while (!open_.empty() && open_.front().end != kOpenEnd && open_.front().end <= hashed_to_) {
      Span& span = open_.front();
      if (span.end > span.proof_begin || span.proofs.empty()) EndProof(span);
      digests_.push_back(std::move(span.proofs));
      open_.pop_front();
    }
  }

  const uint64_t proof_size_;
  std::deque<Span> open_;  // spans not yet finished, in order; only the last one has no end yet
  std::vector<uint8_t> held_;  // blob bytes [hashed_to_, received_) not yet below `settled`
  uint64_t hashed_to_ = 0;
  uint64_t received_ = 0;
  std::vector<std::vector<Digest>> digests_;
};

// Work for the side thread, in stream order.
struct SideTask {
  enum class Kind { kCompressed, kUncompressed, kBoth, kCheckpoint, kSpanStart, kStop };
  Kind kind = Kind::kStop;
  std::vector<uint8_t> bytes;  // blob bytes or tar bytes
  WindowAnalysis window;       // a checkpoint's window, made sparse on the side thread
  uint64_t uncompressed_offset = 0;
  uint64_t compressed_offset = 0;
  uint8_t bits = 0;
  CheckpointKind checkpoint_kind = CheckpointKind::kBlock;
  uint64_t settled = 0;  // kCompressed of a gzip blob: SpanHasher::Add's `settled`
  bool spans = false;    // kCompressed: also hash into span digests (gzip)
  size_t from = 0, to = 0;  // kUncompressed: hash bytes[from, to)

  size_t size() const { return bytes.size() + window.bytes(); }
};

// One thread that hashes both streams and makes checkpoint windows sparse
// and compresses them: everything the indexing pass does besides inflating
// and parsing, so on two cores it runs beside inflation.
// Push() blocks while more than `limit` bytes wait, which is what bounds the
// indexer's memory when the side thread is slower than inflation.
class SideWorker {
 public:
  SideWorker(size_t limit, CheckpointIndex& index, InflateEngine engine, uint64_t proof_size)
      : limit_(limit), index_(index), sparsifier_(engine), spans_(proof_size), thread_([this] { Run(); }) {}
  ~SideWorker() {
    if (thread_.joinable()) {
      Push({});  // kStop
      thread_.join();
    }
  }

  void Push(SideTask&& task) {
    std::unique_lock lock(mutex_);
    const bool stop = task.kind == SideTask::Kind::kStop;
    if (!stop) {
      space_.wait(lock, [&] { return queued_bytes_ < limit_ || failed_; });
      if (failed_) return;  // the error surfaces at Finish
    }
    queued_bytes_ += task.size();
    queue_.push_back(std::move(task));
    // Waking the side thread costs a futex call and a context switch; it is
    // faster than inflation, so it would sleep and be woken for every chunk.
    // Wake it only once a batch is waiting (or to stop).
    if (stop || queued_bytes_ >= kWakeBytes) ready_.notify_one();
  }

  // A buffer from the pool, empty, for the caller to fill (e.g. by read(2)).
  // Its contents are whatever it held before: resizing within a recycled
  // buffer's old size writes nothing.
  std::vector<uint8_t> TakeEmptyBuffer(size_t capacity) {
    std::vector<uint8_t> buffer;
    {
      std::lock_guard lock(mutex_);
      if (!pool_.empty()) {
        buffer = std::move(pool_.back());
        pool_.pop_back();
        pool_bytes_ -= buffer.capacity();
      }
    }
    buffer.resize(capacity);
    return buffer;
  }

  // A buffer for the next task, recycled from finished ones so that steady
  // state indexing allocates (and page-faults) nothing new.
  std::vector<uint8_t> TakeBuffer(const uint8_t* data, size_t len) {
    std::vector<uint8_t> buffer = TakeEmptyBuffer(len);
    if (len > 0) std::memcpy(buffer.data(), data, len);
    return buffer;
  }

  // Drains the queue, stops the thread, rethrows what it threw; then gives
  // the span digests to the index's checkpoints (gzip).
  // `proof_outputs` maps a measured proof end (blob offset) to its output
  // (CheckpointingInflater::MeasureProofs); the index's sizes must be set.
  void Finish(std::string& digest, std::string& diff_id, const std::map<uint64_t, uint64_t>& proof_outputs) {
    Push({});
    thread_.join();
    if (error_) std::rethrow_exception(error_);
    digest = compressed_.FinishDigest();
    diff_id = uncompressed_.FinishDigest();
    if (index_.format != LayerFormat::kGzip) return;
    auto span_digests = spans_.Finish();
    if (span_digests.size() != index_.checkpoints.size()) {
      Fail(ErrorCode::kInvalidArgument, "span digests: " + std::to_string(span_digests.size()) + " spans for " +
                                            std::to_string(index_.checkpoints.size()) + " checkpoints (a bug)");
    }
    index_.SetProofOutputs(proof_outputs);
    for (size_t i = 0; i < span_digests.size(); ++i) {
      std::vector<Proof>& proofs = index_.checkpoints[i].proofs;
      if (span_digests[i].size() != proofs.size()) {
        Fail(ErrorCode::kInvalidArgument, "span digests: " + std::to_string(span_digests[i].size()) +
                                              " proofs for span " + std::to_string(i) + " (a bug)");
      }
      for (size_t j = 0; j < proofs.size(); ++j) proofs[j].digest = span_digests[i][j];
    }
  }

 private:
  void Run() {
    for (;;) {
      SideTask task;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] {
          return !queue_.empty() && (queued_bytes_ >= kWakeBytes || queue_.back().kind == SideTask::Kind::kStop);
        });
        task = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= task.size();
        space_.notify_one();
      }
      if (task.kind == SideTask::Kind::kStop) return;
      if (error_) continue;
      try {
        switch (task.kind) {
          case SideTask::Kind::kCompressed:
            compressed_.Update(task.bytes.data(), task.bytes.size());
            if (task.spans) spans_.Add(task.bytes.data(), task.bytes.size(), task.settled);
            Recycle(std::move(task.bytes));
            break;
          case SideTask::Kind::kSpanStart:
            spans_.Start(task.compressed_offset, task.bits);
            break;
          case SideTask::Kind::kUncompressed:
            uncompressed_.Update(task.bytes.data() + task.from, task.to - task.from);
            Recycle(std::move(task.bytes));
            break;
          case SideTask::Kind::kBoth:
            compressed_.Update(task.bytes.data(), task.bytes.size());
            uncompressed_.Update(task.bytes.data(), task.bytes.size());
            Recycle(std::move(task.bytes));
            break;
          case SideTask::Kind::kCheckpoint:
            sparsifier_.Sparsify(task.window);
            index_.Add(task.uncompressed_offset, task.compressed_offset, task.bits, task.checkpoint_kind,
                       task.window.window);
            break;
          case SideTask::Kind::kStop: break;
        }
      } catch (...) {
        std::lock_guard lock(mutex_);
        error_ = std::current_exception();
        failed_ = true;
        space_.notify_all();
      }
    }
  }

  void Recycle(std::vector<uint8_t>&& buffer) {
    std::lock_guard lock(mutex_);
    if (pool_bytes_ + buffer.capacity() > kPoolBytes) return;  // freed here instead
    pool_bytes_ += buffer.capacity();
    pool_.push_back(std::move(buffer));
  }
  // Spent buffers kept for reuse, by capacity: enough for the chunks in
  // flight at steady state, small next to the queue itself.
  static constexpr size_t kPoolBytes = 4u << 20;
  static constexpr size_t kWakeBytes = 1u << 20;

  const size_t limit_;
  CheckpointIndex& index_;
  WindowSparsifier sparsifier_;
  Sha256 compressed_;
  Sha256 uncompressed_;
  SpanHasher spans_;
  // Lock order: mutex_ is a leaf; nothing else is taken while holding it.
  std::mutex mutex_;
  std::condition_variable ready_;
  std::condition_variable space_;
  std::deque<SideTask> queue_;
  std::vector<std::vector<uint8_t>> pool_;  // spent buffers, guarded by mutex_
  size_t pool_bytes_ = 0;                   // their capacity, guarded by mutex_
  size_t queued_bytes_ = 0;
  bool failed_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after every member above exists
};

bool StartsWith(const std::vector<uint8_t>& head, std::initializer_list<uint8_t> magic) {
  if (head.size() < magic.size()) return false;
  size_t i = 0;
  for (uint8_t b : magic)
    if (head[i++] != b) return false;
  return true;
}

// True when `block` (512 bytes) is a tar header with a valid checksum, or all zeros.
bool LooksLikeTarHeader(const uint8_t* block) {
  uint64_t sum = 0;
  bool all_zero = true;
  for (int i = 0; i < 512; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : block[i];
    all_zero = all_zero && block[i] == 0;
  }
  if (all_zero) return true;
  uint64_t stored = 0;
  bool digits = false;
  for (int i = 148; i < 156; ++i) {
    uint8_t c = block[i];
    if (c >= '0' && c <= '7') {
      stored = stored * 8 + (c - '0');
      digits = true;
    } else if (c == ' ' || c == 0) {
      if (digits) break;
    } else {
      return false;
    }
  }
  return digits && stored == sum;
}

uint64_t CheckedProofSize(uint32_t proof_size) {
  if (proof_size < CheckpointIndex::kMinProofSize || proof_size > CheckpointIndex::kMaxProofSize) {
    Fail(ErrorCode::kInvalidArgument, "proof size " + std::to_string(proof_size) + " is out of range (" +
                                          std::to_string(CheckpointIndex::kMinProofSize) + " to " +
                                          std::to_string(CheckpointIndex::kMaxProofSize) + ")");
  }
  return proof_size;
}

}  // namespace

class LayerIndexer::Impl {
 public:
  explicit Impl(LayerIndexOptions options)
      : options_(std::move(options)),
        side_(kSideQueueBytes, result_.checkpoints, options_.engine, CheckedProofSize(options_.proof_size)),
        parser_([this](TarEntry&& entry) { OnEntry(std::move(entry)); }),
        guard_(options_.name) {
    result_.checkpoints.proof_size = options_.proof_size;
  }

  void Feed(const uint8_t* data, size_t len) {
    Guard([&] {
      fed_ += len;
      if (!decided_) {
        head_.insert(head_.end(), data, data + len);
        if (head_.size() < 512 && !StartsWith(head_, {0x1f, 0x8b})) return;
        Decide();
        std::vector<uint8_t> head = std::move(head_);
        Dispatch(head.data(), head.size());
        return;
      }
      Dispatch(data, len);
    });
  }

  // Like Feed, for a buffer the indexer may keep: it goes to the hashing
  // thread after inflation instead of being copied first.
  void FeedOwned(std::vector<uint8_t>&& buffer) {
    if (!decided_ || !inflater_) {
      Feed(buffer.data(), buffer.size());
      return;
    }
    Guard([&] {
      fed_ += buffer.size();
      inflater_->Feed(buffer.data(), buffer.size());
      SideTask task;
      task.kind = SideTask::Kind::kCompressed;
      task.bytes = std::move(buffer);
      task.spans = true;
      task.settled = inflater_->settled_input();
      side_.Push(std::move(task));
    });
  }

  std::vector<uint8_t> TakeBuffer(size_t capacity) { return side_.TakeEmptyBuffer(capacity); }

  LayerIndex Finish() {
    Guard([&] {
      if (!decided_) {
        if (head_.empty()) Fail(ErrorCode::kTruncated, "the blob is empty");
        Decide();
        std::vector<uint8_t> head = std::move(head_);
        Dispatch(head.data(), head.size());
      }
      if (inflater_) inflater_->Finish();
      parser_.Finish();
      result_.checkpoints.format = result_.format;
      result_.checkpoints.compressed_size = fed_;
      result_.checkpoints.uncompressed_size = produced_;
      side_.Finish(result_.digest, result_.diff_id, proof_outputs_);
      if (!options_.expected_digest.empty() && options_.expected_digest != result_.digest)
        Fail(ErrorCode::kDigestMismatch,
             "blob digest is " + result_.digest + ", expected " + options_.expected_digest);
    });
    result_.compressed_size = fed_;
    result_.uncompressed_size = produced_;
    result_.checkpoints.format = result_.format;
    result_.checkpoints.compressed_size = fed_;
    result_.checkpoints.uncompressed_size = produced_;
    result_.checkpoints.spacing = options_.spacing;
    return std::move(result_);
  }

  uint64_t fed() const { return fed_; }

 private:
  template <typename Body>
  void Guard(Body&& body) {
    guard_.Run(std::forward<Body>(body));
  }

  void Decide() {
    decided_ = true;
    if (StartsWith(head_, {0x1f, 0x8b})) {
      result_.format = LayerFormat::kGzip;
      inflater_ = std::make_unique<CheckpointingInflater>(
          options_.engine, options_.spacing,
          [this](const uint8_t* data, size_t len, uint64_t offset) { OnOutput(data, len, offset); },
          CheckpointingInflater::DeferredCheckpointSink(
              [this](uint64_t uoff, uint64_t coff, uint8_t bits, CheckpointKind kind, WindowAnalysis&& window) {
            SideTask task;
            task.kind = SideTask::Kind::kCheckpoint;
            task.window = std::move(window);
            task.uncompressed_offset = uoff;
            task.compressed_offset = coff;
            task.bits = bits;
            task.checkpoint_kind = kind;
            side_.Push(std::move(task));
          }));
      // The inflater's output buffers themselves go to the side thread to be
      // hashed (no copy of the tar stream on the inflation path).
      inflater_->HandOffOutputBuffers([this](size_t size) { return side_.TakeEmptyBuffer(size); },
                                      [this](std::vector<uint8_t>&& buffer, size_t begin, size_t end) {
                                        SideTask task;
                                        task.kind = SideTask::Kind::kUncompressed;
                                        task.bytes = std::move(buffer);
                                        task.from = begin;
                                        task.to = end;
                                        side_.Push(std::move(task));
                                      });
      inflater_->MeasureProofs(options_.proof_size, [this](uint64_t compressed_offset, uint64_t output_end) {
        proof_outputs_.emplace_hint(proof_outputs_.end(), compressed_offset, output_end);
      });
      inflater_->OnSpanStart([this](uint64_t compressed_offset, uint8_t bits) {
        SideTask task;
        task.kind = SideTask::Kind::kSpanStart;
        task.compressed_offset = compressed_offset;
        task.bits = bits;
        side_.Push(std::move(task));
      });
      return;
    }
    if (StartsWith(head_, {0x28, 0xb5, 0x2f, 0xfd}))
      Fail(ErrorCode::kUnsupported, "zstd-compressed layers are not supported (gzip and plain tar are)");
    if (StartsWith(head_, {'B', 'Z', 'h'}))
      Fail(ErrorCode::kUnsupported, "bzip2-compressed layers are not supported (gzip and plain tar are)");
    if (StartsWith(head_, {0xfd, '7', 'z', 'X', 'Z', 0x00}))
      Fail(ErrorCode::kUnsupported, "xz-compressed layers are not supported (gzip and plain tar are)");
    if (head_.size() < 512) FailAt(ErrorCode::kTruncated, "the blob ends inside the first tar header", head_.size());
    if (!LooksLikeTarHeader(head_.data()))
      FailAt(ErrorCode::kCorrupt, "the blob is neither gzip nor tar (no gzip magic, bad tar header checksum)", 0);
    result_.format = LayerFormat::kTar;
  }

  void Dispatch(const uint8_t* data, size_t len) {
    if (len == 0) return;
    SideTask task;
    task.bytes = side_.TakeBuffer(data, len);
    if (inflater_) {
      // Inflate first: the checkpoints it finds in these bytes reach the
      // side thread before the bytes do (see SpanHasher).
      inflater_->Feed(data, len);
      task.kind = SideTask::Kind::kCompressed;
      task.spans = true;
      task.settled = inflater_->settled_input();
      side_.Push(std::move(task));
    } else {
      task.kind = SideTask::Kind::kBoth;
      side_.Push(std::move(task));
      OnTar(data, len, produced_);
    }
  }

  // The bytes reach the side thread in the inflater's retired output buffers.
  void OnOutput(const uint8_t* data, size_t len, uint64_t offset) { OnTar(data, len, offset); }

  void OnTar(const uint8_t* data, size_t len, uint64_t offset) {
    produced_ = offset + len;
    parser_.Feed(data, len, offset);
  }

  void OnEntry(TarEntry&& entry) {
    if (inflater_ && entry.type == EntryType::kRegular && entry.size > options_.large_file_threshold)
      inflater_->RequestCheckpoint();
    result_.entries.push_back(std::move(entry));
  }

  LayerIndexOptions options_;
  LayerIndex result_;
  SideWorker side_;
  TarParser parser_;
  std::unique_ptr<CheckpointingInflater> inflater_;
  std::vector<uint8_t> head_;  // first bytes, until the format is known
  bool decided_ = false;
  uint64_t fed_ = 0;       // blob bytes
  uint64_t produced_ = 0;  // tar stream bytes
  std::map<uint64_t, uint64_t> proof_outputs_;  // measured proof end (blob offset) -> output_end
  StickyError guard_;
};

LayerIndexer::LayerIndexer(LayerIndexOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
LayerIndexer::~LayerIndexer() = default;
void LayerIndexer::Feed(const uint8_t* data, size_t len) { impl_->Feed(data, len); }
LayerIndex LayerIndexer::Finish() { return impl_->Finish(); }
uint64_t LayerIndexer::bytes_fed() const { return impl_->fed(); }
std::vector<uint8_t> LayerIndexer::TakeBuffer(size_t capacity) { return impl_->TakeBuffer(capacity); }
void LayerIndexer::FeedOwned(std::vector<uint8_t>&& buffer) { impl_->FeedOwned(std::move(buffer)); }

LayerIndex IndexLayerFile(const std::string& path, const LayerIndexOptions& options) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) Fail(ErrorCode::kIo, options.name + ": cannot open " + path + ": " + std::strerror(errno));
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  LayerIndexer indexer(options);
  constexpr size_t kChunk = 1u << 20;
  for (;;) {
    // Read straight into a pooled buffer that then moves to the hashing
    // thread: the blob is never copied.
    std::vector<uint8_t> buffer = indexer.TakeBuffer(kChunk);
    ssize_t n;
    do {
      n = ::read(fd.get(), buffer.data(), buffer.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) Fail(ErrorCode::kIo, options.name + ": cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) break;
    buffer.resize(static_cast<size_t>(n));
    indexer.FeedOwned(std::move(buffer));
  }
  return indexer.Finish();
}

}  // namespace clip::core
