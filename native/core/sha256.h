// Sha256: incremental SHA-256 (OpenSSL's EVP, which uses the CPU's SHA
// extensions where present). Used for a layer's blob digest and diff_id, and
// for the checkpoint index's span digests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct evp_md_ctx_st;

namespace clip::core {

class Sha256 {
 public:
  static constexpr size_t kSize = 32;  // bytes of a raw digest

  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const uint8_t* data, size_t len);
  // Finishes and returns "sha256:<64 lowercase hex>". Call once.
  std::string FinishDigest();
  // Finishes and writes the 32 raw digest bytes. Call once (instead of FinishDigest).
  void Finish(uint8_t out[kSize]);
  // The raw digest of data[0, len) in one call.
  static void Digest(const uint8_t* data, size_t len, uint8_t out[kSize]);

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace clip::core
