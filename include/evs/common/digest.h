// Content digests (OCI "algorithm:hex") and streaming hashes through OpenSSL
// EVP. One digest type for the whole project.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "evs/common/status.h"

namespace evs {

enum class HashAlgorithm { kSha256, kSha512 };

std::string_view HashAlgorithmName(HashAlgorithm algorithm);  // "sha256"
size_t HashSize(HashAlgorithm algorithm);                      // 32 or 64
Result<HashAlgorithm> ParseHashAlgorithm(std::string_view name);

// A streaming hash. Not thread-safe; cheap to create (one EVP context).
class Hasher {
 public:
  explicit Hasher(HashAlgorithm algorithm);
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;

  HashAlgorithm algorithm() const { return algorithm_; }
  void Update(const void* data, size_t n);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // Writes HashSize() bytes to `out` and resets the hasher for reuse.
  void Finish(uint8_t* out);
  // The raw digest bytes, then reset.
  std::string FinishBytes();
  // Copies the state, so that a running hash can be read without ending it.
  Hasher Clone() const;

 private:
  HashAlgorithm algorithm_;
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// An OCI content digest: algorithm plus lowercase hex of the right length.
class Digest {
 public:
  Digest() = default;
  Digest(HashAlgorithm algorithm, std::string_view raw_bytes);

  // Parses "sha256:<64 hex>" or "sha512:<128 hex>"; anything else (other
  // algorithms, upper case, wrong length) is InvalidArgument naming the text.
  static Result<Digest> Parse(std::string_view text);
  // Digest of `data`.
  static Digest Of(HashAlgorithm algorithm, std::string_view data);
  static Digest Sha256Of(std::string_view data) { return Of(HashAlgorithm::kSha256, data); }

  bool empty() const { return hex_.empty(); }
  HashAlgorithm algorithm() const { return algorithm_; }
  const std::string& hex() const { return hex_; }
  std::string raw() const;           // the digest bytes
  std::string ToString() const;      // "sha256:abcd…"
  // "sha256:abcd1234ef56" — for log lines.
  std::string Short() const;

  bool operator==(const Digest& o) const = default;
  bool operator<(const Digest& o) const { return ToString() < o.ToString(); }

 private:
  HashAlgorithm algorithm_ = HashAlgorithm::kSha256;
  std::string hex_;
};

std::string HexEncode(std::string_view bytes);
Result<std::string> HexDecode(std::string_view hex);

}  // namespace evs
