// Per-element arithmetic of the three ops (fastmollify/ops/__init__.py), shared by the CPU
// and CUDA backends: sigma modes, ClipGrad clamp, weight noise, weighted Welford merge.
#pragma once
#include "macros.h"
#include "noise.h"

namespace fastmollify {
namespace core {

enum SigmaMode : int { kFixed = 0, kRange = 1, kAdaptive = 2 };

// torch.minimum: NaN in either argument gives NaN.
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t nan_min(acc_t a, acc_t b) {
  return (a < b || a != a) ? a : b;
}

// torch.clamp(value, lo, hi) with tensor bounds: min(max(value, lo), hi), NaN propagating.
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t clamp(acc_t value, acc_t lo, acc_t hi) {
  if (lo != lo) return lo;
  if (hi != hi) return hi;
  value = value < lo ? lo : value;
  return hi < value ? hi : value;
}

// Per-element sigma: FIXED scale, RANGE scale (hi - lo), ADAPTIVE scale min(x - lo, hi - x).
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t sigma_of(int mode, acc_t scale, acc_t x, acc_t lo, acc_t hi) {
  if (mode == kRange) return fm_mul(hi - lo, scale);
  if (mode == kAdaptive) return fm_mul(nan_min<acc_t>(x - lo, hi - x), scale);
  return scale;
}

// x + sigma z, clamped into [lo, hi] when clip (ClipGrad), for a sigma already known.
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t noisy_value(bool clip, acc_t sigma, acc_t x, acc_t lo, acc_t hi, acc_t z) {
  const acc_t noisy = fm_add(x, fm_mul(sigma, z));
  return clip ? clamp<acc_t>(noisy, lo, hi) : noisy;
}

// One perturbed element: x + sigma z, clamped into [lo, hi] when clip (ClipGrad).
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t perturb_value(int mode, bool clip, acc_t scale, acc_t x, acc_t lo, acc_t hi, acc_t z) {
  return noisy_value<acc_t>(clip, sigma_of<acc_t>(mode, scale, x, lo, hi), x, lo, hi, z);
}

// One multiplicatively perturbed weight: clean (1 + sigma z).
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t weight_value(acc_t clean, acc_t sigma, acc_t z) {
  return fm_mul(clean, fm_add(static_cast<acc_t>(1), fm_mul(sigma, z)));
}

// Weighted Welford/West update of (mean, m2) by gradient g of weight w > 0, where
// w_over_n = w / n and n is the total weight including this sample.
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE void welford_update(acc_t* mean, acc_t* m2, acc_t g, acc_t w, acc_t w_over_n) {
  const acc_t delta = g - *mean;
  *mean = fm_add(*mean, fm_mul(w_over_n, delta));
  *m2 = fm_add(*m2, fm_mul(fm_mul(w, delta), g - *mean));
}

// Advance the running total weight n by a sample's weight w; returns w / n, the ratio
// welford_update takes. Samples of zero (or negative, or NaN) weight are skipped by the
// caller (w > 0 fails) but still counted in n. Per element and sample the merge is
//   n += w; if (w > 0) { delta = g - mean; mean += (w / n) delta; m2 += w delta (g - mean); }
template <typename acc_t>
FM_HOST_DEVICE FM_INLINE acc_t welford_advance(acc_t* n, acc_t w) {
  *n += w;
  return w > static_cast<acc_t>(0) ? w / *n : static_cast<acc_t>(0);
}

}  // namespace core
}  // namespace fastmollify
