// Branch-free float32 log, log of a uniform, logit, sin/cos: the formulas (and constants) of the
// Triton backend (fastmollify/ops/triton.py: _log_reduced, _log_reduce, _log1m_reduce, _logit,
// _sincos), so the CPU, CUDA and Triton backends follow one set of formulas. Cephes-style range
// reduction and polynomials, about 1 ulp on the arguments the noise stream produces; log(1 - v) is
// reduced exactly from v, so a Box-Muller pair takes one polynomial and no division, and the
// logistic magnitude one polynomial and one division. Written with plain selects and bit casts so
// that loops over them vectorise on the host and run without branches (hence without slow paths)
// on the GPU. The host build uses -ffp-contract=off (every op rounds separately, as in the Triton
// interpreter); nvcc and compiled Triton contract multiply-adds (a few ulp apart, within the tests'
// tolerance). double keeps libm (libdevice on the GPU).
#pragma once
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace fastmollify {
namespace core {

FM_HOST_DEVICE FM_INLINE int32_t fm_float_bits(float x) {
#ifdef FM_DEVICE_CODE
  return __float_as_int(x);
#else
  int32_t i;
  std::memcpy(&i, &x, sizeof(i));
  return i;
#endif
}

FM_HOST_DEVICE FM_INLINE float fm_bits_float(int32_t i) {
#ifdef FM_DEVICE_CODE
  return __int_as_float(i);
#else
  float x;
  std::memcpy(&x, &i, sizeof(x));
  return x;
#endif
}

// log(2^e (1 + f)) for f in [sqrt(1/2) - 1, sqrt(2) - 1) and fe = e (Cephes logf's degree-9 polynomial).
FM_HOST_DEVICE FM_INLINE float log_reduced(float f, float fe) {
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = p * f * z;
  y = y - 2.12194440e-4f * fe;
  y = y - 0.5f * z;
  return (f + y) + 0.693359375f * fe;
}

// The reduction of a positive normal float32 x = 2^e (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)).
FM_HOST_DEVICE FM_INLINE void log_reduce(float x, float* f, float* fe) {
  const int32_t bits = fm_float_bits(x);
  int32_t e = (bits >> 23) - 126;
  const float m = fm_bits_float((bits & 0x007FFFFF) | 0x3F000000);  // [1/2, 1)
  const bool small = m < 0.70710677f;
  *fe = static_cast<float>(small ? e - 1 : e);
  *f = (small ? m + m : m) - 1.0f;
}

// The same reduction of 1 - v for v in (0, 1/2], exact although 1 - v is not a float32:
// 1 - v = 1 + (-v) below 1 - sqrt(1/2), else 2^-1 (1 + (1 - 2v)) (2v and 1 - 2v are exact).
FM_HOST_DEVICE FM_INLINE void log1m_reduce(float v, float* f, float* fe) {
  const bool near_one = v <= 0.29289323f;
  *f = near_one ? -v : 1.0f - (v + v);
  *fe = near_one ? 0.0f : -1.0f;
}

// Natural log of a positive normal float32.
FM_HOST_DEVICE FM_INLINE float fast_logf(float x) {
  float f, fe;
  log_reduce(x, &f, &fe);
  return log_reduced(f, fe);
}

// log u of the uniform u in (v, upper) form: log(1 - v) if upper else log(v), one polynomial.
FM_HOST_DEVICE FM_INLINE float fast_log_uniformf(float v, bool upper) {
  float f_lower, fe_lower, f_upper, fe_upper;
  log_reduce(v, &f_lower, &fe_lower);
  log1m_reduce(v, &f_upper, &fe_upper);
  return log_reduced(upper ? f_upper : f_lower, upper ? fe_upper : fe_lower);
}

// The logistic magnitude log(1 - v) - log(v) = log1p(q), q = (1 - 2v) / v (1 - 2v exact), for v in
// (0, 1/2]: one division and one polynomial. Below sqrt(2) - 1 the reduced argument is q itself
// (exact), above it 1 + q is reduced.
FM_HOST_DEVICE FM_INLINE float fast_logitf(float v) {
  const float q = (1.0f - (v + v)) / v;
  float f, fe;
  log_reduce(1.0f + q, &f, &fe);
  const bool small = q < 0.41421356f;
  return log_reduced(small ? q : f, small ? 0.0f : fe);
}

// sin(a), cos(a) for float32 a in [0, 4] (Cephes sinf/cosf, reduction by pi/2). For a >= 0
// truncation is floor, so q = floor(a 2/pi + 1/2) as in the Triton formula.
FM_HOST_DEVICE FM_INLINE void fast_sincosf(float a, float* sin_out, float* cos_out) {
  const int32_t qi = static_cast<int32_t>(a * 0.63661975f + 0.5f);
  const float q = static_cast<float>(qi);
  const float r = ((a - q * 1.5703125f) - q * 4.837512969970703125e-4f) - q * 7.54978995489188216e-8f;
  const float z = r * r;
  const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  const float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z -
                  0.5f * z + 1.0f;
  // Quadrant qi: sin = (s, c, -s, -c)[qi], cos = (c, -s, -c, s)[qi].
  const bool swap = (qi & 1) != 0;
  const float sb = swap ? c : s;
  const float cb = swap ? s : c;
  *sin_out = (qi & 2) ? -sb : sb;
  *cos_out = ((qi + 1) & 2) ? -cb : cb;
}

}  // namespace core
}  // namespace fastmollify
