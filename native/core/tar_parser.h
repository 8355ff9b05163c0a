// TarParser: a streaming, push-style parser of a tar stream.
//
// The indexer pushes uncompressed bytes in arbitrary chunks with their stream
// offset; the parser emits one TarEntry per member through the sink. File
// contents are skipped, never buffered: the parser keeps at most one 512-byte
// header plus the payload of pending PAX / GNU long-name records (bounded by
// kMaxMetadataRecord), so memory does not depend on file sizes.
//
// Formats: ustar (with prefix), PAX (x and g headers: path, linkpath, size,
// uid, gid, uname, gname, mtime with fraction, SCHILY.xattr.*; other keys are
// ignored, LIBARCHIVE.xattr.* included), GNU (L and K long names, base-256
// numeric fields, negative ones too), old v7. Global 'g' records apply to
// every following entry; an entry's own 'x' records override them.
// Entry types: 0/'\0'/7 regular ('\0' with a trailing '/' is a directory),
// 1 hardlink, 2 symlink, 3 char, 4 block, 5 directory, 6 fifo. Only regular
// files have content: for the other types the declared size is reported as 0
// and no content is skipped (as Go's archive/tar, which containerd unpacks
// layers with, and Python's tarfile do). A 'V' volume label is skipped.
// GNU sparse ('S', or PAX GNU.sparse.* keys), multi-volume ('M') and unknown
// type letters are kUnsupported.
//
// Errors (CoreError, message names the offset of the bad header): a header
// whose checksum does not match (the unsigned and the signed-char sums are
// both accepted), a numeric field that is not a number, a negative or absurd
// size (past 2^62), uid/gid/devmajor/devminor outside uint32, a PAX record
// whose length field lies or is not "LEN KEY=VALUE\n", a PAX path/linkpath/
// uname/gname or GNU long name with a NUL inside, an empty entry name, an
// extended header followed by the end marker -> kCorrupt; a PAX or GNU
// payload larger than kMaxMetadataRecord, or global PAX values in force
// adding up to more than 64 KiB (every following entry copies them) ->
// kUnsupported; a stream that ends inside a header, inside a file's
// content or padding, or after an extended header with no entry ->
// kTruncated at Finish(); an empty stream (0 bytes) -> kTruncated.
// End of archive is a zero block: two of them normally, but GNU tar also stops
// at a lone zero block, so the first one ends the archive and every byte
// after it is ignored. A stream that ends cleanly on an entry boundary without
// them is accepted (as GNU tar does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "tar_entry.h"

namespace clip::core {

class TarParser {
 public:
  static constexpr size_t kMaxMetadataRecord = 1 << 20;  // bytes of one PAX or GNU long-name payload
  using EntrySink = std::function<void(TarEntry&& entry)>;

  explicit TarParser(EntrySink sink);
  ~TarParser();
  TarParser(const TarParser&) = delete;
  TarParser& operator=(const TarParser&) = delete;

  // Parses `len` more bytes; `offset` must equal the total bytes fed so far
  // (else kInvalidArgument). Chunks may be of any size, 1 byte to the whole
  // stream, with identical results. Calls the sink (synchronously, from
  // inside Feed) once per entry, as soon as its header is parsed, before its
  // content has been fed. Throws CoreError on malformed input; after a throw
  // (including one from the sink) the parser is dead and every further call
  // throws kInvalidArgument, as does Feed after Finish.
  void Feed(const uint8_t* data, size_t len, uint64_t offset);
  // Declares the end of the stream. Throws kTruncated if it ended mid-entry.
  void Finish();

  // Offset of the next header the parser expects: while it skips an entry's
  // content, the end of that content and its padding; while it collects a
  // header, that header's start; after the end marker, the offset just past
  // the (first) zero block. Lets the indexer know where file data ends.
  uint64_t bytes_consumed() const;
  bool at_end_marker() const;  // the end-of-archive zero block was seen
  uint64_t entry_count() const;  // entries emitted so far

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace clip::core
