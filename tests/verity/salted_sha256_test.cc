// The two-lane SHA-NI SHA-256 gives OpenSSL's digests for every salt and
// message length that matters (and the edges around them).
#include "salted_sha256.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <random>
#include <string>
#include <vector>

#include "evs/common/digest.h"

namespace evs::verity {
namespace {

std::string Reference(const std::string& salt, const uint8_t* data, size_t n) {
  Hasher h(HashAlgorithm::kSha256);
  h.Update(salt);
  h.Update(data, n);
  return h.FinishBytes();
}

std::string Bytes(const uint8_t* p) { return std::string(reinterpret_cast<const char*>(p), 32); }

TEST(SaltedSha256, MatchesOpenSslForEverySaltAndLength) {
  if (!SaltedSha256::Supported()) GTEST_SKIP() << "CPU without SHA-NI: OpenSSL is used instead";
  std::mt19937_64 rng(42);
  std::vector<uint8_t> a(5000), b(5000);
  for (auto& c : a) c = static_cast<uint8_t>(rng());
  for (auto& c : b) c = static_cast<uint8_t>(rng());
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 200; ++n) lengths.push_back(n);  // every padding case
  for (size_t n : {447, 448, 511, 512, 513, 4031, 4032, 4095, 4096, 4097, 5000}) {
    lengths.push_back(n);
  }
  for (size_t salt_size : {0, 1, 31, 32, 33, 55, 56, 63, 64, 65, 100, 128, 200, 256}) {
    std::string salt(salt_size, '\0');
    for (auto& c : salt) c = static_cast<char>(rng());
    SaltedSha256 sha(salt);
    for (size_t n : lengths) {
      uint8_t one[32], x[32], y[32];
      sha.Hash(a.data(), n, one);
      sha.Hash2(a.data(), b.data(), n, x, y);
      const std::string ra = Reference(salt, a.data(), n);
      ASSERT_EQ(Bytes(one), ra) << "salt " << salt_size << " length " << n;
      ASSERT_EQ(Bytes(x), ra) << "salt " << salt_size << " length " << n << " lane 0";
      ASSERT_EQ(Bytes(y), Reference(salt, b.data(), n))
          << "salt " << salt_size << " length " << n << " lane 1";
    }
  }
}

TEST(SaltedSha256, KnownAnswer) {
  if (!SaltedSha256::Supported()) GTEST_SKIP() << "CPU without SHA-NI";
  // FIPS 180-4 example "abc" (NIST CSRC SHA256.pdf), no salt; and with the
  // salt "ab" and message "c", which must give the same digest.
  const std::string expected =
      *HexDecode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  uint8_t out[32];
  SaltedSha256("").Hash(reinterpret_cast<const uint8_t*>("abc"), 3, out);
  EXPECT_EQ(Bytes(out), expected);
  SaltedSha256("ab").Hash(reinterpret_cast<const uint8_t*>("c"), 1, out);
  EXPECT_EQ(Bytes(out), expected);
}

}  // namespace
}  // namespace evs::verity
