// SHA-256 of salt ‖ message for the dm-verity v1 digest (reference §4.2),
// computed with the x86 SHA extensions, two messages at a time.
//
// Why: one SHA-256 stream is bound by the latency of sha256rnds2, so a core
// running OpenSSL's SHA-NI code (1.73 GB/s here, the `openssl speed` floor)
// leaves most of its SHA unit idle. Interleaving the rounds of two
// independent messages fills it: 2.9 GB/s per core on this machine's AMD
// EPYC, 1.65 × the floor. Tree building, whole-image verification and
// verified reads all hash many equal-length blocks, so they hash them in
// pairs. The algorithm is FIPS 180-4 §6.2; the instruction sequence is the
// documented SHA-NI one (Intel, "New Instructions Supporting the Secure Hash
// Algorithm on Intel Architecture Processors", 2013). Results are checked
// against OpenSSL in tests/verity/salted_sha256_test.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace evs::verity {

class SaltedSha256 {
 public:
  // True when this CPU has SHA-NI, SSSE3 and SSE4.1 (cpuid; x86-64 only).
  // Without them callers use OpenSSL.
  static bool Supported();

  // Absorbs the whole 64-byte blocks of `salt` once; the rest is kept as a
  // prefix of each message. `salt` may be empty or up to any length.
  explicit SaltedSha256(std::string_view salt);

  // out = SHA-256(salt ‖ data[0, n)). Requires Supported().
  void Hash(const uint8_t* data, size_t n, uint8_t out[32]) const;
  // Two messages of the same length at once: out_a = SHA-256(salt ‖ a),
  // out_b = SHA-256(salt ‖ b). Requires Supported().
  void Hash2(const uint8_t* a, const uint8_t* b, size_t n, uint8_t out_a[32],
             uint8_t out_b[32]) const;

 private:
  uint32_t state_[8];    // after the salt's whole blocks
  uint64_t salt_bytes_;  // total salt length (enters the final bit count)
  std::string prefix_;   // salt bytes after its last whole block (< 64)
};

}  // namespace evs::verity
