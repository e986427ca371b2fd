#include "evs/common/digest.h"

#include <openssl/evp.h>

#include <cassert>

namespace evs {

std::string_view HashAlgorithmName(HashAlgorithm algorithm) {
  return algorithm == HashAlgorithm::kSha256 ? "sha256" : "sha512";
}

size_t HashSize(HashAlgorithm algorithm) { return algorithm == HashAlgorithm::kSha256 ? 32 : 64; }

Result<HashAlgorithm> ParseHashAlgorithm(std::string_view name) {
  if (name == "sha256") return HashAlgorithm::kSha256;
  if (name == "sha512") return HashAlgorithm::kSha512;
  return InvalidArgumentError("unsupported hash algorithm \"", name, "\" (want sha256 or sha512)");
}

struct Hasher::Ctx {
  EVP_MD_CTX* ctx = nullptr;
  ~Ctx() { EVP_MD_CTX_free(ctx); }
};

namespace {
const EVP_MD* Md(HashAlgorithm a) { return a == HashAlgorithm::kSha256 ? EVP_sha256() : EVP_sha512(); }
}  // namespace

Hasher::Hasher(HashAlgorithm algorithm) : algorithm_(algorithm), ctx_(std::make_unique<Ctx>()) {
  ctx_->ctx = EVP_MD_CTX_new();
  assert(ctx_->ctx != nullptr);
  EVP_DigestInit_ex(ctx_->ctx, Md(algorithm_), nullptr);
}

Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::Update(const void* data, size_t n) { EVP_DigestUpdate(ctx_->ctx, data, n); }

void Hasher::Finish(uint8_t* out) {
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->ctx, out, &len);
  EVP_DigestInit_ex(ctx_->ctx, Md(algorithm_), nullptr);
}

std::string Hasher::FinishBytes() {
  std::string out(HashSize(algorithm_), '\0');
  Finish(reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

Hasher Hasher::Clone() const {
  Hasher h(algorithm_);
  EVP_MD_CTX_copy_ex(h.ctx_->ctx, ctx_->ctx);
  return h;
}

std::string HexEncode(std::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

Result<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return InvalidArgumentError("hex string of odd length ", hex.size());
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgumentError("invalid hex character at position ", 2 * i);
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

Digest::Digest(HashAlgorithm algorithm, std::string_view raw_bytes)
    : algorithm_(algorithm), hex_(HexEncode(raw_bytes)) {}

Result<Digest> Digest::Parse(std::string_view text) {
  size_t colon = text.find(':');
  auto bad = [&](std::string_view why) {
    std::string shown(text.substr(0, 80));
    return InvalidArgumentError("invalid digest \"", shown, text.size() > 80 ? "…" : "", "\": ", why);
  };
  if (colon == std::string_view::npos) return bad("missing \"algorithm:\" prefix");
  auto algorithm = ParseHashAlgorithm(text.substr(0, colon));
  if (!algorithm.ok()) return bad("unsupported algorithm");
  std::string_view hex = text.substr(colon + 1);
  if (hex.size() != 2 * HashSize(*algorithm)) return bad("wrong length");
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return bad("not lowercase hex");
  }
  Digest d;
  d.algorithm_ = *algorithm;
  d.hex_ = std::string(hex);
  return d;
}

Digest Digest::Of(HashAlgorithm algorithm, std::string_view data) {
  Hasher h(algorithm);
  h.Update(data);
  return Digest(algorithm, h.FinishBytes());
}

std::string Digest::raw() const {
  auto r = HexDecode(hex_);
  return r.ok() ? *r : std::string();
}

std::string Digest::ToString() const { return StrCat(HashAlgorithmName(algorithm_), ":", hex_); }

std::string Digest::Short() const {
  return StrCat(HashAlgorithmName(algorithm_), ":", hex_.substr(0, 12));
}

}  // namespace evs
