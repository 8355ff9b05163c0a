#include "sha256.h"

#include <openssl/evp.h>

#include "error.h"

namespace clip::core {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) Fail(ErrorCode::kNoMemory, "cannot start SHA-256");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const uint8_t* data, size_t len) {
  if (len) EVP_DigestUpdate(ctx_, data, len);
}

void Sha256::Finish(uint8_t out[kSize]) {
  unsigned int md_len = 0;
  EVP_DigestFinal_ex(ctx_, out, &md_len);
}

void Sha256::Digest(const uint8_t* data, size_t len, uint8_t out[kSize]) {
  unsigned int md_len = 0;
  if (EVP_Digest(data, len, out, &md_len, EVP_sha256(), nullptr) != 1) Fail(ErrorCode::kNoMemory, "cannot run SHA-256");
}

std::string Sha256::FinishDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  EVP_DigestFinal_ex(ctx_, md, &md_len);
  static const char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned int i = 0; i < md_len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

}  // namespace clip::core
