// A fixed-size bitmap whose bits can be set and tested from many threads at
// once without a lock (verified blocks, fetched blocks). Bits only go from 0
// to 1 except through Clear().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace evs {

class AtomicBitmap {
 public:
  // `bits` bits, all clear. Allocates bits/8 bytes, rounded up to 8.
  explicit AtomicBitmap(uint64_t bits)
      : bits_(bits), words_(std::make_unique<std::atomic<uint64_t>[]>((bits + 63) / 64)) {
    for (uint64_t i = 0; i < (bits + 63) / 64; ++i) words_[i].store(0, std::memory_order_relaxed);
  }

  uint64_t size() const { return bits_; }

  // Bit `i` (< size()). Acquire: what was published before Set(i) is visible.
  bool Test(uint64_t i) const {
    return (words_[i / 64].load(std::memory_order_acquire) >> (i % 64)) & 1;
  }
  // Sets bit `i`; returns true when this call changed it from 0 to 1.
  bool Set(uint64_t i) {
    uint64_t mask = uint64_t{1} << (i % 64);
    return (words_[i / 64].fetch_or(mask, std::memory_order_acq_rel) & mask) == 0;
  }
  // True when every bit in [begin, end) is set.
  bool AllSet(uint64_t begin, uint64_t end) const {
    for (uint64_t i = begin; i < end; ++i) {
      if (!Test(i)) return false;
    }
    return true;
  }
  // Clears bit `i`.
  void Clear(uint64_t i) {
    words_[i / 64].fetch_and(~(uint64_t{1} << (i % 64)), std::memory_order_acq_rel);
  }
  // Number of set bits. O(size()/64).
  uint64_t Count() const {
    uint64_t n = 0;
    for (uint64_t i = 0; i < (bits_ + 63) / 64; ++i) {
      n += static_cast<uint64_t>(__builtin_popcountll(words_[i].load(std::memory_order_relaxed)));
    }
    return n;
  }

 private:
  uint64_t bits_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

}  // namespace evs
