// Branch-free float32 log, log(1 - v), sin/cos: the formulas (and constants) of the Triton
// backend (fastmollify/ops/triton.py: _log, _log1m, _sincos), so the CPU and Triton backends
// follow one set of formulas. Cephes-style range reduction and polynomials, about 1 ulp on the
// arguments the noise stream produces. Written with plain selects and bit casts so that loops
// over them vectorise (the host build uses -ffp-contract=off: every op rounds separately, as in
// the Triton interpreter). The host float path uses them; device code keeps libdevice
// (noise.h), and double keeps libm everywhere.
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

// Natural log of a positive normal float32 (Cephes logf: frexp, degree-9 polynomial).
FM_HOST_DEVICE FM_INLINE float fast_logf(float x) {
  const int32_t bits = fm_float_bits(x);
  int32_t e = (bits >> 23) - 126;
  const float m = fm_bits_float((bits & 0x007FFFFF) | 0x3F000000);  // [1/2, 1)
  const bool small = m < 0.70710677f;
  e = small ? e - 1 : e;
  const float f = (small ? m + m : m) - 1.0f;
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
  const float fe = static_cast<float>(e);
  y = y - 2.12194440e-4f * fe;
  y = y - 0.5f * z;
  return (f + y) + 0.693359375f * fe;
}

// log1p(-v) for v in (0, 1/2]: log(1 - v) corrected for the rounding of 1 - v.
FM_HOST_DEVICE FM_INLINE float fast_log1mf(float v) {
  const float u = 1.0f - v;
  const float d = u - 1.0f;  // exact
  const bool zero = d == 0.0f;
  const float safe = zero ? -1.0f : d;
  const float corrected = fast_logf(u) * (-v / safe);
  return zero ? -v : corrected;
}

// log(u) of the uniform u in (v, upper) form: log1p(-v) if upper else log(v), with one
// logarithm: the same values as computing both fast_log1mf(v) and fast_logf(v) and selecting.
FM_HOST_DEVICE FM_INLINE float fast_log_uniformf(float v, bool upper) {
  const float u = 1.0f - v;
  const float d = u - 1.0f;  // exact
  const float l = fast_logf(upper ? u : v);
  const bool zero = d == 0.0f;
  const float safe = zero ? -1.0f : d;
  const float corrected = l * (-v / safe);
  const float lower_tail = zero ? -v : corrected;
  return upper ? lower_tail : l;
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
