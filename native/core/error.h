// Typed errors of the native core.
//
// Every failure inside core/ is a CoreError carrying a stable ErrorCode. The
// N-API binding turns it into a JavaScript Error whose `code` is the string
// from ErrorCodeName(); the FUSE layer turns it into an errno. Messages name
// what failed and, where one exists, the byte offset in the stream at fault,
// so a user can tell a corrupt layer from a truncated download.
#pragma once

#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

namespace clip::core {

enum class ErrorCode {
  kCorrupt,          // ECORRUPT: the data is not what its format says (bad CRC, bad tar checksum, bad deflate)
  kTruncated,        // ETRUNCATED: the data ends before its format says it should
  kUnsupported,      // EUNSUPPORTED: a valid format we do not handle (zstd, bzip2, GNU sparse)
  kInvalidArgument,  // EINVAL: the caller asked for something impossible (offset past end)
  kIo,               // EIO: the operating system failed a read
  kDigestMismatch,   // EDIGEST: bytes hash to something other than the digest they were named by
  kNoMemory,         // ENOMEM
};

// The stable string code for `code`, e.g. "ECORRUPT".
const char* ErrorCodeName(ErrorCode code);

class CoreError : public std::runtime_error {
 public:
  CoreError(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Throws CoreError(code, message + " at offset N") when offset is given.
[[noreturn]] void Fail(ErrorCode code, const std::string& message);
[[noreturn]] void FailAt(ErrorCode code, const std::string& message, uint64_t offset);

// The error state of a streaming job (an indexer, a fill): Run(body) runs
// `body`, prefixing any CoreError with the job's name (ENOMEM for
// bad_alloc); once a call failed, every later call throws that first error
// again, so a job left half-done by a throw is never fed on.
class StickyError {
 public:
  explicit StickyError(std::string name) : name_(std::move(name)) {}

  template <typename Body>
  void Run(Body&& body) {
    if (error_) std::rethrow_exception(error_);
    try {
      body();
    } catch (const CoreError& e) {
      error_ = std::make_exception_ptr(CoreError(e.code(), name_ + ": " + e.what()));
      std::rethrow_exception(error_);
    } catch (const std::bad_alloc&) {
      error_ = std::make_exception_ptr(CoreError(ErrorCode::kNoMemory, name_ + ": out of memory"));
      std::rethrow_exception(error_);
    }
  }

 private:
  std::string name_;
  std::exception_ptr error_;
};

}  // namespace clip::core
