#include "salted_sha256.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace evs::verity {
namespace {

// FIPS 180-4 §4.2.2 and §5.3.3.
alignas(16) constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
constexpr uint32_t kInitial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

// One message as the sequence of 64-byte blocks SHA-256 consumes: the salt's
// leftover prefix, the data, the 0x80 byte, zeros, the bit length (§5.1.1).
// Blocks that lie inside the data are read in place; the one or two at the
// edges are assembled in a scratch buffer.
struct Message {
  const std::string& prefix;
  const uint8_t* data;
  size_t n;
  uint64_t bit_length;

  size_t blocks() const { return (prefix.size() + n + 9 + 63) / 64; }

  const uint8_t* Block(size_t k, uint8_t* scratch) const {
    const size_t r = prefix.size();
    const size_t start = 64 * k;
    if (start >= r && start + 64 <= r + n) return data + (start - r);
    size_t pos = start;
    size_t filled = 0;
    if (pos < r) {
      size_t c = std::min<size_t>(64, r - pos);
      std::memcpy(scratch, prefix.data() + pos, c);
      pos += c;
      filled += c;
    }
    if (filled < 64 && pos < r + n) {
      size_t c = std::min<size_t>(64 - filled, r + n - pos);
      std::memcpy(scratch + filled, data + (pos - r), c);
      pos += c;
      filled += c;
    }
    if (filled < 64) {
      std::memset(scratch + filled, 0, 64 - filled);
      if (pos == r + n) scratch[filled] = 0x80;
    }
    if (k + 1 == blocks()) {
      for (int i = 0; i < 8; ++i) scratch[63 - i] = static_cast<uint8_t>(bit_length >> (8 * i));
    }
    return scratch;
  }
};

#if defined(__x86_64__)
#define EVS_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

// The state lives in two registers as ABEF and CDGH, the layout
// sha256rnds2 works on.
EVS_SHA_TARGET inline void LoadState(const uint32_t h[8], __m128i& abef, __m128i& cdgh) {
  __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&h[0]));
  __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&h[4]));
  __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
  __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
  abef = _mm_alignr_epi8(cdab, efgh, 8);
  cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

EVS_SHA_TARGET inline void StoreDigest(__m128i abef, __m128i cdgh, uint8_t out[32]) {
  __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  __m128i dcba = _mm_blend_epi16(feba, dchg, 0xF0);
  __m128i hgfe = _mm_alignr_epi8(dchg, feba, 8);
  // Words to big-endian bytes.
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_shuffle_epi8(dcba, bswap));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_shuffle_epi8(hgfe, bswap));
}

EVS_SHA_TARGET inline __m128i LoadWords(const uint8_t* p) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  return _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), bswap);
}

// Message schedule (§6.2.2 step 1), four words at a time: W0 becomes the
// next four words from the previous sixteen (W0..W3, oldest first).
#define EVS_SCHEDULE(W0, W1, W2, W3) \
  W0 = _mm_sha256msg2_epu32(         \
      _mm_add_epi32(_mm_sha256msg1_epu32(W0, W1), _mm_alignr_epi8(W3, W2, 4)), W3)

// Four rounds (§6.2.2 step 3) on message words M, round constants 4i..4i+3.
#define EVS_ROUNDS(i, ABEF, CDGH, M)                                                          \
  do {                                                                                        \
    __m128i k_ =                                                                              \
        _mm_add_epi32(M, _mm_load_si128(reinterpret_cast<const __m128i*>(kRound + 4 * (i)))); \
    CDGH = _mm_sha256rnds2_epu32(CDGH, ABEF, k_);                                             \
    ABEF = _mm_sha256rnds2_epu32(ABEF, CDGH, _mm_shuffle_epi32(k_, 0x0E));                    \
  } while (0)

// The same for two independent states, interleaved so that each waits on
// its own dependency chain while the other's rounds execute.
#define EVS_ROUNDS2(i, A0, C0, M0, A1, C1, M1)                                              \
  do {                                                                                      \
    const __m128i kr_ = _mm_load_si128(reinterpret_cast<const __m128i*>(kRound + 4 * (i))); \
    __m128i k0_ = _mm_add_epi32(M0, kr_);                                                   \
    __m128i k1_ = _mm_add_epi32(M1, kr_);                                                   \
    C0 = _mm_sha256rnds2_epu32(C0, A0, k0_);                                                \
    C1 = _mm_sha256rnds2_epu32(C1, A1, k1_);                                                \
    A0 = _mm_sha256rnds2_epu32(A0, C0, _mm_shuffle_epi32(k0_, 0x0E));                       \
    A1 = _mm_sha256rnds2_epu32(A1, C1, _mm_shuffle_epi32(k1_, 0x0E));                       \
  } while (0)

// One block into one state (§6.2.2), all 64 rounds unrolled.
EVS_SHA_TARGET void Compress(__m128i& abef, __m128i& cdgh, const uint8_t* p) {
  const __m128i abef0 = abef, cdgh0 = cdgh;
  __m128i w0 = LoadWords(p), w1 = LoadWords(p + 16), w2 = LoadWords(p + 32), w3 = LoadWords(p + 48);
  EVS_ROUNDS(0, abef, cdgh, w0);
  EVS_ROUNDS(1, abef, cdgh, w1);
  EVS_ROUNDS(2, abef, cdgh, w2);
  EVS_ROUNDS(3, abef, cdgh, w3);
#define EVS_STEP(i, W0, W1, W2, W3) \
  EVS_SCHEDULE(W0, W1, W2, W3);     \
  EVS_ROUNDS(i, abef, cdgh, W0)
  EVS_STEP(4, w0, w1, w2, w3);
  EVS_STEP(5, w1, w2, w3, w0);
  EVS_STEP(6, w2, w3, w0, w1);
  EVS_STEP(7, w3, w0, w1, w2);
  EVS_STEP(8, w0, w1, w2, w3);
  EVS_STEP(9, w1, w2, w3, w0);
  EVS_STEP(10, w2, w3, w0, w1);
  EVS_STEP(11, w3, w0, w1, w2);
  EVS_STEP(12, w0, w1, w2, w3);
  EVS_STEP(13, w1, w2, w3, w0);
  EVS_STEP(14, w2, w3, w0, w1);
  EVS_STEP(15, w3, w0, w1, w2);
#undef EVS_STEP
  abef = _mm_add_epi32(abef, abef0);
  cdgh = _mm_add_epi32(cdgh, cdgh0);
}

// One block into each of two states.
EVS_SHA_TARGET void Compress2(__m128i& a0, __m128i& c0, const uint8_t* p, __m128i& a1, __m128i& c1,
                              const uint8_t* q) {
  const __m128i a0s = a0, c0s = c0, a1s = a1, c1s = c1;
  __m128i w0 = LoadWords(p), w1 = LoadWords(p + 16), w2 = LoadWords(p + 32), w3 = LoadWords(p + 48);
  __m128i v0 = LoadWords(q), v1 = LoadWords(q + 16), v2 = LoadWords(q + 32), v3 = LoadWords(q + 48);
  EVS_ROUNDS2(0, a0, c0, w0, a1, c1, v0);
  EVS_ROUNDS2(1, a0, c0, w1, a1, c1, v1);
  EVS_ROUNDS2(2, a0, c0, w2, a1, c1, v2);
  EVS_ROUNDS2(3, a0, c0, w3, a1, c1, v3);
#define EVS_STEP2(i, W0, W1, W2, W3, V0, V1, V2, V3) \
  EVS_SCHEDULE(W0, W1, W2, W3);                      \
  EVS_SCHEDULE(V0, V1, V2, V3);                      \
  EVS_ROUNDS2(i, a0, c0, W0, a1, c1, V0)
  EVS_STEP2(4, w0, w1, w2, w3, v0, v1, v2, v3);
  EVS_STEP2(5, w1, w2, w3, w0, v1, v2, v3, v0);
  EVS_STEP2(6, w2, w3, w0, w1, v2, v3, v0, v1);
  EVS_STEP2(7, w3, w0, w1, w2, v3, v0, v1, v2);
  EVS_STEP2(8, w0, w1, w2, w3, v0, v1, v2, v3);
  EVS_STEP2(9, w1, w2, w3, w0, v1, v2, v3, v0);
  EVS_STEP2(10, w2, w3, w0, w1, v2, v3, v0, v1);
  EVS_STEP2(11, w3, w0, w1, w2, v3, v0, v1, v2);
  EVS_STEP2(12, w0, w1, w2, w3, v0, v1, v2, v3);
  EVS_STEP2(13, w1, w2, w3, w0, v1, v2, v3, v0);
  EVS_STEP2(14, w2, w3, w0, w1, v2, v3, v0, v1);
  EVS_STEP2(15, w3, w0, w1, w2, v3, v0, v1, v2);
#undef EVS_STEP2
  a0 = _mm_add_epi32(a0, a0s);
  c0 = _mm_add_epi32(c0, c0s);
  a1 = _mm_add_epi32(a1, a1s);
  c1 = _mm_add_epi32(c1, c1s);
}

// Advances h[0..7] over `blocks` whole blocks at `bytes` (the salt's).
EVS_SHA_TARGET void AbsorbWholeBlocks(const uint8_t* bytes, size_t blocks, uint32_t h[8]) {
  __m128i abef, cdgh;
  LoadState(h, abef, cdgh);
  for (size_t k = 0; k < blocks; ++k) Compress(abef, cdgh, bytes + 64 * k);
  // Back to h[0..7] order: reuse StoreDigest's shuffles without the byte swap.
  __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&h[0]), _mm_blend_epi16(feba, dchg, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&h[4]), _mm_alignr_epi8(dchg, feba, 8));
}

EVS_SHA_TARGET void HashOne(const uint32_t state[8], const Message& m, uint8_t out[32]) {
  __m128i abef, cdgh;
  LoadState(state, abef, cdgh);
  alignas(16) uint8_t scratch[64];
  const size_t blocks = m.blocks();
  for (size_t k = 0; k < blocks; ++k) Compress(abef, cdgh, m.Block(k, scratch));
  StoreDigest(abef, cdgh, out);
}

EVS_SHA_TARGET void HashTwo(const uint32_t state[8], const Message& a, const Message& b,
                            uint8_t out_a[32], uint8_t out_b[32]) {
  __m128i a0, c0, a1, c1;
  LoadState(state, a0, c0);
  a1 = a0;
  c1 = c0;
  alignas(16) uint8_t sa[64], sb[64];
  const size_t blocks = a.blocks();  // equal lengths: equal block counts
  for (size_t k = 0; k < blocks; ++k) {
    Compress2(a0, c0, a.Block(k, sa), a1, c1, b.Block(k, sb));
  }
  StoreDigest(a0, c0, out_a);
  StoreDigest(a1, c1, out_b);
}

#undef EVS_ROUNDS2
#undef EVS_ROUNDS
#undef EVS_SCHEDULE
#endif  // __x86_64__

}  // namespace

bool SaltedSha256::Supported() {
#if defined(__x86_64__)
  static const bool supported = [] {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const bool ssse3 = ecx & bit_SSSE3, sse41 = ecx & bit_SSE4_1;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool sha = ebx & (1u << 29);  // CPUID.(EAX=7,ECX=0):EBX.SHA
    return ssse3 && sse41 && sha;
  }();
  return supported;
#else
  return false;
#endif
}

SaltedSha256::SaltedSha256(std::string_view salt) : salt_bytes_(salt.size()) {
  std::memcpy(state_, kInitial, sizeof state_);
  const size_t whole = salt.size() / 64;
#if defined(__x86_64__)
  if (whole > 0 && Supported()) {
    AbsorbWholeBlocks(reinterpret_cast<const uint8_t*>(salt.data()), whole, state_);
  }
#endif
  prefix_.assign(salt.substr(whole * 64));
}

void SaltedSha256::Hash(const uint8_t* data, size_t n, uint8_t out[32]) const {
#if defined(__x86_64__)
  HashOne(state_, Message{prefix_, data, n, (salt_bytes_ + n) * 8}, out);
#else
  (void)data;
  (void)n;
  (void)out;
#endif
}

void SaltedSha256::Hash2(const uint8_t* a, const uint8_t* b, size_t n, uint8_t out_a[32],
                         uint8_t out_b[32]) const {
#if defined(__x86_64__)
  const uint64_t bits = (salt_bytes_ + n) * 8;
  HashTwo(state_, Message{prefix_, a, n, bits}, Message{prefix_, b, n, bits}, out_a, out_b);
#else
  (void)a;
  (void)b;
  (void)n;
  (void)out_a;
  (void)out_b;
#endif
}

}  // namespace evs::verity
