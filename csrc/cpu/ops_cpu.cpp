// CPU backend: OpenMP loops over the shared core (csrc/core), registered for DispatchKey CPU.
//
// perturb / perturb_weights: parallel over tasks = (sample, example, block of groups). For float
// math (float32/float16/bfloat16 data) a task runs three loops that vectorise: Philox words of
// its block into a small uint32 buffer (one call per group of four elements), words -> noise z
// (core/fastmath.h formulas) into a float buffer, then out = x + sigma z. The float32 hot loops
// are compiled three times (GCC target_clones: x86-64-v4 = AVX-512, x86-64-v3 = AVX2/FMA, and the
// baseline), picked at load time, so the library still runs on machines without AVX2;
// -ffp-contract=off keeps every op rounded separately on all of them. Philox itself is written
// with AVX-512 and AVX2 intrinsics (core/philox.h), the widest the CPU has picked once
// (cpu_philox_path). float64 data keeps the scalar per-group path (libm).
// accumulate: parallel over blocks of elements; the running mean/m2 of a block stay in L1
// while the S gradient rows stream through; the per-sample weight / running-total ratio is
// hoisted out of the element loop (core::welford_advance, once per sample).
#include <ATen/Parallel.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "../ops.h"

// GCC 12's AVX-512 headers trip a false -Wmaybe-uninitialized in _mm512_undefined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace fastmollify {
namespace {

constexpr int64_t kBlockGroups = 256;     // perturb: 1024 elements per task
constexpr int64_t kBlockElements = 1024;  // accumulate: elements per task
constexpr int64_t kSerialWork = 1 << 14;  // below this many elements, no threads

// Run body(t) for t in [0, tasks) on torch's intra-op thread count.
template <typename F>
void parallel_tasks(int64_t tasks, int64_t work, const F& body) {
  const int threads = work < kSerialWork || tasks < 2 ? 1 : std::max(1, at::get_num_threads());
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t t = 0; t < tasks; ++t) body(t);
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FM_CLONES
#endif

// Philox words of groups [g0, g0 + n) of row (sample, example, stream) into words[4 n]: portable loop.
FM_CLONES void philox_block_scalar(const core::PhiloxKey& key, uint32_t g0, int n, uint32_t sample, uint32_t example,
                            uint32_t stream, uint32_t* __restrict__ words) {
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    uint32_t c0 = g0 + static_cast<uint32_t>(i), c1 = sample, c2 = example, c3 = stream;
    core::philox4x32_10_inplace(c0, c1, c2, c3, key);
    words[4 * i + 0] = c0;
    words[4 * i + 1] = c1;
    words[4 * i + 2] = c2;
    words[4 * i + 3] = c3;
  }
}

#if defined(FM_PHILOX_X86)
// The same words, eight groups at a time in AVX2 registers (core::philox4x32_10_x8).
__attribute__((target("avx2"))) void philox_block_avx2(const core::PhiloxKey& key, uint32_t g0, int n,
                                                       uint32_t sample, uint32_t example, uint32_t stream,
                                                       uint32_t* __restrict__ words) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    core::philox4x32_10_x8(g0 + static_cast<uint32_t>(i), sample, example, stream, key, words + 4 * i);
  if (i < n) philox_block_scalar(key, g0 + static_cast<uint32_t>(i), n - i, sample, example, stream, words + 4 * i);
}

// Sixteen groups at a time in AVX-512 registers (core::philox4x32_10_x16), the rest as above.
__attribute__((target("avx512f,avx2"))) void philox_block_avx512(const core::PhiloxKey& key, uint32_t g0, int n,
                                                                 uint32_t sample, uint32_t example, uint32_t stream,
                                                                 uint32_t* __restrict__ words) {
  int i = 0;
  for (; i + 16 <= n; i += 16)
    core::philox4x32_10_x16(g0 + static_cast<uint32_t>(i), sample, example, stream, key, words + 4 * i);
  if (i < n) philox_block_avx2(key, g0 + static_cast<uint32_t>(i), n - i, sample, example, stream, words + 4 * i);
}
#endif

// Philox words of groups [g0, g0 + n) of row (sample, example, stream) into words[4 n].
void philox_block(const core::PhiloxKey& key, uint32_t g0, int n, uint32_t sample, uint32_t example,
                  uint32_t stream, uint32_t* __restrict__ words) {
#if defined(FM_PHILOX_X86)
  switch (cpu_philox_path()) {
    case 2:
      return philox_block_avx512(key, g0, n, sample, example, stream, words);
    case 1:
      return philox_block_avx2(key, g0, n, sample, example, stream, words);
    default:
      break;
  }
#endif
  philox_block_scalar(key, g0, n, sample, example, stream, words);
}

// Noise samples (scale 1) of `kernel` for n words (n a multiple of 4: whole groups).
FM_CLONES void noise_block(int kernel, const uint32_t* __restrict__ words, int n, float* __restrict__ z) {
  if (kernel == core::kGaussian) {
#pragma omp simd
    for (int i = 0; i < n / 2; ++i) {
      float va, vb;
      bool ua, ub;
      core::symmetric_uniform<float>(words[2 * i], &va, &ua);
      core::symmetric_uniform<float>(words[2 * i + 1], &vb, &ub);
      core::box_muller<float>(va, ua, vb, ub, &z[2 * i], &z[2 * i + 1]);
    }
    return;
  }
  switch (kernel) {
#define FM_SYMMETRIC_LOOP(K)                                   \
  case K:                                                      \
    _Pragma("omp simd") for (int i = 0; i < n; ++i) {          \
      float v;                                                 \
      bool up;                                                 \
      core::symmetric_uniform<float>(words[i], &v, &up);       \
      const float m = core::magnitude<float>(K, v);            \
      z[i] = up ? m : -m;                                      \
    }                                                          \
    break;
    FM_SYMMETRIC_LOOP(core::kPoisson)
    FM_SYMMETRIC_LOOP(core::kHyperbolic)
    FM_SYMMETRIC_LOOP(core::kSigmoid)
#undef FM_SYMMETRIC_LOOP
    case core::kRectangular:
#pragma omp simd
      for (int i = 0; i < n; ++i) z[i] = core::rectangular_sample<float>(words[i]);
      break;
    default:
      break;
  }
}

// Noise z (float) of the groups [g0, g1) of a row into z[4 (g1 - g0)].
template <typename acc_t>
void noise_groups(int kernel, const core::PhiloxKey& key, int64_t g0, int64_t g1, uint32_t sample,
                  uint32_t example, uint32_t stream, acc_t* z) {
  if constexpr (std::is_same<acc_t, float>::value) {
    uint32_t words[4 * kBlockGroups];
    const int n = static_cast<int>(g1 - g0);
    philox_block(key, static_cast<uint32_t>(g0), n, sample, example, stream, words);
    noise_block(kernel, words, 4 * n, z);
  } else {
    for (int64_t g = g0; g < g1; ++g)
      core::noise4<acc_t>(kernel, key, static_cast<uint32_t>(g), sample, example, stream, z + 4 * (g - g0));
  }
}

// float32 out[i] = x[i] + sigma z[i] (clamped when clip) for i in [0, n).
FM_CLONES void perturb_row_f32(int mode, bool clip, float scale, const float* __restrict__ x,
                               const float* __restrict__ lo, const float* __restrict__ hi, int64_t lo_stride,
                               int64_t hi_stride, const float* __restrict__ z, float* __restrict__ out, int64_t n) {
  if (mode == core::kFixed && !clip) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = core::fm_add(x[i], core::fm_mul(scale, z[i]));
    return;
  }
  if (lo_stride == 1 && hi_stride == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = core::perturb_value<float>(mode, clip, scale, x[i], lo[i], hi[i], z[i]);
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    out[i] = core::perturb_value<float>(mode, clip, scale, x[i], lo[i * lo_stride], hi[i * hi_stride], z[i]);
}

// float32 out[i] = clean[i] (1 + sigma z[i]) for i in [0, n).
FM_CLONES void weights_row_f32(float sigma, const float* __restrict__ clean, const float* __restrict__ z,
                               float* __restrict__ out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = core::weight_value<float>(clean[i], sigma, z[i]);
}

template <typename scalar_t, int KERNEL>
void perturb_impl(const at::Tensor& x, const at::Tensor& out, const float* lo, const float* hi,
                  const PerturbParams& p) {
  using acc_t = acc_type_t<scalar_t>;
  const scalar_t* xs = x.data_ptr<scalar_t>();
  scalar_t* os = out.data_ptr<scalar_t>();
  const int64_t S = p.samples, B = p.batch, D = p.numel;
  const int64_t groups = (D + 3) / 4;
  const int64_t blocks = (groups + kBlockGroups - 1) / kBlockGroups;
  const acc_t scale = static_cast<acc_t>(p.scale);
  const float zero = 0.0f;
  const float* lo_p = lo ? lo : &zero;
  const float* hi_p = hi ? hi : &zero;
  const int64_t lo_stride = lo ? p.lo_stride : 0, hi_stride = hi ? p.hi_stride : 0;
  parallel_tasks(S * B * blocks, S * B * D, [&](int64_t t) {
    const int64_t block = t % blocks, row = t / blocks;
    const int64_t b = row % B, s = row / B;
    const int64_t g0 = block * kBlockGroups, g1 = std::min(groups, g0 + kBlockGroups);
    const uint32_t sample = p.sample_start + static_cast<uint32_t>(s);
    const uint32_t example = p.example_offset + static_cast<uint32_t>(b);
    acc_t z[4 * kBlockGroups];
    noise_groups<acc_t>(KERNEL, p.key, g0, g1, sample, example, p.stream, z);
    const int64_t e0 = 4 * g0, e1 = std::min(D, 4 * g1);
    const scalar_t* xr = xs + b * D;
    scalar_t* orow = os + (s * B + b) * D;
    const int mode = p.sigma_mode;
    const bool clip = p.clip;
    if constexpr (std::is_same<scalar_t, float>::value) {
      perturb_row_f32(mode, clip, scale, xr + e0, lo_p + e0 * lo_stride, hi_p + e0 * hi_stride, lo_stride, hi_stride,
                      z, orow + e0, e1 - e0);
      return;
    }
    for (int64_t e = e0; e < e1; ++e) {
      const acc_t value = core::perturb_value<acc_t>(mode, clip, scale, static_cast<acc_t>(xr[e]),
                                                     static_cast<acc_t>(lo_p[e * lo_stride]),
                                                     static_cast<acc_t>(hi_p[e * hi_stride]), z[e - e0]);
      orow[e] = static_cast<scalar_t>(value);
    }
  });
}

void perturb_cpu(const at::Tensor& x, const at::Tensor& out, const std::optional<at::Tensor>& lo,
                 const std::optional<at::Tensor>& hi, int64_t seed_lo, int64_t seed_hi, int64_t stream,
                 int64_t sample_start, int64_t example_offset, int64_t kernel, double scale, int64_t sigma_mode,
                 bool clip) {
  const PerturbParams p = check_perturb(x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset,
                                        kernel, scale, sigma_mode, clip);
  if (out.numel() == 0) return;
  TORCH_CHECK(x.device().is_cpu(), "fastmollify.perturb (cpu): tensors must be on the CPU");
  const bool bounded = clip || p.sigma_mode != core::kFixed;
  const float* lo_p = bounded ? lo->data_ptr<float>() : nullptr;
  const float* hi_p = bounded ? hi->data_ptr<float>() : nullptr;
  FM_DISPATCH_DTYPE(x.scalar_type(), "fastmollify.perturb", [&] {
    dispatch_kernel(p.kernel, [&](auto k) { perturb_impl<scalar_t, decltype(k)::value>(x, out, lo_p, hi_p, p); });
  });
}

template <typename grad_t, typename stat_t>
void accumulate_impl(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads, const float* weights,
                     const AccumulateParams& p) {
  using acc_t = std::conditional_t<std::is_same<grad_t, double>::value || std::is_same<stat_t, double>::value,
                                   double, float>;
  const int64_t S = p.samples, N = p.numel;
  // The running total weight after each sample and the ratio w / n: the same for every element.
  std::vector<acc_t> w(S), ratio(S);
  acc_t n = static_cast<acc_t>(p.count);
  for (int64_t s = 0; s < S; ++s) {
    w[s] = weights ? static_cast<acc_t>(weights[s]) : static_cast<acc_t>(1);
    ratio[s] = core::welford_advance<acc_t>(&n, w[s]);
  }
  stat_t* mp = mean.data_ptr<stat_t>();
  stat_t* qp = m2.data_ptr<stat_t>();
  const grad_t* gp = grads.data_ptr<grad_t>();
  const int64_t blocks = (N + kBlockElements - 1) / kBlockElements;
  parallel_tasks(blocks, S * N, [&](int64_t t) {
    const int64_t e0 = t * kBlockElements, len = std::min(N - e0, kBlockElements);
    acc_t mu[kBlockElements], q[kBlockElements];
    for (int64_t i = 0; i < len; ++i) {
      mu[i] = static_cast<acc_t>(mp[e0 + i]);
      q[i] = static_cast<acc_t>(qp[e0 + i]);
    }
    for (int64_t s = 0; s < S; ++s) {
      if (!(w[s] > static_cast<acc_t>(0))) continue;
      const acc_t ws = w[s], rs = ratio[s];
      const grad_t* row = gp + s * N + e0;
      for (int64_t i = 0; i < len; ++i) core::welford_update<acc_t>(&mu[i], &q[i], static_cast<acc_t>(row[i]), ws, rs);
    }
    for (int64_t i = 0; i < len; ++i) {
      mp[e0 + i] = static_cast<stat_t>(mu[i]);
      qp[e0 + i] = static_cast<stat_t>(q[i]);
    }
  });
}

void accumulate_cpu(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads,
                    const std::optional<at::Tensor>& weights, double count) {
  const AccumulateParams p = check_accumulate(mean, m2, grads, weights, count);
  if (p.samples == 0 || p.numel == 0) return;
  TORCH_CHECK(grads.device().is_cpu(), "fastmollify.accumulate (cpu): tensors must be on the CPU");
  const float* w = (weights.has_value() && weights->defined()) ? weights->data_ptr<float>() : nullptr;
  FM_DISPATCH_DTYPE(grads.scalar_type(), "fastmollify.accumulate", [&] {
    using grad_t = scalar_t;
    if (mean.scalar_type() == c10::kDouble)
      accumulate_impl<grad_t, double>(mean, m2, grads, w, p);
    else
      accumulate_impl<grad_t, float>(mean, m2, grads, w, p);
  });
}

template <typename scalar_t>
void perturb_weights_impl(const at::Tensor& clean, const at::Tensor& out, const WeightParams& p) {
  using acc_t = acc_type_t<scalar_t>;
  const scalar_t* cs = clean.data_ptr<scalar_t>();
  scalar_t* os = out.data_ptr<scalar_t>();
  const int64_t D = p.numel, groups = (D + 3) / 4;
  const int64_t blocks = (groups + kBlockGroups - 1) / kBlockGroups;
  const acc_t sigma = static_cast<acc_t>(p.sigma);
  parallel_tasks(blocks, D, [&](int64_t t) {
    const int64_t g0 = t * kBlockGroups, g1 = std::min(groups, g0 + kBlockGroups);
    acc_t z[4 * kBlockGroups];
    noise_groups<acc_t>(core::kGaussian, p.key, g0, g1, p.draw, p.index, /*stream=*/1u, z);
    const int64_t e0 = 4 * g0, e1 = std::min(D, 4 * g1);
    if constexpr (std::is_same<scalar_t, float>::value) {
      weights_row_f32(sigma, cs + e0, z, os + e0, e1 - e0);
      return;
    }
    for (int64_t e = e0; e < e1; ++e)
      os[e] = static_cast<scalar_t>(core::weight_value<acc_t>(static_cast<acc_t>(cs[e]), sigma, z[e - e0]));
  });
}

void perturb_weights_cpu(const at::Tensor& clean, const at::Tensor& out, int64_t seed_lo, int64_t seed_hi,
                         int64_t draw, int64_t index, double sigma) {
  const WeightParams p = check_perturb_weights(clean, out, seed_lo, seed_hi, draw, index, sigma);
  if (p.numel == 0) return;
  TORCH_CHECK(clean.device().is_cpu(), "fastmollify.perturb_weights (cpu): tensors must be on the CPU");
  FM_DISPATCH_DTYPE(clean.scalar_type(), "fastmollify.perturb_weights",
                    [&] { perturb_weights_impl<scalar_t>(clean, out, p); });
}

void perturb_weights_many_cpu(const at::TensorList cleans, const at::TensorList outs, int64_t seed_lo,
                              int64_t seed_hi, int64_t draw, const at::IntArrayRef indices, double sigma) {
  const std::vector<WeightParams> params =
      check_perturb_weights_many(cleans, outs, seed_lo, seed_hi, draw, indices, sigma);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].numel == 0) continue;
    TORCH_CHECK(cleans[i].device().is_cpu(), "fastmollify.perturb_weights (cpu): tensors must be on the CPU");
    FM_DISPATCH_DTYPE(cleans[i].scalar_type(), "fastmollify.perturb_weights",
                      [&] { perturb_weights_impl<scalar_t>(cleans[i], outs[i], params[i]); });
  }
}

}  // namespace

int cpu_philox_path() {
#if defined(FM_PHILOX_X86)
  static const int path = [] {
    __builtin_cpu_init();
    int widest = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    if (const char* asked = std::getenv("FASTMOLLIFY_PHILOX_PATH")) widest = std::min(widest, std::atoi(asked));
    return std::max(widest, 0);
  }();
  return path;
#else
  return 0;
#endif
}

}  // namespace fastmollify

TORCH_LIBRARY_IMPL(fastmollify, CPU, m) {
  m.impl("perturb", &fastmollify::perturb_cpu);
  m.impl("accumulate", &fastmollify::accumulate_cpu);
  m.impl("perturb_weights", &fastmollify::perturb_weights_cpu);
  m.impl("perturb_weights_many", &fastmollify::perturb_weights_many_cpu);
}
