// Host-side argument checking shared by the CPU and CUDA implementations of the ops
// declared in ops.cpp. Only lean ATen/c10 headers: this file is also seen by nvcc.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/ops.h"

namespace fastmollify {

// Bump with any change to the ops' schemas or semantics; fastmollify/ops/extension.py
// refuses a _C whose version differs (a stale build).
constexpr int kAbiVersion = 3;

// The CPU backend's Philox path: 2 = AVX-512 (16 counters at a time), 1 = AVX2 (8), 0 = scalar
// loop. The widest the CPU has; the environment variable FASTMOLLIFY_PHILOX_PATH can only lower
// it (read once), so the tests can hold every path against the reference.
int cpu_philox_path();

struct PerturbParams {
  int64_t samples = 0, batch = 0, numel = 0;  // S, B, D
  core::PhiloxKey key;  // the round keys of (seed_lo, seed_hi)
  uint32_t stream = 0, sample_start = 0, example_offset = 0;
  int kernel = 0, sigma_mode = 0;
  bool clip = false;
  double scale = 0;
  int64_t lo_stride = 0, hi_stride = 0;  // 0: one bound for all elements, 1: one per element
};

struct AccumulateParams {
  int64_t samples = 0, numel = 0;  // S, B * D
  double count = 0;
};

struct WeightParams {
  int64_t numel = 0;
  core::PhiloxKey key;
  uint32_t draw = 0, index = 0;
  double sigma = 0;
};

// One tensor of a perturb_weights_many launch (CUDA: multi-tensor apply).
struct WeightTensor {
  const void* clean = nullptr;
  void* out = nullptr;
  int64_t numel = 0;
  uint32_t index = 0;
  bool aligned = false;  // numel % 4 == 0 and both pointers 4-element aligned: vector accesses
};

// Up to kMaxWeightTensors tensors of one dtype, passed by value as a kernel parameter (10 KB, within
// the 32 KB CUDA 12.1+ allows on sm_70+); first_block[i] is the first block of tensor i.
constexpr int kMaxWeightTensors = 256;
struct WeightBatch {
  WeightTensor tensors[kMaxWeightTensors];
  int64_t first_block[kMaxWeightTensors];
  int count = 0;
  core::PhiloxKey key;
  uint32_t draw = 0;
  double sigma = 0;
};

// Arithmetic type: float for float32/float16/bfloat16, double for float64.
template <typename T>
using acc_type_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

// Calls f.template operator()<scalar_t>() style lambdas: FM_DISPATCH_DTYPE(dtype, "op", [&] { ... scalar_t ... }).
#define FM_DISPATCH_DTYPE(TYPE, NAME, ...)                   \
  [&] {                                                      \
    switch (TYPE) {                                          \
      case c10::kFloat: {                                    \
        using scalar_t = float;                              \
        return __VA_ARGS__();                                \
      }                                                      \
      case c10::kDouble: {                                   \
        using scalar_t = double;                             \
        return __VA_ARGS__();                                \
      }                                                      \
      case c10::kHalf: {                                     \
        using scalar_t = c10::Half;                          \
        return __VA_ARGS__();                                \
      }                                                      \
      case c10::kBFloat16: {                                 \
        using scalar_t = c10::BFloat16;                      \
        return __VA_ARGS__();                                \
      }                                                      \
      default:                                               \
        TORCH_CHECK(false, NAME, ": unsupported dtype ", TYPE); \
    }                                                        \
  }()

// f(std::integral_constant<int, KERNEL>{}) for a built-in kernel id (checked before).
template <typename F>
inline void dispatch_kernel(int kernel, F&& f) {
  switch (kernel) {
    case core::kGaussian: return f(std::integral_constant<int, core::kGaussian>{});
    case core::kPoisson: return f(std::integral_constant<int, core::kPoisson>{});
    case core::kHyperbolic: return f(std::integral_constant<int, core::kHyperbolic>{});
    case core::kSigmoid: return f(std::integral_constant<int, core::kSigmoid>{});
    default: return f(std::integral_constant<int, core::kRectangular>{});
  }
}

inline bool supported_dtype(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kHalf || t == c10::kBFloat16 || t == c10::kDouble;
}

inline uint32_t word32(int64_t value, const char* what) {
  TORCH_CHECK(value >= 0 && value <= INT64_C(0xFFFFFFFF), "fastmollify: ", what, " must be in [0, 2**32), got ",
              value);
  return static_cast<uint32_t>(value);
}

// The last index of a run of `count` indices from `start` must stay a 32-bit counter word.
inline uint32_t index_range(int64_t start, int64_t count, const char* what) {
  const uint32_t first = word32(start, what);
  TORCH_CHECK(count <= 0 || start + count - 1 <= INT64_C(0xFFFFFFFF), "fastmollify: ", what, " + count - 1 = ",
              start + count - 1, " does not fit the 32-bit Philox counter word");
  return first;
}

inline int64_t bound_stride(const std::optional<at::Tensor>& bound, const at::Tensor& x, int64_t numel,
                            bool needed, const char* what) {
  if (!needed) return 0;
  TORCH_CHECK(bound.has_value() && bound->defined() && bound->numel() > 0, "fastmollify.perturb: ", what,
              " is required by this sigma_mode/clip");
  const at::Tensor& b = *bound;
  TORCH_CHECK(b.scalar_type() == c10::kFloat, "fastmollify.perturb: ", what, " must be float32, got ",
              b.scalar_type());
  TORCH_CHECK(b.device() == x.device(), "fastmollify.perturb: ", what, " must be on ", x.device(), ", got ",
              b.device());
  TORCH_CHECK(b.is_contiguous(), "fastmollify.perturb: ", what, " must be contiguous");
  TORCH_CHECK(b.numel() == 1 || b.numel() == numel, "fastmollify.perturb: ", what, " must have 1 or ", numel,
              " elements, got ", b.numel());
  return b.numel() == 1 ? 0 : 1;
}

inline PerturbParams check_perturb(const at::Tensor& x, const at::Tensor& out, const std::optional<at::Tensor>& lo,
                                   const std::optional<at::Tensor>& hi, int64_t seed_lo, int64_t seed_hi,
                                   int64_t stream, int64_t sample_start, int64_t example_offset, int64_t kernel,
                                   double scale, int64_t sigma_mode, bool clip) {
  TORCH_CHECK(x.dim() == 2, "fastmollify.perturb: x must be [B, D], got ", x.sizes());
  TORCH_CHECK(out.dim() == 3 && out.size(1) == x.size(0) && out.size(2) == x.size(1),
              "fastmollify.perturb: out must be [S, B, D] = [S, ", x.size(0), ", ", x.size(1), "], got ",
              out.sizes());
  TORCH_CHECK(supported_dtype(x.scalar_type()), "fastmollify.perturb: unsupported dtype ", x.scalar_type(),
              " (float32, float16, bfloat16, float64)");
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "fastmollify.perturb: out has dtype ", out.scalar_type(),
              ", x has ", x.scalar_type());
  TORCH_CHECK(out.device() == x.device(), "fastmollify.perturb: out and x must be on the same device");
  TORCH_CHECK(x.is_contiguous() && out.is_contiguous(), "fastmollify.perturb: x and out must be contiguous");
  TORCH_CHECK(kernel >= 0 && kernel < core::kNumBuiltinKernels, "fastmollify.perturb: kernel id ", kernel,
              " is not a built-in kernel (0..4); user kernels are not served by compiled backends");
  TORCH_CHECK(sigma_mode >= core::kFixed && sigma_mode <= core::kAdaptive, "fastmollify.perturb: unknown sigma_mode ",
              sigma_mode);
  PerturbParams p;
  p.samples = out.size(0);
  p.batch = x.size(0);
  p.numel = x.size(1);
  p.key = core::philox_key(word32(seed_lo, "seed_lo"), word32(seed_hi, "seed_hi"));
  p.stream = word32(stream, "stream");
  p.sample_start = index_range(sample_start, p.samples, "sample_start");
  TORCH_CHECK(p.samples < INT64_C(0x100000000), "fastmollify.perturb: at most 2**32 - 1 samples per call");
  p.example_offset = index_range(example_offset, p.batch, "example_offset");
  TORCH_CHECK((p.numel + 3) / 4 <= INT64_C(0xFFFFFFFF), "fastmollify.perturb: too many elements per example");
  p.kernel = static_cast<int>(kernel);
  p.sigma_mode = static_cast<int>(sigma_mode);
  p.clip = clip;
  p.scale = scale;
  const bool need_lo = clip || sigma_mode != core::kFixed;
  p.lo_stride = bound_stride(lo, x, p.numel, need_lo, "lo");
  p.hi_stride = bound_stride(hi, x, p.numel, need_lo, "hi");
  return p;
}

inline AccumulateParams check_accumulate(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads,
                                         const std::optional<at::Tensor>& weights, double count) {
  TORCH_CHECK(grads.dim() >= 1, "fastmollify.accumulate: grads must be [S, ...]");
  TORCH_CHECK(mean.sizes() == m2.sizes(), "fastmollify.accumulate: mean and m2 shapes differ");
  TORCH_CHECK(mean.numel() * grads.size(0) == grads.numel(), "fastmollify.accumulate: grads ", grads.sizes(),
              " is not [S] + mean's shape ", mean.sizes());
  TORCH_CHECK(supported_dtype(grads.scalar_type()), "fastmollify.accumulate: unsupported grads dtype ",
              grads.scalar_type());
  TORCH_CHECK(mean.scalar_type() == m2.scalar_type() &&
                  (mean.scalar_type() == c10::kFloat || mean.scalar_type() == c10::kDouble),
              "fastmollify.accumulate: mean and m2 must both be float32 or both float64");
  TORCH_CHECK(mean.device() == grads.device() && m2.device() == grads.device(),
              "fastmollify.accumulate: mean, m2 and grads must be on the same device");
  TORCH_CHECK(mean.is_contiguous() && m2.is_contiguous() && grads.is_contiguous(),
              "fastmollify.accumulate: mean, m2 and grads must be contiguous");
  if (weights.has_value() && weights->defined()) {
    const at::Tensor& w = *weights;
    TORCH_CHECK(w.scalar_type() == c10::kFloat && w.is_contiguous() && w.numel() == grads.size(0) &&
                    w.device() == grads.device(),
                "fastmollify.accumulate: weights must be a contiguous float32 [S] tensor on the grads' device");
  }
  AccumulateParams p;
  p.samples = grads.size(0);
  p.numel = mean.numel();
  p.count = count;
  return p;
}

inline WeightParams check_perturb_weights(const at::Tensor& clean, const at::Tensor& out, int64_t seed_lo,
                                          int64_t seed_hi, int64_t draw, int64_t index, double sigma) {
  TORCH_CHECK(supported_dtype(clean.scalar_type()), "fastmollify.perturb_weights: unsupported dtype ",
              clean.scalar_type());
  TORCH_CHECK(out.scalar_type() == clean.scalar_type() && out.numel() == clean.numel() &&
                  out.device() == clean.device(),
              "fastmollify.perturb_weights: out must match clean's dtype, size and device");
  TORCH_CHECK(clean.is_contiguous() && out.is_contiguous(), "fastmollify.perturb_weights: tensors must be contiguous");
  WeightParams p;
  p.numel = clean.numel();
  TORCH_CHECK((p.numel + 3) / 4 <= INT64_C(0xFFFFFFFF), "fastmollify.perturb_weights: tensor too large");
  p.key = core::philox_key(word32(seed_lo, "seed_lo"), word32(seed_hi, "seed_hi"));
  p.draw = word32(draw, "draw");
  p.index = word32(index, "index");
  p.sigma = sigma;
  return p;
}

// The per-tensor checks of perturb_weights for every pair, plus one dtype and device for all.
inline std::vector<WeightParams> check_perturb_weights_many(const at::TensorList cleans, const at::TensorList outs,
                                                            int64_t seed_lo, int64_t seed_hi, int64_t draw,
                                                            const at::IntArrayRef indices, double sigma) {
  TORCH_CHECK(cleans.size() == outs.size() && cleans.size() == indices.size(),
              "fastmollify.perturb_weights_many: cleans, outs and indices differ in length (", cleans.size(), ", ",
              outs.size(), ", ", indices.size(), ")");
  std::vector<WeightParams> params;
  params.reserve(cleans.size());
  for (size_t i = 0; i < cleans.size(); ++i) {
    TORCH_CHECK(cleans[i].scalar_type() == cleans[0].scalar_type() && cleans[i].device() == cleans[0].device(),
                "fastmollify.perturb_weights_many: every tensor must have the first one's dtype and device");
    params.push_back(check_perturb_weights(cleans[i], outs[i], seed_lo, seed_hi, draw, indices[i], sigma));
  }
  return params;
}

}  // namespace fastmollify
