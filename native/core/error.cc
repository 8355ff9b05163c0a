#include "error.h"

namespace clip::core {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kCorrupt: return "ECORRUPT";
    case ErrorCode::kTruncated: return "ETRUNCATED";
    case ErrorCode::kUnsupported: return "EUNSUPPORTED";
    case ErrorCode::kInvalidArgument: return "EINVAL";
    case ErrorCode::kIo: return "EIO";
    case ErrorCode::kDigestMismatch: return "EDIGEST";
    case ErrorCode::kNoMemory: return "ENOMEM";
  }
  return "EUNKNOWN";
}

void Fail(ErrorCode code, const std::string& message) { throw CoreError(code, message); }

void FailAt(ErrorCode code, const std::string& message, uint64_t offset) {
  throw CoreError(code, message + " at offset " + std::to_string(offset));
}

}  // namespace clip::core
