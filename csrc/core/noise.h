// The noise stream of fastmollify/noise.py, written once for host and device:
// Philox words -> exact (v, upper) uniforms -> kernel samples (Box-Muller for the Gaussian,
// symmetric inverse-CDF magnitudes for the other four built-in kernels).
//
// acc_t is float for float32/float16/bfloat16 data and double for float64 data. Constants
// are rounded to acc_t exactly as PyTorch rounds a Python float scalar against a tensor of
// dtype acc_t, so the reference backend's arithmetic is reproduced operation by operation;
// only the transcendental functions (fastmath.h for float on the host, libm for double,
// CUDA's libdevice on the GPU, SLEEF in PyTorch's CPU kernels) may differ by an ulp or so.
#pragma once
#include <math.h>

#include <cstdint>

#include "fastmath.h"
#include "macros.h"
#include "philox.h"

namespace fastmollify {
namespace core {

enum KernelId : int {
  kGaussian = 0,
  kPoisson = 1,
  kHyperbolic = 2,
  kSigmoid = 3,
  kRectangular = 4,
  kNumBuiltinKernels = 5,
};

constexpr double kPi = 3.141592653589793;

// Math on acc_t (float or double): one overload set usable on host and device. float uses the
// branch-free formulas of fastmath.h (those of the Triton backend) on the host and on the GPU;
// double uses libm / libdevice on the reference's formulas (kernels.py).
// log u for u in (v, upper) form (noise.py): log(1 - v) when upper, else log(v).
FM_HOST_DEVICE FM_INLINE double fm_log_uniform(double v, bool upper) { return upper ? ::log1p(-v) : ::log(v); }
FM_HOST_DEVICE FM_INLINE float fm_log_uniform(float v, bool upper) { return fast_log_uniformf(v, upper); }
FM_HOST_DEVICE FM_INLINE float fm_sqrt(float x) { return ::sqrtf(x); }
FM_HOST_DEVICE FM_INLINE double fm_sqrt(double x) { return ::sqrt(x); }
FM_HOST_DEVICE FM_INLINE void fm_sincos(double a, double* s, double* c) {
  *s = ::sin(a);
  *c = ::cos(a);
}
FM_HOST_DEVICE FM_INLINE void fm_sincos(float a, float* s, float* c) { fast_sincosf(a, s, c); }
// The magnitudes of kernels.py at v in (0, 1/2].
FM_HOST_DEVICE FM_INLINE double cauchy_magnitude(double v) { return ::cos(kPi * v) / ::sin(kPi * v); }
FM_HOST_DEVICE FM_INLINE float cauchy_magnitude(float v) { return fast_cot_pif(v); }
FM_HOST_DEVICE FM_INLINE double sech_magnitude(double v) { return -(2.0 / kPi) * ::log(::tan((kPi / 2.0) * v)); }
FM_HOST_DEVICE FM_INLINE float sech_magnitude(float v) { return fast_sech_magnitudef(v); }
FM_HOST_DEVICE FM_INLINE double logistic_magnitude(double v) { return ::log1p(-v) - ::log(v); }
FM_HOST_DEVICE FM_INLINE float logistic_magnitude(float v) { return fast_logitf(v); }

// Rounded product and sum that the compiler may not fuse into an FMA (nvcc contracts by
// default; the host build uses -ffp-contract=off). PyTorch rounds each op separately.
FM_HOST_DEVICE FM_INLINE float fm_mul(float a, float b) {
#ifdef FM_DEVICE_CODE
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FM_HOST_DEVICE FM_INLINE double fm_mul(double a, double b) {
#ifdef FM_DEVICE_CODE
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
FM_HOST_DEVICE FM_INLINE float fm_add(float a, float b) {
#ifdef FM_DEVICE_CODE
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FM_HOST_DEVICE FM_INLINE double fm_add(double a, double b) {
#ifdef FM_DEVICE_CODE
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// The exact (v, upper) form of u = (k + 1/2) 2^-24, k = word >> 8 (see noise.py):
// v = min(u, 1 - u) = (min(k, 2^24 - 1 - k) + 1/2) 2^-24, upper = k >= 2^23.
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE void symmetric_uniform(uint32_t word, acc_t* v, bool* upper) {
  const uint32_t k = word >> 8;
  const bool up = k >= (1u << 23);
  const uint32_t m = up ? ((1u << 24) - 1u - k) : k;  // < 2^23: exact in float
  *upper = up;
  // (m + 1/2) 2^-24 = m 2^-24 + 2^-25, both steps exact: one multiply-add.
  *v = static_cast<acc_t>(m) * static_cast<acc_t>(5.9604644775390625e-08) + static_cast<acc_t>(2.98023223876953125e-08);
}

// |z| of the lower-tail inverse CDF at v in (0, 1/2] for the non-Gaussian built-ins
// (kernels.py: Kernel.magnitude).
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t magnitude(int kernel, acc_t v) {
  switch (kernel) {
    case kPoisson:  // Cauchy: cot(pi v)
      return cauchy_magnitude(v);
    case kHyperbolic:  // -(2/pi) log(tan((pi/2) v))
      return sech_magnitude(v);
    case kSigmoid:  // logistic: log(1 - v) - log(v)
      return logistic_magnitude(v);
    default:  // kRectangular: 1 - 2v (exact)
      return static_cast<acc_t>(1) - static_cast<acc_t>(2) * v;
  }
}

// The rectangular kernel's sample straight from its word: 2u - 1 = (2k + 1 - 2^24) 2^-24 with
// k = word >> 8, which is exactly +-(1 - 2v) of magnitude() with the sign of u - 1/2.
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t rectangular_sample(uint32_t word) {
  const int32_t n = static_cast<int32_t>(((word >> 8) << 1) | 1u) - (1 << 24);
  return static_cast<acc_t>(n) * static_cast<acc_t>(5.9604644775390625e-08);
}

// Box-Muller on one pair (u_a, u_b) in (v, upper) form (noise.box_muller).
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE void box_muller(acc_t v_a, bool upper_a, acc_t v_b, bool upper_b, acc_t* z0, acc_t* z1) {
  const acc_t log_u = fm_log_uniform(v_a, upper_a);
  const acc_t radius = fm_sqrt(static_cast<acc_t>(-2) * log_u);
  acc_t sin_angle, cos_angle;
  fm_sincos(static_cast<acc_t>(2.0 * kPi) * v_b, &sin_angle, &cos_angle);
  *z0 = radius * cos_angle;
  *z1 = radius * (upper_b ? -sin_angle : sin_angle);
}

// The stream's four samples of `kernel` (scale 1) for group `group` of row (sample, example)
// of `stream`: Philox counter (group, sample, example, stream), round keys `key`.
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE void noise4(int kernel, const PhiloxKey& key, uint32_t group, uint32_t sample,
                                     uint32_t example, uint32_t stream, acc_t z[4]) {
  uint32_t words[4];
  philox4x32_10(group, sample, example, stream, key, words);
  if (kernel == kRectangular) {
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < 4; ++k) z[k] = rectangular_sample<acc_t>(words[k]);
    return;
  }
  acc_t v[4];
  bool upper[4];
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int k = 0; k < 4; ++k) symmetric_uniform<acc_t>(words[k], &v[k], &upper[k]);
  if (kernel == kGaussian) {
    box_muller<acc_t>(v[0], upper[0], v[1], upper[1], &z[0], &z[1]);
    box_muller<acc_t>(v[2], upper[2], v[3], upper[3], &z[2], &z[3]);
  } else {
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < 4; ++k) {
      const acc_t m = magnitude<acc_t>(kernel, v[k]);
      z[k] = upper[k] ? m : -m;
    }
  }
}

}  // namespace core
}  // namespace fastmollify
