// TarParser: a push parser for the tar stream inside an OCI layer.
//
// The parser is a small state machine over 512-byte blocks. Between entries
// it collects one header block (in place when the chunk holds a whole block,
// otherwise through a 512-byte buffer); after a regular file's header it only
// counts down the content bytes (padded to the block size) without touching
// them, so skipping is O(1) per chunk whatever the file size. The payloads of
// PAX ('x', 'g') and GNU long-name ('L', 'K') records are the only bytes it
// copies, each bounded by kMaxMetadataRecord. An entry is emitted as soon as
// its header has been parsed, before its content goes by, so the indexer
// knows data_offset while the bytes are still streaming.
//
// Compatibility choices (containerd unpacks layers with Go's archive/tar, so
// where tools disagree we side with Go, and with Python's tarfile, our test
// oracle):
//   - Numeric fields: octal digits with leading/trailing spaces or NULs (a
//     blank field is 0), or GNU base-256 (first byte's high bit set, two's
//     complement, so negative values work). Anything else is kCorrupt.
//   - Checksum: the unsigned byte sum or the signed-char sum (old Sun and
//     some GNU tars) are both accepted.
//   - Hardlinks, symlinks, devices, fifos and directories carry no content:
//     their declared size is reported as 0 and no bytes are skipped for them
//     (Go's isHeaderOnlyType, Python's tarfile). A writer that did put data
//     there makes the next "header" fail its checksum, so the result is an
//     error, never a silently different tree.
//   - A zero block ends the archive. GNU tar stops at a lone zero block too
//     (with a warning), so the second zero block is not required, and all
//     bytes after the first one are ignored.
//   - Global PAX headers ('g') apply to every following entry (POSIX, GNU tar,
//     Python); a per-entry value overrides them, an empty value cancels a key
//     back to the header field. Consecutive 'x' (or 'L', or 'K') headers before
//     one entry replace each other, as in Go, which keeps memory bounded.
//   - A PAX or GNU payload over kMaxMetadataRecord is kUnsupported (the
//     format allows it, we refuse to buffer it); so are global PAX headers
//     whose values in force add up to more than kMaxGlobalPaxBytes (64 KiB),
//     since every following entry carries a copy of them.
//   - 'S' (GNU sparse), 'M' (multi-volume), any PAX key GNU.sparse.* (PAX
//     sparse files, whose content would otherwise be misread as file data)
//     and unknown type letters are kUnsupported. A 'V' volume label is
//     skipped with its declared content.
//   - Type '\0' (old v7 regular) with a path ending in '/' is a directory,
//     as in Go, GNU tar and Python.
//   - An empty stream is kTruncated (the layer indexer rejects empty blobs
//     anyway); a stream that stops cleanly on an entry boundary without an
//     end marker is accepted.
#include "tar_parser.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "error.h"

namespace clip::core {
namespace {

constexpr size_t kBlockSize = 512;
constexpr uint64_t kMaxEntrySize = uint64_t{1} << 62;  // bytes; anything bigger is corrupt
// Bytes of names and values that global PAX headers may keep in force. Every
// following entry gets a copy, so a big budget would let a small layer expand
// into an enormous index; real writers put a comment or a time there, if
// anything.
constexpr size_t kMaxGlobalPaxBytes = 64 * 1024;

// A field of the ustar header block: byte offset and width.
struct HeaderField {
  size_t offset;
  size_t width;
};
constexpr HeaderField kNameField{0, 100};
constexpr HeaderField kModeField{100, 8};
constexpr HeaderField kUidField{108, 8};
constexpr HeaderField kGidField{116, 8};
constexpr HeaderField kSizeField{124, 12};
constexpr HeaderField kMtimeField{136, 12};
constexpr HeaderField kChecksumField{148, 8};
constexpr size_t kTypeflagOffset = 156;
constexpr HeaderField kLinknameField{157, 100};
constexpr size_t kMagicOffset = 257;  // "ustar\0" + "00" (POSIX) or "ustar " + " \0" (GNU)
constexpr HeaderField kUnameField{265, 32};
constexpr HeaderField kGnameField{297, 32};
constexpr HeaderField kDevmajorField{329, 8};
constexpr HeaderField kDevminorField{337, 8};
constexpr HeaderField kPrefixField{345, 155};  // POSIX ustar only; GNU keeps atime/ctime here

enum class HeaderFormat { kV7, kUstar, kGnu };

HeaderFormat DetectFormat(const uint8_t* h) {
  if (std::memcmp(h + kMagicOffset, "ustar\0", 6) == 0) return HeaderFormat::kUstar;
  if (std::memcmp(h + kMagicOffset, "ustar  \0", 8) == 0) return HeaderFormat::kGnu;
  return HeaderFormat::kV7;
}

uint64_t RoundUpToBlock(uint64_t n) { return (n + (kBlockSize - 1)) & ~uint64_t{kBlockSize - 1}; }

// A NUL-terminated string field; a field with no NUL uses its full width
// (ustar allows a 100-byte name with no terminator).
std::string_view FieldString(const uint8_t* h, HeaderField f) {
  const char* p = reinterpret_cast<const char*>(h) + f.offset;
  return std::string_view(p, ::strnlen(p, f.width));
}

// Parses a numeric header field. Octal: digits with optional leading and
// trailing spaces/NULs, a blank field is 0. GNU base-256: the high bit of the
// first byte is set and the rest is a big-endian two's complement number whose
// sign is bit 6 of the first byte. Returns false if the field is neither, or
// the value does not fit in int64.
bool ParseNumericField(const uint8_t* p, size_t n, int64_t* out) {
  if (n > 0 && (p[0] & 0x80) != 0) {
    int64_t value = (p[0] & 0x40) != 0 ? int64_t{p[0] & 0x7f} - 128 : int64_t{p[0] & 0x7f};
    for (size_t i = 1; i < n; ++i) {
      if (__builtin_mul_overflow(value, 256, &value) || __builtin_add_overflow(value, int64_t{p[i]}, &value)) {
        return false;
      }
    }
    *out = value;
    return true;
  }
  size_t begin = 0, end = n;
  while (begin < end && (p[begin] == ' ' || p[begin] == '\0')) ++begin;
  while (end > begin && (p[end - 1] == ' ' || p[end - 1] == '\0')) --end;
  // At most 12 octal digits (36 bits): cannot overflow.
  uint64_t value = 0;
  for (size_t i = begin; i < end; ++i) {
    if (p[i] < '0' || p[i] > '7') return false;
    value = value * 8 + static_cast<uint64_t>(p[i] - '0');
  }
  *out = static_cast<int64_t>(value);
  return true;
}

// Parses a PAX decimal value: digits only, value <= max. Returns false otherwise.
bool ParseDecimal(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty()) return false;
  uint64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (max - digit) / 10) return false;
    value = value * 10 + digit;
  }
  *out = value;
  return true;
}

// Parses a PAX time "[-]SECONDS[.FRACTION]" into seconds and nanoseconds with
// floor semantics (-1.5 is -2 s + 500000000 ns). Fraction digits past the
// ninth are dropped, as Go's archive/tar does. Returns false if malformed or
// out of the int64 range.
bool ParsePaxTime(std::string_view s, int64_t* sec, uint32_t* nsec) {
  constexpr uint64_t kMagnitudeLimit = uint64_t{1} << 63;  // |INT64_MIN|
  size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) negative = s[i++] == '-';
  const size_t digits_begin = i;
  uint64_t whole = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    const uint64_t digit = static_cast<uint64_t>(s[i] - '0');
    if (whole > (kMagnitudeLimit - digit) / 10) return false;
    whole = whole * 10 + digit;
  }
  if (i == digits_begin) return false;
  uint32_t fraction = 0;
  int fraction_digits = 0;
  if (i < s.size() && s[i] == '.') {
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      if (fraction_digits < 9) {
        fraction = fraction * 10 + static_cast<uint32_t>(s[i] - '0');
        ++fraction_digits;
      }
    }
  }
  if (i != s.size()) return false;
  for (; fraction_digits < 9; ++fraction_digits) fraction *= 10;
  if (!negative) {
    if (whole >= kMagnitudeLimit) return false;
    *sec = static_cast<int64_t>(whole);
    *nsec = fraction;
    return true;
  }
  // -(whole + f) = -(whole + 1) + (1 - f) when there is a fraction.
  uint64_t magnitude = whole;
  if (fraction != 0) {
    if (magnitude >= kMagnitudeLimit) return false;
    ++magnitude;
    fraction = 1000000000u - fraction;
  }
  if (magnitude > kMagnitudeLimit) return false;
  *sec = magnitude == kMagnitudeLimit ? std::numeric_limits<int64_t>::min() : -static_cast<int64_t>(magnitude);
  *nsec = fraction;
  return true;
}

using XattrList = std::vector<std::pair<std::string, std::string>>;

// Keeps each xattr name once, at its first position, with the value of its
// last occurrence (a later record overrides an earlier one). O(n) expected:
// a 1 MiB PAX header can hold tens of thousands of records.
void DedupeXattrs(XattrList* list) {
  if (list->size() < 2) return;
  XattrList out;
  out.reserve(list->size());
  std::unordered_map<std::string_view, size_t> index;  // views into *list, which is not modified until the end
  index.reserve(list->size());
  for (const auto& [name, value] : *list) {
    auto [it, inserted] = index.emplace(name, out.size());
    if (inserted) {
      out.emplace_back(name, value);
    } else {
      out[it->second].second = value;
    }
  }
  *list = std::move(out);
}

// The PAX keys the index uses. Values are kept as text, validated when the
// record is read: an empty value means "cancel this key" (POSIX).
enum PaxKey : size_t { kPaxPath, kPaxLinkpath, kPaxSize, kPaxUid, kPaxGid, kPaxUname, kPaxGname, kPaxMtime, kPaxKeyCount };

struct PaxRecords {
  std::array<std::optional<std::string>, kPaxKeyCount> values;
  XattrList xattrs;  // SCHILY.xattr.NAME -> raw bytes, deduplicated

  void Clear() {
    for (auto& v : values) v.reset();
    xattrs.clear();
  }
};

// The records of every 'g' header so far, merged in O(records) per header: a
// stream of many small global headers must not cost quadratic time.
struct GlobalPaxRecords {
  PaxRecords records;
  std::unordered_map<std::string, size_t> xattr_index;  // name -> position in records.xattrs
  size_t bytes = 0;                                      // of all names and values kept

  // Applies `update` (deduplicated) over what is kept.
  void Merge(PaxRecords&& update) {
    for (size_t key = 0; key < kPaxKeyCount; ++key) {
      if (!update.values[key]) continue;
      if (records.values[key]) bytes -= records.values[key]->size();
      bytes += update.values[key]->size();
      records.values[key] = std::move(update.values[key]);
    }
    for (auto& [name, value] : update.xattrs) {
      auto [it, inserted] = xattr_index.emplace(name, records.xattrs.size());
      if (inserted) {
        bytes += name.size() + value.size();
        records.xattrs.emplace_back(std::move(name), std::move(value));
      } else {
        std::string& kept = records.xattrs[it->second].second;
        bytes = bytes - kept.size() + value.size();
        kept = std::move(value);
      }
    }
  }
};

}  // namespace

class TarParser::Impl {
 public:
  explicit Impl(EntrySink sink) : sink_(std::move(sink)) {}

  void Feed(const uint8_t* data, size_t len, uint64_t offset);
  void Finish();
  uint64_t BytesConsumed() const;
  bool AtEndMarker() const { return end_seen_; }
  uint64_t EntryCount() const { return entry_count_; }

 private:
  enum class State {
    kHeader,    // collecting a header block
    kSkip,      // skipping content and padding
    kMetadata,  // collecting a PAX / GNU long-name payload
    kEnd,       // end marker seen: ignore the rest
    kFinished,  // Finish() succeeded
    kDead,      // an error was thrown
  };

  void FeedBlocks(const uint8_t* data, size_t len);
  void ProcessHeader(const uint8_t* h, uint64_t offset);
  void BeginMetadata(const uint8_t* h, char type, uint64_t offset);
  void FinishMetadata();
  void ParsePax(std::string_view payload, PaxRecords* into);
  std::string ParseLongName(const char* what);
  void EmitEntry(const uint8_t* h, char type, uint64_t offset);
  void StartSkip(uint64_t bytes, uint64_t owner_offset);
  const std::string* EffectivePax(PaxKey key) const;
  void CheckUsable() const;

  EntrySink sink_;
  State state_ = State::kHeader;
  uint64_t fed_ = 0;  // bytes fed so far; also the stream offset of the next byte to process

  uint8_t header_[kBlockSize];  // a header that straddles chunks
  size_t header_fill_ = 0;      // bytes of header_ filled

  uint64_t skip_remaining_ = 0;  // bytes of content + padding still to skip
  uint64_t skip_owner_ = 0;      // header offset of the entry being skipped (for errors)

  std::string metadata_;                // payload of the current PAX / GNU record
  uint64_t metadata_remaining_ = 0;     // payload bytes still to come
  uint64_t metadata_padding_ = 0;       // padding after the payload
  uint64_t metadata_offset_ = 0;        // offset of the record's header
  char metadata_type_ = 0;              // 'x', 'g', 'L' or 'K'

  GlobalPaxRecords global_pax_;          // 'g': applies to every following entry
  PaxRecords entry_pax_;                 // 'x': applies to the next entry
  std::optional<std::string> long_name_;  // 'L'
  std::optional<std::string> long_link_;  // 'K'
  bool prefix_pending_ = false;          // an 'x', 'L' or 'K' waits for its entry
  uint64_t prefix_offset_ = 0;           // offset of the first of them

  bool end_seen_ = false;
  uint64_t end_offset_ = 0;  // offset just past the end-marker block
  uint64_t entry_count_ = 0;
};

void TarParser::Impl::CheckUsable() const {
  if (state_ == State::kDead) Fail(ErrorCode::kInvalidArgument, "tar parser used after an error");
  if (state_ == State::kFinished) Fail(ErrorCode::kInvalidArgument, "tar parser used after Finish()");
}

void TarParser::Impl::Feed(const uint8_t* data, size_t len, uint64_t offset) {
  CheckUsable();
  if (offset != fed_) {
    state_ = State::kDead;
    Fail(ErrorCode::kInvalidArgument,
         "tar parser fed offset " + std::to_string(offset) + ", expected " + std::to_string(fed_));
  }
  try {
    FeedBlocks(data, len);
  } catch (...) {
    state_ = State::kDead;
    throw;
  }
}

void TarParser::Impl::FeedBlocks(const uint8_t* data, size_t len) {
  while (len > 0) {
    switch (state_) {
      case State::kSkip: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(len, skip_remaining_));
        data += n;
        len -= n;
        fed_ += n;
        skip_remaining_ -= n;
        if (skip_remaining_ == 0) state_ = State::kHeader;
        break;
      }
      case State::kHeader: {
        if (header_fill_ == 0 && len >= kBlockSize) {
          // The common case: parse the header where it lies, no copy.
          const uint8_t* h = data;
          const uint64_t header_offset = fed_;
          data += kBlockSize;
          len -= kBlockSize;
          fed_ += kBlockSize;
          ProcessHeader(h, header_offset);
        } else {
          const size_t n = std::min(kBlockSize - header_fill_, len);
          std::memcpy(header_ + header_fill_, data, n);
          header_fill_ += n;
          data += n;
          len -= n;
          fed_ += n;
          if (header_fill_ == kBlockSize) {
            header_fill_ = 0;
            ProcessHeader(header_, fed_ - kBlockSize);
          }
        }
        break;
      }
      case State::kMetadata: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(len, metadata_remaining_));
        metadata_.append(reinterpret_cast<const char*>(data), n);
        data += n;
        len -= n;
        fed_ += n;
        metadata_remaining_ -= n;
        if (metadata_remaining_ == 0) FinishMetadata();
        break;
      }
      case State::kEnd:
        fed_ += len;
        len = 0;
        break;
      case State::kFinished:
      case State::kDead:
        return;  // unreachable: CheckUsable() ran first
    }
  }
}

void TarParser::Impl::Finish() {
  CheckUsable();
  try {
    switch (state_) {
      case State::kEnd:
        break;
      case State::kHeader:
        if (fed_ == 0) Fail(ErrorCode::kTruncated, "empty tar stream");
        if (header_fill_ != 0) FailAt(ErrorCode::kTruncated, "tar stream ends inside the header", fed_ - header_fill_);
        if (prefix_pending_) {
          FailAt(ErrorCode::kTruncated, "tar stream ends after an extended header with no entry", prefix_offset_);
        }
        break;
      case State::kSkip:
        FailAt(ErrorCode::kTruncated, "tar stream ends inside the content of the entry whose header is", skip_owner_);
      case State::kMetadata:
        FailAt(ErrorCode::kTruncated, "tar stream ends inside the extended header", metadata_offset_);
      case State::kFinished:
      case State::kDead:
        break;  // unreachable: CheckUsable() ran first
    }
  } catch (...) {
    state_ = State::kDead;
    throw;
  }
  state_ = State::kFinished;
}

uint64_t TarParser::Impl::BytesConsumed() const {
  switch (state_) {
    case State::kHeader: return fed_ - header_fill_;
    case State::kSkip: return fed_ + skip_remaining_;
    case State::kMetadata: return fed_ + metadata_remaining_ + metadata_padding_;
    case State::kEnd: return end_offset_;
    case State::kFinished: return end_seen_ ? end_offset_ : fed_;
    case State::kDead: return fed_;
  }
  return fed_;
}

void TarParser::Impl::StartSkip(uint64_t bytes, uint64_t owner_offset) {
  skip_remaining_ = bytes;
  skip_owner_ = owner_offset;
  state_ = bytes > 0 ? State::kSkip : State::kHeader;
}

namespace {

bool IsZeroBlock(const uint8_t* h) {
  uint64_t acc = 0;
  for (size_t i = 0; i < kBlockSize; i += 8) {
    uint64_t word;
    std::memcpy(&word, h + i, 8);
    acc |= word;
  }
  return acc == 0;
}

// Accepts the unsigned byte sum (POSIX) or the signed-char sum (some old tars),
// with the checksum field itself counted as eight spaces.
void VerifyChecksum(const uint8_t* h, uint64_t offset) {
  int64_t recorded = 0;
  if (!ParseNumericField(h + kChecksumField.offset, kChecksumField.width, &recorded)) {
    FailAt(ErrorCode::kCorrupt, "tar header checksum field is not a number", offset);
  }
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t i = 0; i < kBlockSize; ++i) {
    unsigned_sum += h[i];
    signed_sum += static_cast<int8_t>(h[i]);
  }
  for (size_t i = kChecksumField.offset; i < kChecksumField.offset + kChecksumField.width; ++i) {
    unsigned_sum -= h[i];
    signed_sum -= static_cast<int8_t>(h[i]);
  }
  unsigned_sum += 8 * ' ';
  signed_sum += 8 * ' ';
  if (recorded != unsigned_sum && recorded != signed_sum) {
    FailAt(ErrorCode::kCorrupt, "tar header checksum mismatch", offset);
  }
}

int64_t ParseHeaderNumber(const uint8_t* h, HeaderField f, const char* name, uint64_t offset) {
  int64_t value = 0;
  if (!ParseNumericField(h + f.offset, f.width, &value)) {
    FailAt(ErrorCode::kCorrupt, std::string("tar header field '") + name + "' is not a number", offset);
  }
  return value;
}

uint32_t CheckU32(int64_t value, const char* name, uint64_t offset) {
  if (value < 0 || value > int64_t{std::numeric_limits<uint32_t>::max()}) {
    FailAt(ErrorCode::kCorrupt, std::string("tar ") + name + " out of range: " + std::to_string(value), offset);
  }
  return static_cast<uint32_t>(value);
}

uint64_t CheckSize(int64_t value, uint64_t offset) {
  if (value < 0) FailAt(ErrorCode::kCorrupt, "tar entry size is negative: " + std::to_string(value), offset);
  if (static_cast<uint64_t>(value) > kMaxEntrySize) {
    FailAt(ErrorCode::kCorrupt, "tar entry size is absurd: " + std::to_string(value), offset);
  }
  return static_cast<uint64_t>(value);
}

std::string DescribeType(char type) {
  const auto byte = static_cast<unsigned char>(type);
  if (byte >= 0x20 && byte < 0x7f) return std::string("'") + type + "'";
  static const char kHex[] = "0123456789abcdef";
  return std::string("0x") + kHex[byte >> 4] + kHex[byte & 0xf];
}

}  // namespace

void TarParser::Impl::ProcessHeader(const uint8_t* h, uint64_t offset) {
  if (h[0] == 0 && IsZeroBlock(h)) {
    if (prefix_pending_) {
      FailAt(ErrorCode::kCorrupt, "end of archive after an extended header with no entry", prefix_offset_);
    }
    end_seen_ = true;
    end_offset_ = offset + kBlockSize;
    state_ = State::kEnd;
    return;
  }
  VerifyChecksum(h, offset);
  const char type = static_cast<char>(h[kTypeflagOffset]);
  switch (type) {
    case '0': case '\0': case '7':
    case '1': case '2': case '3': case '4': case '5': case '6':
      EmitEntry(h, type, offset);
      return;
    case 'x': case 'g': case 'L': case 'K':
      BeginMetadata(h, type, offset);
      return;
    case 'V': {
      // GNU volume label: names the archive, not a member. Skip it.
      const uint64_t size = CheckSize(ParseHeaderNumber(h, kSizeField, "size", offset), offset);
      StartSkip(RoundUpToBlock(size), offset);
      return;
    }
    case 'S':
      FailAt(ErrorCode::kUnsupported, "GNU sparse tar entries are not supported", offset);
    case 'M':
      FailAt(ErrorCode::kUnsupported, "GNU multi-volume tar entries are not supported", offset);
    default:
      FailAt(ErrorCode::kUnsupported, "unknown tar entry type " + DescribeType(type), offset);
  }
}

void TarParser::Impl::BeginMetadata(const uint8_t* h, char type, uint64_t offset) {
  const uint64_t size = CheckSize(ParseHeaderNumber(h, kSizeField, "size", offset), offset);
  if (size > kMaxMetadataRecord) {
    FailAt(ErrorCode::kUnsupported,
           "tar extended header of " + std::to_string(size) + " bytes exceeds the limit of " +
               std::to_string(kMaxMetadataRecord),
           offset);
  }
  if (type != 'g' && !prefix_pending_) {
    prefix_pending_ = true;
    prefix_offset_ = offset;
  }
  metadata_type_ = type;
  metadata_offset_ = offset;
  metadata_remaining_ = size;
  metadata_padding_ = RoundUpToBlock(size) - size;
  metadata_.clear();
  metadata_.reserve(static_cast<size_t>(size));  // <= kMaxMetadataRecord
  state_ = State::kMetadata;
  if (size == 0) FinishMetadata();
}

void TarParser::Impl::FinishMetadata() {
  switch (metadata_type_) {
    case 'x':
      entry_pax_.Clear();  // a second 'x' before the entry replaces the first
      ParsePax(metadata_, &entry_pax_);
      break;
    case 'g': {
      PaxRecords update;
      ParsePax(metadata_, &update);
      global_pax_.Merge(std::move(update));
      if (global_pax_.bytes > kMaxGlobalPaxBytes) {
        FailAt(ErrorCode::kUnsupported,
               "global PAX headers exceed the limit of " + std::to_string(kMaxGlobalPaxBytes) + " bytes",
               metadata_offset_);
      }
    }
      break;
    case 'L':
      long_name_ = ParseLongName("GNU long name");
      break;
    case 'K':
      long_link_ = ParseLongName("GNU long link name");
      break;
  }
  const uint64_t owner = metadata_offset_;
  // A big record leaves a big buffer behind; let it go.
  if (metadata_.capacity() > 64 * 1024) {
    std::string().swap(metadata_);
  }
  StartSkip(metadata_padding_, owner);
}

// GNU writes the name with a trailing NUL included in the size. More trailing
// NULs are harmless; a NUL inside the name is not.
std::string TarParser::Impl::ParseLongName(const char* what) {
  size_t len = metadata_.size();
  while (len > 0 && metadata_[len - 1] == '\0') --len;
  if (std::memchr(metadata_.data(), '\0', len) != nullptr) {
    FailAt(ErrorCode::kCorrupt, std::string(what) + " contains a NUL byte", metadata_offset_);
  }
  return metadata_.substr(0, len);
}

// Parses PAX records "LEN KEY=VALUE\n", where LEN counts the whole record in
// bytes, its own digits and the newline included. The length is authoritative:
// VALUE may contain NUL, '=' and newlines. Records set (or, with an empty
// value, cancel) keys of `into`, later records overriding earlier ones.
void TarParser::Impl::ParsePax(std::string_view payload, PaxRecords* into) {
  constexpr std::string_view kXattrPrefix = "SCHILY.xattr.";
  constexpr std::string_view kSparsePrefix = "GNU.sparse.";
  const uint64_t offset = metadata_offset_;
  const size_t n = payload.size();
  size_t pos = 0;
  const size_t xattrs_before = into->xattrs.size();
  while (pos < n) {
    size_t p = pos;
    size_t record_len = 0;
    while (p < n && payload[p] >= '0' && payload[p] <= '9') {
      record_len = record_len * 10 + static_cast<size_t>(payload[p] - '0');
      if (record_len > n - pos) FailAt(ErrorCode::kCorrupt, "PAX record length runs past its header", offset);
      ++p;
    }
    if (p == pos) FailAt(ErrorCode::kCorrupt, "PAX record length is not a number", offset);
    if (p >= n || payload[p] != ' ') FailAt(ErrorCode::kCorrupt, "PAX record length is not followed by a space", offset);
    const size_t key_begin = p + 1;
    const size_t record_end = pos + record_len;
    // Shortest record after the space: "K=\n".
    if (record_end < key_begin + 3) FailAt(ErrorCode::kCorrupt, "PAX record length is too short", offset);
    if (payload[record_end - 1] != '\n') {
      FailAt(ErrorCode::kCorrupt, "PAX record length does not end at a newline", offset);
    }
    const std::string_view body = payload.substr(key_begin, record_end - 1 - key_begin);
    const size_t eq = body.find('=');
    if (eq == std::string_view::npos || eq == 0) FailAt(ErrorCode::kCorrupt, "PAX record is not KEY=VALUE", offset);
    const std::string_view key = body.substr(0, eq);
    const std::string_view value = body.substr(eq + 1);
    if (key.find('\0') != std::string_view::npos) FailAt(ErrorCode::kCorrupt, "PAX record key contains a NUL byte", offset);
    pos = record_end;

    if (key.substr(0, kXattrPrefix.size()) == kXattrPrefix) {
      if (key.size() == kXattrPrefix.size()) FailAt(ErrorCode::kCorrupt, "PAX xattr record has no name", offset);
      into->xattrs.emplace_back(key.substr(kXattrPrefix.size()), value);
      continue;
    }
    if (key.substr(0, kSparsePrefix.size()) == kSparsePrefix) {
      FailAt(ErrorCode::kUnsupported, "GNU sparse files in PAX format are not supported", offset);
    }
    PaxKey which;
    if (key == "path") which = kPaxPath;
    else if (key == "linkpath") which = kPaxLinkpath;
    else if (key == "size") which = kPaxSize;
    else if (key == "uid") which = kPaxUid;
    else if (key == "gid") which = kPaxGid;
    else if (key == "uname") which = kPaxUname;
    else if (key == "gname") which = kPaxGname;
    else if (key == "mtime") which = kPaxMtime;
    else continue;  // atime, ctime, comment, hdrcharset, LIBARCHIVE.*, ...: not indexed

    if (!value.empty()) {
      uint64_t number = 0;
      int64_t sec = 0;
      uint32_t nsec = 0;
      switch (which) {
        case kPaxPath: case kPaxLinkpath: case kPaxUname: case kPaxGname:
          if (value.find('\0') != std::string_view::npos) {
            FailAt(ErrorCode::kCorrupt, "PAX " + std::string(key) + " contains a NUL byte", offset);
          }
          break;
        case kPaxSize:
          if (!ParseDecimal(value, kMaxEntrySize, &number)) FailAt(ErrorCode::kCorrupt, "PAX size is not a valid size", offset);
          break;
        case kPaxUid: case kPaxGid:
          if (!ParseDecimal(value, std::numeric_limits<uint32_t>::max(), &number)) {
            FailAt(ErrorCode::kCorrupt, "PAX " + std::string(key) + " is not a valid id", offset);
          }
          break;
        case kPaxMtime:
          if (!ParsePaxTime(value, &sec, &nsec)) FailAt(ErrorCode::kCorrupt, "PAX mtime is not a valid time", offset);
          break;
        case kPaxKeyCount:
          break;
      }
    }
    into->values[which].emplace(value);
  }
  if (into->xattrs.size() > xattrs_before) DedupeXattrs(&into->xattrs);
}

// The PAX value for `key` that applies to the next entry: the entry's own
// record, else the global one. nullptr (or an empty string: cancelled) means
// the header field applies.
const std::string* TarParser::Impl::EffectivePax(PaxKey key) const {
  if (entry_pax_.values[key]) return &*entry_pax_.values[key];
  if (global_pax_.records.values[key]) return &*global_pax_.records.values[key];
  return nullptr;
}

void TarParser::Impl::EmitEntry(const uint8_t* h, char type, uint64_t offset) {
  const HeaderFormat format = DetectFormat(h);
  TarEntry entry;
  entry.header_offset = prefix_pending_ ? prefix_offset_ : offset;

  // Every numeric field must parse, even one a PAX record overrides.
  const int64_t header_mode = ParseHeaderNumber(h, kModeField, "mode", offset);
  const int64_t header_uid = ParseHeaderNumber(h, kUidField, "uid", offset);
  const int64_t header_gid = ParseHeaderNumber(h, kGidField, "gid", offset);
  const int64_t header_size = ParseHeaderNumber(h, kSizeField, "size", offset);
  const int64_t header_mtime = ParseHeaderNumber(h, kMtimeField, "mtime", offset);

  const std::string* pax = nullptr;
  uint64_t number = 0;

  if ((pax = EffectivePax(kPaxPath)) && !pax->empty()) {
    entry.path = *pax;
  } else if (long_name_ && !long_name_->empty()) {
    entry.path = *long_name_;
  } else {
    const std::string_view name = FieldString(h, kNameField);
    const std::string_view prefix = format == HeaderFormat::kUstar ? FieldString(h, kPrefixField) : std::string_view();
    if (prefix.empty()) {
      entry.path.assign(name);
    } else {
      entry.path.reserve(prefix.size() + 1 + name.size());
      entry.path.append(prefix).append(1, '/').append(name);
    }
  }
  if (entry.path.empty()) FailAt(ErrorCode::kCorrupt, "tar entry has an empty name", offset);

  switch (type) {
    case '1': entry.type = EntryType::kHardlink; break;
    case '2': entry.type = EntryType::kSymlink; break;
    case '3': entry.type = EntryType::kCharDevice; break;
    case '4': entry.type = EntryType::kBlockDevice; break;
    case '5': entry.type = EntryType::kDirectory; break;
    case '6': entry.type = EntryType::kFifo; break;
    case '\0':
      entry.type = entry.path.back() == '/' ? EntryType::kDirectory : EntryType::kRegular;
      break;
    default: entry.type = EntryType::kRegular; break;
  }

  if (header_mode < 0) FailAt(ErrorCode::kCorrupt, "tar mode is negative", offset);
  entry.mode = static_cast<uint32_t>(header_mode & 07777);

  if ((pax = EffectivePax(kPaxUid)) && !pax->empty()) {
    ParseDecimal(*pax, std::numeric_limits<uint32_t>::max(), &number);  // validated when read
    entry.uid = static_cast<uint32_t>(number);
  } else {
    entry.uid = CheckU32(header_uid, "uid", offset);
  }
  if ((pax = EffectivePax(kPaxGid)) && !pax->empty()) {
    ParseDecimal(*pax, std::numeric_limits<uint32_t>::max(), &number);
    entry.gid = static_cast<uint32_t>(number);
  } else {
    entry.gid = CheckU32(header_gid, "gid", offset);
  }

  if ((pax = EffectivePax(kPaxMtime)) && !pax->empty()) {
    ParsePaxTime(*pax, &entry.mtime_sec, &entry.mtime_nsec);
  } else {
    entry.mtime_sec = header_mtime;
  }

  uint64_t size = 0;
  if ((pax = EffectivePax(kPaxSize)) && !pax->empty()) {
    ParseDecimal(*pax, kMaxEntrySize, &size);
  } else {
    size = CheckSize(header_size, offset);
  }

  if (format != HeaderFormat::kV7) {
    if ((pax = EffectivePax(kPaxUname)) && !pax->empty()) entry.uname = *pax;
    else entry.uname.assign(FieldString(h, kUnameField));
    if ((pax = EffectivePax(kPaxGname)) && !pax->empty()) entry.gname = *pax;
    else entry.gname.assign(FieldString(h, kGnameField));
  } else {
    if ((pax = EffectivePax(kPaxUname))) entry.uname = *pax;
    if ((pax = EffectivePax(kPaxGname))) entry.gname = *pax;
  }

  if (entry.type == EntryType::kCharDevice || entry.type == EntryType::kBlockDevice) {
    entry.devmajor = CheckU32(ParseHeaderNumber(h, kDevmajorField, "devmajor", offset), "devmajor", offset);
    entry.devminor = CheckU32(ParseHeaderNumber(h, kDevminorField, "devminor", offset), "devminor", offset);
  }

  if (entry.type == EntryType::kSymlink || entry.type == EntryType::kHardlink) {
    if ((pax = EffectivePax(kPaxLinkpath)) && !pax->empty()) entry.link_target = *pax;
    else if (long_link_ && !long_link_->empty()) entry.link_target = *long_link_;
    else entry.link_target.assign(FieldString(h, kLinknameField));
  }

  if (global_pax_.records.xattrs.empty()) {
    entry.xattrs = std::move(entry_pax_.xattrs);
  } else {
    entry.xattrs = global_pax_.records.xattrs;
    if (!entry_pax_.xattrs.empty()) {
      entry.xattrs.insert(entry.xattrs.end(), std::make_move_iterator(entry_pax_.xattrs.begin()),
                          std::make_move_iterator(entry_pax_.xattrs.end()));
      DedupeXattrs(&entry.xattrs);
    }
  }

  // Only regular files have content; see the file comment for other types.
  uint64_t skip = 0;
  if (entry.type == EntryType::kRegular) {
    entry.size = size;
    entry.data_offset = offset + kBlockSize;
    skip = RoundUpToBlock(size);
  }

  entry_pax_.Clear();
  long_name_.reset();
  long_link_.reset();
  prefix_pending_ = false;
  StartSkip(skip, offset);
  ++entry_count_;
  sink_(std::move(entry));
}

TarParser::TarParser(EntrySink sink) : impl_(std::make_unique<Impl>(std::move(sink))) {}
TarParser::~TarParser() = default;

void TarParser::Feed(const uint8_t* data, size_t len, uint64_t offset) { impl_->Feed(data, len, offset); }
void TarParser::Finish() { impl_->Finish(); }
uint64_t TarParser::bytes_consumed() const { return impl_->BytesConsumed(); }
bool TarParser::at_end_marker() const { return impl_->AtEndMarker(); }
uint64_t TarParser::entry_count() const { return impl_->EntryCount(); }

}  // namespace clip::core
