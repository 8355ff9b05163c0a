#include "layer_filler.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "checkpointing_inflater.h"
#include "error.h"
#include "file_descriptor.h"
#include "sha256.h"

namespace clip::core {

class LayerFiller::Impl {
 public:
  Impl(int fd, LayerFillOptions options) : fd_(fd), options_(std::move(options)), guard_(options_.name) {
    if (!options_.blob_digest.empty()) blob_hash_ = std::make_unique<Sha256>();
    if (options_.format == LayerFormat::kGzip) {
      // Spacing 0: no checkpoints but the (empty-window) ones at member
      // starts, which are of no use here.
      inflater_ = std::make_unique<CheckpointingInflater>(
          options_.engine, 0, [this](const uint8_t* data, size_t len, uint64_t) { Output(data, len); },
          CheckpointingInflater::CheckpointSink(
              [](uint64_t, uint64_t, uint8_t, CheckpointKind, std::span<const uint8_t>) {}));
    }
  }

  void Feed(const uint8_t* data, size_t len) {
    Guard([&] { FeedUnguarded(data, len); });
  }

  size_t FeedFileRange(const std::string& path, uint64_t offset, uint64_t max_bytes, const std::atomic<bool>& cancelled) {
    size_t fed = 0;
    Guard([&] {
      FileDescriptor in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!in.valid()) Fail(ErrorCode::kIo, "cannot open " + path + ": " + std::strerror(errno));
      ::posix_fadvise(in.get(), static_cast<off_t>(offset), static_cast<off_t>(max_bytes), POSIX_FADV_SEQUENTIAL);
      buffer_.resize(kReadBytes);
      while (fed < max_bytes) {
        if (cancelled.load(std::memory_order_relaxed)) Fail(ErrorCode::kIo, "the fill was cancelled");
        const size_t want = static_cast<size_t>(std::min<uint64_t>(buffer_.size(), max_bytes - fed));
        ssize_t n;
        do {
          n = ::pread(in.get(), buffer_.data(), want, static_cast<off_t>(offset + fed));
        } while (n < 0 && errno == EINTR);
        if (n < 0) Fail(ErrorCode::kIo, "cannot read " + path + ": " + std::strerror(errno));
        if (n == 0) break;
        FeedUnguarded(buffer_.data(), static_cast<size_t>(n));
        fed += static_cast<size_t>(n);
      }
    });
    return fed;
  }

  void Finish() {
    Guard([&] {
      if (finished_) Fail(ErrorCode::kInvalidArgument, "the fill has finished");
      finished_ = true;
      if (inflater_) inflater_->Finish();
      if (blob_hash_) {
        const std::string digest = blob_hash_->FinishDigest();
        if (blob_bytes_ != options_.blob_size || digest != options_.blob_digest) {
          Fail(ErrorCode::kDigestMismatch, "the blob is " + std::to_string(blob_bytes_) + " bytes hashing to " + digest +
                                               "; its descriptor says " + std::to_string(options_.blob_size) + " bytes, " +
                                               options_.blob_digest);
        }
      }
      const std::string diff_id = output_hash_.FinishDigest();
      if (written_ != options_.uncompressed_size || diff_id != options_.diff_id) {
        Fail(ErrorCode::kDigestMismatch, "its uncompressed stream is " + std::to_string(written_) + " bytes hashing to " +
                                             diff_id + "; the archive records " + std::to_string(options_.uncompressed_size) +
                                             " bytes, " + options_.diff_id);
      }
    });
  }

  uint64_t blob_bytes() const { return blob_bytes_; }
  uint64_t written() const { return written_; }

 private:
  // Blob bytes per read of a local blob file: large enough for few syscalls,
  // small next to the inflater's own buffers.
  static constexpr size_t kReadBytes = 256u << 10;

  template <typename Body>
  void Guard(Body&& body) {
    guard_.Run(std::forward<Body>(body));
  }

  void FeedUnguarded(const uint8_t* data, size_t len) {
    if (finished_) Fail(ErrorCode::kInvalidArgument, "the fill has finished");
    if (blob_hash_) blob_hash_->Update(data, len);
    blob_bytes_ += len;
    if (inflater_) {
      inflater_->Feed(data, len);
    } else {
      Output(data, len);
    }
  }

  void Output(const uint8_t* data, size_t len) {
    if (len > options_.uncompressed_size - written_) {
      Fail(ErrorCode::kDigestMismatch,
           "the stream is longer than the " + std::to_string(options_.uncompressed_size) + " bytes recorded");
    }
    output_hash_.Update(data, len);
    size_t done = 0;
    while (done < len) {
      const ssize_t n = ::pwrite(fd_, data + done, len - done, static_cast<off_t>(written_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        Fail(ErrorCode::kIo, std::string(err == ENOSPC ? "disk full (ENOSPC)" : "cannot write") + " at offset " +
                                 std::to_string(written_ + done) + ": " + std::strerror(err));
      }
      done += static_cast<size_t>(n);
    }
    written_ += len;
  }

  int fd_;
  LayerFillOptions options_;
  std::unique_ptr<CheckpointingInflater> inflater_;
  Sha256 output_hash_;
  std::unique_ptr<Sha256> blob_hash_;
  std::vector<uint8_t> buffer_;  // FeedFileRange's reads
  uint64_t blob_bytes_ = 0;
  uint64_t written_ = 0;
  bool finished_ = false;
  StickyError guard_;
};

LayerFiller::LayerFiller(int fd, LayerFillOptions options) : impl_(std::make_unique<Impl>(fd, std::move(options))) {}
LayerFiller::~LayerFiller() = default;
void LayerFiller::Feed(const uint8_t* data, size_t len) { impl_->Feed(data, len); }
size_t LayerFiller::FeedFileRange(const std::string& path, uint64_t offset, uint64_t max_bytes,
                                  const std::atomic<bool>& cancelled) {
  return impl_->FeedFileRange(path, offset, max_bytes, cancelled);
}
void LayerFiller::FeedFile(const std::string& path, const std::atomic<bool>& cancelled) {
  constexpr uint64_t kPiece = 64u << 20;
  for (uint64_t at = 0;;) {
    const size_t n = impl_->FeedFileRange(path, at, kPiece, cancelled);
    if (n == 0) return;
    at += n;
  }
}
void LayerFiller::Finish() { impl_->Finish(); }
uint64_t LayerFiller::blob_bytes() const { return impl_->blob_bytes(); }
uint64_t LayerFiller::written() const { return impl_->written(); }

}  // namespace clip::core
