// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011; Random123), written once for host and device.
#pragma once
#include <cstdint>

#include "macros.h"

namespace fastmollify {
namespace core {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// High and low words of a 32x32 -> 64-bit product.
FM_HOST_DEVICE FM_INLINE uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

// Ten rounds on counter (c0, c1, c2, c3) with key (k0, k1); the four output words replace the
// counter words (scalars only, so that a loop over counters vectorises on the host).
FM_HOST_DEVICE FM_INLINE void philox4x32_10_inplace(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                                    uint32_t k0, uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    if (round) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kPhiloxM0, c0, &hi0);
    const uint32_t lo1 = mulhilo32(kPhiloxM1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
}

// Ten rounds on counter (c0, c1, c2, c3) with key (k0, k1); writes the four output words.
FM_HOST_DEVICE FM_INLINE void philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                            uint32_t k0, uint32_t k1, uint32_t out[4]) {
  philox4x32_10_inplace(c0, c1, c2, c3, k0, k1);
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

}  // namespace core
}  // namespace fastmollify
