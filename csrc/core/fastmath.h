// Branch-free float32 math of the noise transforms: log, log of a uniform, sin/cos and the magnitudes
// of the Cauchy, hyperbolic-secant and logistic kernels, with the formulas (and constants) of the
// Triton backend (fastmollify/ops/triton.py: _log_reduced, _log_reduce, _log1m_reduce, _rcp, _sincos,
// _cot_pi, _sech_magnitude, _logit), so the CPU, CUDA and Triton backends follow one set of formulas.
// Range reductions and polynomials: the magnitudes within 2.5 ulp over every uniform of the noise
// stream (2.7e-7 absolute where they cross zero; the reference's own float32 formulas err by 1-2e-7
// there). log(1 - v) is reduced exactly from v, so a Box-Muller pair takes one polynomial and no
// division; the other magnitudes take a polynomial in v^2 around one logarithm or one reciprocal where
// the reference takes sin, cos, tan or two logarithms. Written with plain selects and bit casts so
// that loops over them vectorise on the host and run without branches (hence without slow paths) on
// the GPU. The host build uses -ffp-contract=off (every op rounds separately, as in the Triton
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

// log(2^fe (1 + f)) = fe ln2 + f P(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1): P of degree 8, a
// near-minimax fit of log1p(f) / f (relative error 2.6e-8), so the result is relatively accurate for
// f near 0 too (Box-Muller's log(1 - v) for tiny v). The fits and their error over every uniform of
// the noise stream: csrc/core/fit_polynomials.py.
FM_HOST_DEVICE FM_INLINE float log_reduced(float f, float fe) {
  float p = 8.95945206e-2f;
  p = p * f - 1.44819751e-1f;
  p = p * f + 1.49174511e-1f;
  p = p * f - 1.65437728e-1f;
  p = p * f + 1.99584126e-1f;
  p = p * f - 2.50029445e-1f;
  p = p * f + 3.33341599e-1f;
  p = p * f - 4.99999791e-1f;
  p = p * f + 1.0f;
  return fe * 0.693147182f + f * p;
}

// The reduction of a positive normal float32 x = 2^fe (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)):
// subtracting sqrt(1/2)'s bits moves the octave boundary to sqrt(1/2), so one integer subtraction,
// shift and mask do it (the result equals the classic compare-and-double reduction, exactly).
FM_HOST_DEVICE FM_INLINE void log_reduce(float x, float* f, float* fe) {
  const int32_t ix = fm_float_bits(x) - 0x3F3504F3;
  *fe = static_cast<float>(ix >> 23);  // arithmetic shift
  *f = fm_bits_float((ix & 0x007FFFFF) + 0x3F3504F3) - 1.0f;
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

// 1 / x for a positive normal float32 x, within 1 ulp: IEEE division on the host; on the GPU the
// hardware reciprocal (rcp.approx, within 1 ulp) refined by one Newton step (about 0.5 ulp), three
// instructions without the IEEE division's range check and slow path.
FM_HOST_DEVICE FM_INLINE float fast_rcpf(float x) {
#ifdef FM_DEVICE_CODE
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return fmaf(fmaf(-x, r, 1.0f), r, r);
#else
  return 1.0f / x;
#endif
}

// The Cauchy magnitude cot(pi v) for v in (0, 1/2]: D(v^2) / (v (1 - v^2)), where the even function
// D = (1 - v^2) v cot(pi v) (the poles of cot at 0 and +-1 divided out, analytic for |v| < 2) is a
// degree-4 polynomial in t = v^2 on [0, 1/4] (fit error 2e-8 of cot's scale). No sin/cos, one
// reciprocal: within 2.2 ulp, or 2.3e-7 absolute below 1 (near the zero at v = 1/2).
FM_HOST_DEVICE FM_INLINE float fast_cot_pif(float v) {
  const float t = v * v;
  float d = 9.68479458e-3f;
  d = d * t + 4.11217585e-2f;
  d = d * t + 3.58187139e-1f;
  d = d * t - 1.36550784f;
  d = d * t + 3.18309873e-1f;
  return d * fast_rcpf(v - v * t);
}

// The hyperbolic-secant magnitude -(2/pi) log(tan(pi v / 2)) for v in (0, 1/2]:
// -(2/pi) log v + H(v^2), where H = -(2/pi) log(tan(pi v / 2) / v) (even, analytic for |v| < 1) is a
// degree-5 polynomial in t = v^2 on [0, 1/4] (fit error 3e-8). One logarithm, no sin/cos or division:
// within 2.5 ulp, or 2.7e-7 absolute below 1 (near the zero at v = 1/2).
FM_HOST_DEVICE FM_INLINE float fast_sech_magnitudef(float v) {
  const float t = v * v;
  float h = -2.55499035e-1f;
  h = h * t - 1.16783120e-1f;
  h = h * t - 2.14994624e-1f;
  h = h * t - 3.01088333e-1f;
  h = h * t - 5.23606837e-1f;
  h = h * t - 2.87486464e-1f;
  return -6.36619747e-1f * fast_logf(v) + h;
}

// The logistic magnitude log(1 - v) - log(v) = log(1 / v - 1) for v in (0, 1/2]: one reciprocal and
// one logarithm, within 1.3 ulp, or 1.3e-7 absolute below 1 (near the zero at v = 1/2, where 1 / v - 1
// rounds, as the reference's own log1p(-v) - log(v) does).
FM_HOST_DEVICE FM_INLINE float fast_logitf(float v) { return fast_logf(fast_rcpf(v) - 1.0f); }

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
