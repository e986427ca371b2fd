#include "block_hasher.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <memory>

#include "salted_sha256.h"

namespace evs::verity {

struct BlockHasher::State {
  EVP_MD* md = nullptr;
  EVP_MD_CTX* salted = nullptr;  // v1: salt absorbed; v0: freshly initialised
  EVP_MD_CTX* work = nullptr;
  uint32_t hash_type = 1;
  std::string salt;
  // sha256, format 1, on a CPU with SHA-NI: two blocks at a time.
  std::unique_ptr<SaltedSha256> fast;
};

BlockHasher::BlockHasher(HashAlgorithm algorithm, uint32_t hash_type, std::string_view salt)
    : state_(new State), digest_size_(HashSize(algorithm)) {
  state_->md =
      EVP_MD_fetch(nullptr, algorithm == HashAlgorithm::kSha256 ? "SHA256" : "SHA512", nullptr);
  state_->salted = EVP_MD_CTX_new();
  state_->work = EVP_MD_CTX_new();
  // Allocation failures here mean the process is out of memory; OpenSSL
  // would crash later anyway, so fail loudly now.
  if (state_->md == nullptr || state_->salted == nullptr || state_->work == nullptr) std::abort();
  state_->hash_type = hash_type;
  state_->salt.assign(salt);
  if (algorithm == HashAlgorithm::kSha256 && hash_type == 1 && SaltedSha256::Supported()) {
    state_->fast = std::make_unique<SaltedSha256>(salt);
  }
  EVP_DigestInit_ex2(state_->salted, state_->md, nullptr);
  if (hash_type == 1 && !salt.empty()) EVP_DigestUpdate(state_->salted, salt.data(), salt.size());
}

BlockHasher::~BlockHasher() {
  EVP_MD_CTX_free(state_->work);
  EVP_MD_CTX_free(state_->salted);
  EVP_MD_free(state_->md);
  delete state_;
}

void BlockHasher::Hash(const uint8_t* data, size_t n, uint8_t* out) {
  if (state_->fast) {
    state_->fast->Hash(data, n, out);
    return;
  }
  EVP_MD_CTX_copy_ex(state_->work, state_->salted);
  EVP_DigestUpdate(state_->work, data, n);
  if (state_->hash_type == 0 && !state_->salt.empty()) {
    EVP_DigestUpdate(state_->work, state_->salt.data(), state_->salt.size());
  }
  unsigned int len = 0;
  EVP_DigestFinal_ex(state_->work, out, &len);
}

void BlockHasher::HashBlocks(const uint8_t* data, size_t block_size, size_t count, uint8_t* out,
                             size_t out_stride) {
  size_t i = 0;
  if (state_->fast) {
    for (; i + 1 < count; i += 2) {
      state_->fast->Hash2(data + i * block_size, data + (i + 1) * block_size, block_size,
                          out + i * out_stride, out + (i + 1) * out_stride);
    }
  }
  for (; i < count; ++i) Hash(data + i * block_size, block_size, out + i * out_stride);
}

}  // namespace evs::verity
