// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011; Random123), written once for host and device.
#pragma once
#include <cstdint>

#include "macros.h"

#if !defined(__CUDACC__) && defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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

// The round keys of key (k0, k1): round r uses (k0 + r W0, k1 + r W1). Computed once per call (the
// CUDA kernels read them from their parameters, so a round costs no key arithmetic).
struct PhiloxKey {
  uint32_t k0[10], k1[10];
};

FM_HOST_DEVICE FM_INLINE PhiloxKey philox_key(uint32_t k0, uint32_t k1) {
  PhiloxKey key;
  for (int round = 0; round < 10; ++round) {
    key.k0[round] = k0 + static_cast<uint32_t>(round) * kPhiloxW0;
    key.k1[round] = k1 + static_cast<uint32_t>(round) * kPhiloxW1;
  }
  return key;
}

// Ten rounds on counter (c0, c1, c2, c3) with `key`; the four output words replace the counter
// words (scalars only, so that a loop over counters vectorises on the host).
FM_HOST_DEVICE FM_INLINE void philox4x32_10_inplace(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                                    const PhiloxKey& key) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kPhiloxM0, c0, &hi0);
    const uint32_t lo1 = mulhilo32(kPhiloxM1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ key.k0[round];
    const uint32_t n2 = hi0 ^ c3 ^ key.k1[round];
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
}

// Ten rounds on counter (c0, c1, c2, c3) with `key`; writes the four output words.
FM_HOST_DEVICE FM_INLINE void philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, const PhiloxKey& key,
                                            uint32_t out[4]) {
  philox4x32_10_inplace(c0, c1, c2, c3, key);
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

#if !defined(__CUDACC__) && defined(__GNUC__) && defined(__x86_64__)
#define FM_PHILOX_X86 1
// Host only, x86-64: Philox4x32-10 of eight consecutive counters (c0 + j, c1, c2, c3), j = 0..7, in
// AVX2 registers (the same rounds as philox4x32_10_inplace: vpmuludq on the even and odd 32-bit
// lanes gives the eight 32x32 -> 64-bit products). Writes the words of counter j to
// out[4 j + 0..3]. Call only where the CPU has AVX2 (__builtin_cpu_supports("avx2")).
__attribute__((target("avx2"))) inline __m256i philox_mulhilo32_x8(__m256i a, __m256i m, __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

__attribute__((target("avx2"))) inline void philox4x32_10_x8(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                             const PhiloxKey& key, uint32_t* out) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  __m256i x0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c0)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i x1 = _mm256_set1_epi32(static_cast<int>(c1));
  __m256i x2 = _mm256_set1_epi32(static_cast<int>(c2));
  __m256i x3 = _mm256_set1_epi32(static_cast<int>(c3));
  for (int round = 0; round < 10; ++round) {
    __m256i hi0, hi1;
    const __m256i lo0 = philox_mulhilo32_x8(x0, m0, &hi0);
    const __m256i lo1 = philox_mulhilo32_x8(x2, m1, &hi1);
    x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32(static_cast<int>(key.k0[round])));
    x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32(static_cast<int>(key.k1[round])));
    x1 = lo1;
    x3 = lo0;
  }
  // 4 x 8 words -> counter-major order.
  const __m256i t0 = _mm256_unpacklo_epi32(x0, x1), t1 = _mm256_unpackhi_epi32(x0, x1);
  const __m256i t2 = _mm256_unpacklo_epi32(x2, x3), t3 = _mm256_unpackhi_epi32(x2, x3);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);  // counters 0|4, 1|5
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);  // counters 2|6, 3|7
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 0), _mm256_permute2x128_si256(u0, u1, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_permute2x128_si256(u2, u3, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 24), _mm256_permute2x128_si256(u2, u3, 0x31));
}

// The same for sixteen consecutive counters in AVX-512 registers (vpternlogd does each round's
// three-way XOR). Call only where the CPU has AVX-512F (__builtin_cpu_supports("avx512f")).
__attribute__((target("avx512f"))) inline __m512i philox_mulhilo32_x16(__m512i a, __m512i m, __m512i* hi) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

__attribute__((target("avx512f"))) inline void philox4x32_10_x16(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                                 const PhiloxKey& key, uint32_t* out) {
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  __m512i x0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(c0)),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m512i x1 = _mm512_set1_epi32(static_cast<int>(c1));
  __m512i x2 = _mm512_set1_epi32(static_cast<int>(c2));
  __m512i x3 = _mm512_set1_epi32(static_cast<int>(c3));
  for (int round = 0; round < 10; ++round) {
    __m512i hi0, hi1;
    const __m512i lo0 = philox_mulhilo32_x16(x0, m0, &hi0);
    const __m512i lo1 = philox_mulhilo32_x16(x2, m1, &hi1);
    x0 = _mm512_ternarylogic_epi32(hi1, x1, _mm512_set1_epi32(static_cast<int>(key.k0[round])), 0x96);  // a ^ b ^ c
    x2 = _mm512_ternarylogic_epi32(hi0, x3, _mm512_set1_epi32(static_cast<int>(key.k1[round])), 0x96);
    x1 = lo1;
    x3 = lo0;
  }
  // 4 x 16 words -> counter-major order: in 128-bit lane l, u0..u3 hold counters 4l + 0..3.
  const __m512i t0 = _mm512_unpacklo_epi32(x0, x1), t1 = _mm512_unpackhi_epi32(x0, x1);
  const __m512i t2 = _mm512_unpacklo_epi32(x2, x3), t3 = _mm512_unpackhi_epi32(x2, x3);
  const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
  const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
  const __m512i a = _mm512_shuffle_i32x4(u0, u1, 0x44), b = _mm512_shuffle_i32x4(u0, u1, 0xEE);  // lanes 0,1 | 2,3
  const __m512i c = _mm512_shuffle_i32x4(u2, u3, 0x44), d = _mm512_shuffle_i32x4(u2, u3, 0xEE);
  _mm512_storeu_si512(out + 0, _mm512_shuffle_i32x4(a, c, 0x88));  // counters 0..3
  _mm512_storeu_si512(out + 16, _mm512_shuffle_i32x4(a, c, 0xDD));  // 4..7
  _mm512_storeu_si512(out + 32, _mm512_shuffle_i32x4(b, d, 0x88));  // 8..11
  _mm512_storeu_si512(out + 48, _mm512_shuffle_i32x4(b, d, 0xDD));  // 12..15
}
#endif

}  // namespace core
}  // namespace fastmollify
