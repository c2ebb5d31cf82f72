// CUDA kernels of the three ops: grid-stride loops over the shared core (csrc/core).
//
// One thread handles one group of four consecutive elements (one Philox call). When the
// row length is a multiple of 4 and the pointers are aligned, the four elements move as one
// vector (16 bytes for float32, 8 for 16-bit types, 2 x 16 for float64); otherwise element
// by element with bounds checks. Math in float32 (float64 for float64 data); products and
// sums go through __fmul_rn/__fadd_rn (core::fm_mul/fm_add) so they round as PyTorch does.
// Lean headers only (no ATen/cuda/CUDAContext.h, no curand).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "launch.h"

namespace fastmollify {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T>
bool aligned4(const void* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % sizeof(Vec<T, 4>) == 0;
}

// Blocks for `work` threads, capped at 32 blocks per multiprocessor (grid-stride beyond).
int grid_for(int64_t work) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{sms} * 32)));
}

__device__ __forceinline__ int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

template <typename scalar_t, int KERNEL, bool VEC>
__global__ void __launch_bounds__(kThreads)
    perturb_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, const float* __restrict__ lo,
                   const float* __restrict__ hi, const PerturbParams p, const int64_t groups, const int64_t total) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t scale = static_cast<acc_t>(p.scale);
  for (int64_t t = first_index(); t < total; t += grid_stride()) {
    const int64_t row = t / groups, g = t - row * groups;  // row = s * B + b
    const int64_t s = row / p.batch, b = row - s * p.batch;
    acc_t z[4];
    core::noise4<acc_t>(KERNEL, p.key0, p.key1, static_cast<uint32_t>(g), p.sample_start + static_cast<uint32_t>(s),
                        p.example_offset + static_cast<uint32_t>(b), p.stream, z);
    const int64_t e0 = 4 * g;
    const scalar_t* xr = x + b * p.numel;
    scalar_t* orow = out + row * p.numel;
    if (VEC) {
      const Vec<scalar_t, 4> xv = *reinterpret_cast<const Vec<scalar_t, 4>*>(xr + e0);
      Vec<scalar_t, 4> ov;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t e = e0 + k;
        const acc_t lov = lo ? static_cast<acc_t>(lo[e * p.lo_stride]) : acc_t(0);
        const acc_t hiv = hi ? static_cast<acc_t>(hi[e * p.hi_stride]) : acc_t(0);
        ov.v[k] = static_cast<scalar_t>(
            core::perturb_value<acc_t>(p.sigma_mode, p.clip, scale, static_cast<acc_t>(xv.v[k]), lov, hiv, z[k]));
      }
      *reinterpret_cast<Vec<scalar_t, 4>*>(orow + e0) = ov;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t e = e0 + k;
        if (e < p.numel) {
          const acc_t lov = lo ? static_cast<acc_t>(lo[e * p.lo_stride]) : acc_t(0);
          const acc_t hiv = hi ? static_cast<acc_t>(hi[e * p.hi_stride]) : acc_t(0);
          orow[e] = static_cast<scalar_t>(
              core::perturb_value<acc_t>(p.sigma_mode, p.clip, scale, static_cast<acc_t>(xr[e]), lov, hiv, z[k]));
        }
      }
    }
  }
}

template <typename grad_t, typename stat_t, bool VEC>
__global__ void __launch_bounds__(kThreads)
    accumulate_kernel(stat_t* __restrict__ mean, stat_t* __restrict__ m2, const grad_t* __restrict__ grads,
                      const float* __restrict__ weights, const int64_t samples, const int64_t numel,
                      const double count) {
  using acc_t = std::conditional_t<std::is_same<grad_t, double>::value || std::is_same<stat_t, double>::value,
                                   double, float>;
  const int64_t quads = (numel + 3) / 4;
  for (int64_t q = first_index(); q < quads; q += grid_stride()) {
    const int64_t e0 = 4 * q;
    const int count_here = static_cast<int>(VEC ? 4 : std::min<int64_t>(4, numel - e0));
    acc_t mu[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0};
    if (VEC) {
      const Vec<stat_t, 4> a = *reinterpret_cast<const Vec<stat_t, 4>*>(mean + e0);
      const Vec<stat_t, 4> c = *reinterpret_cast<const Vec<stat_t, 4>*>(m2 + e0);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        mu[k] = static_cast<acc_t>(a.v[k]);
        m[k] = static_cast<acc_t>(c.v[k]);
      }
    } else {
      for (int k = 0; k < count_here; ++k) {
        mu[k] = static_cast<acc_t>(mean[e0 + k]);
        m[k] = static_cast<acc_t>(m2[e0 + k]);
      }
    }
    acc_t n = static_cast<acc_t>(count);
    for (int64_t s = 0; s < samples; ++s) {
      const acc_t w = weights ? static_cast<acc_t>(weights[s]) : static_cast<acc_t>(1);
      const acc_t ratio = core::welford_advance<acc_t>(&n, w);
      if (!(w > static_cast<acc_t>(0))) continue;
      const grad_t* row = grads + s * numel + e0;
      if (VEC) {
        const Vec<grad_t, 4> gv = *reinterpret_cast<const Vec<grad_t, 4>*>(row);
#pragma unroll
        for (int k = 0; k < 4; ++k) core::welford_update<acc_t>(&mu[k], &m[k], static_cast<acc_t>(gv.v[k]), w, ratio);
      } else {
        for (int k = 0; k < count_here; ++k)
          core::welford_update<acc_t>(&mu[k], &m[k], static_cast<acc_t>(row[k]), w, ratio);
      }
    }
    if (VEC) {
      Vec<stat_t, 4> a, c;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        a.v[k] = static_cast<stat_t>(mu[k]);
        c.v[k] = static_cast<stat_t>(m[k]);
      }
      *reinterpret_cast<Vec<stat_t, 4>*>(mean + e0) = a;
      *reinterpret_cast<Vec<stat_t, 4>*>(m2 + e0) = c;
    } else {
      for (int k = 0; k < count_here; ++k) {
        mean[e0 + k] = static_cast<stat_t>(mu[k]);
        m2[e0 + k] = static_cast<stat_t>(m[k]);
      }
    }
  }
}

template <typename scalar_t, bool VEC>
__global__ void __launch_bounds__(kThreads)
    perturb_weights_kernel(const scalar_t* __restrict__ clean, scalar_t* __restrict__ out, const WeightParams p) {
  using acc_t = acc_type_t<scalar_t>;
  const acc_t sigma = static_cast<acc_t>(p.sigma);
  const int64_t groups = (p.numel + 3) / 4;
  for (int64_t g = first_index(); g < groups; g += grid_stride()) {
    acc_t z[4];
    core::noise4<acc_t>(core::kGaussian, p.key0, p.key1, static_cast<uint32_t>(g), p.draw, p.index, /*stream=*/1u, z);
    const int64_t e0 = 4 * g;
    if (VEC) {
      const Vec<scalar_t, 4> cv = *reinterpret_cast<const Vec<scalar_t, 4>*>(clean + e0);
      Vec<scalar_t, 4> ov;
#pragma unroll
      for (int k = 0; k < 4; ++k)
        ov.v[k] = static_cast<scalar_t>(core::weight_value<acc_t>(static_cast<acc_t>(cv.v[k]), sigma, z[k]));
      *reinterpret_cast<Vec<scalar_t, 4>*>(out + e0) = ov;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t e = e0 + k;
        if (e < p.numel) out[e] = static_cast<scalar_t>(core::weight_value<acc_t>(static_cast<acc_t>(clean[e]), sigma, z[k]));
      }
    }
  }
}

}  // namespace

void launch_perturb(const at::Tensor& x, const at::Tensor& out, const float* lo, const float* hi,
                    const PerturbParams& p) {
  const int64_t groups = (p.numel + 3) / 4;
  const int64_t total = p.samples * p.batch * groups;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int grid = grid_for(total);
  FM_DISPATCH_DTYPE(x.scalar_type(), "fastmollify.perturb", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const bool vec = p.numel % 4 == 0 && aligned4<scalar_t>(xp) && aligned4<scalar_t>(op);
    dispatch_kernel(p.kernel, [&](auto k) {
      constexpr int KERNEL = decltype(k)::value;
      if (vec)
        perturb_kernel<scalar_t, KERNEL, true><<<grid, kThreads, 0, stream>>>(xp, op, lo, hi, p, groups, total);
      else
        perturb_kernel<scalar_t, KERNEL, false><<<grid, kThreads, 0, stream>>>(xp, op, lo, hi, p, groups, total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void launch_accumulate(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads, const float* weights,
                       const AccumulateParams& p) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int grid = grid_for((p.numel + 3) / 4);
  FM_DISPATCH_DTYPE(grads.scalar_type(), "fastmollify.accumulate", [&] {
    using grad_t = scalar_t;
    const grad_t* gp = grads.data_ptr<grad_t>();
    auto run = [&](auto* mp, auto* qp) {
      using stat_t = std::remove_pointer_t<decltype(mp)>;
      const bool vec = p.numel % 4 == 0 && aligned4<grad_t>(gp) && aligned4<stat_t>(mp) && aligned4<stat_t>(qp);
      if (vec)
        accumulate_kernel<grad_t, stat_t, true><<<grid, kThreads, 0, stream>>>(mp, qp, gp, weights, p.samples,
                                                                              p.numel, p.count);
      else
        accumulate_kernel<grad_t, stat_t, false><<<grid, kThreads, 0, stream>>>(mp, qp, gp, weights, p.samples,
                                                                               p.numel, p.count);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (mean.scalar_type() == c10::kDouble)
      run(mean.data_ptr<double>(), m2.data_ptr<double>());
    else
      run(mean.data_ptr<float>(), m2.data_ptr<float>());
  });
}

void launch_perturb_weights(const at::Tensor& clean, const at::Tensor& out, const WeightParams& p) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int grid = grid_for((p.numel + 3) / 4);
  FM_DISPATCH_DTYPE(clean.scalar_type(), "fastmollify.perturb_weights", [&] {
    const scalar_t* cp = clean.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const bool vec = p.numel % 4 == 0 && aligned4<scalar_t>(cp) && aligned4<scalar_t>(op);
    if (vec)
      perturb_weights_kernel<scalar_t, true><<<grid, kThreads, 0, stream>>>(cp, op, p);
    else
      perturb_weights_kernel<scalar_t, false><<<grid, kThreads, 0, stream>>>(cp, op, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace fastmollify
