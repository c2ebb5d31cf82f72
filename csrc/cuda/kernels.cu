// CUDA kernels of the ops: grid-stride loops over the shared core (csrc/core).
//
// perturb: a thread owns a chunk of kGroups<T> groups of four consecutive elements of one example
// (16 bytes of 16-bit data, one group of float32, 32 bytes of float64), reads its x (and sigma,
// lo, hi) once into registers and loops over the S samples, writing one chunk per sample: x comes
// from DRAM once per call, not once per sample. With the row length a multiple of the chunk and
// aligned pointers (VEC) every chunk moves as one vector; otherwise each full chunk still moves as
// a vector wherever its address is aligned, and only the partial chunk at a row's end goes element
// by element. accumulate: a thread owns four elements, the per-sample weight and ratio w / n come
// precomputed (welford_ratios_kernel, core::welford_advance), and kUnroll samples' gradients are
// loaded before they are merged, without a branch (a zero weight has ratio 0 and changes nothing).
// perturb_weights: one launch for a list of tensors (multi-tensor apply): the tensors' pointers and
// sizes travel in the kernel's parameter space, each block finds its tensor by a binary search.
// Math in float32 (float64 for float64 data) with the branch-free formulas of core/fastmath.h;
// products and sums of the final combination go through __fmul_rn/__fadd_rn (core::fm_mul/fm_add)
// so they round as PyTorch does. Indices and offsets are 64-bit. Lean headers only.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "launch.h"

namespace fastmollify {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;              // accumulate: samples loaded before they are merged
constexpr int kWeightGroupsPerThread = 4;  // perturb_weights: groups per thread and block pass
constexpr int64_t kWeightBlockGroups = int64_t{kThreads} * kWeightGroupsPerThread;

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Groups of four elements per perturb chunk: 16-byte accesses for 16-bit types.
template <typename T>
constexpr int kGroups = sizeof(T) == 2 ? 2 : 1;

template <typename T, int N>
__device__ __forceinline__ bool aligned_for(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(Vec<T, N>) == 0;
}

template <typename T, int N>
bool host_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(Vec<T, N>) == 0;
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

// values[0, N) <- p[0, valid): one vector load when `vector`, else element by element.
template <typename T, typename acc_t, int N>
__device__ __forceinline__ void load_chunk(const T* p, int valid, bool vector, acc_t (&values)[N]) {
  if (vector) {
    const Vec<T, N> v = *reinterpret_cast<const Vec<T, N>*>(p);
#pragma unroll
    for (int k = 0; k < N; ++k) values[k] = static_cast<acc_t>(v.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) values[k] = k < valid ? static_cast<acc_t>(p[k]) : acc_t(0);
  }
}

// p[0, valid) <- values: one vector store when `vector`, else element by element.
template <typename T, typename acc_t, int N>
__device__ __forceinline__ void store_chunk(T* p, int valid, bool vector, const acc_t (&values)[N]) {
  if (vector) {
    Vec<T, N> v;
#pragma unroll
    for (int k = 0; k < N; ++k) v.v[k] = static_cast<T>(values[k]);
    *reinterpret_cast<Vec<T, N>*>(p) = v;
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k)
      if (k < valid) p[k] = static_cast<T>(values[k]);
  }
}

template <typename scalar_t, int KERNEL, bool VEC>
__global__ void __launch_bounds__(kThreads)
    perturb_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, const float* __restrict__ lo,
                   const float* __restrict__ hi, const PerturbParams p) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int G = kGroups<scalar_t>, N = 4 * G;
  const acc_t scale = static_cast<acc_t>(p.scale);
  const int64_t chunks = (p.numel + N - 1) / N;  // per row
  const int64_t row_step = p.batch * p.numel;    // one sample's rows
  for (int64_t t = first_index(); t < p.batch * chunks; t += grid_stride()) {
    const int64_t b = t / chunks, c = t - b * chunks;
    const int64_t e0 = c * N;
    const int valid = static_cast<int>(VEC ? N : std::min<int64_t>(N, p.numel - e0));
    const bool full = VEC || valid == N;
    const scalar_t* xr = x + b * p.numel + e0;
    acc_t xv[N], lov[N], hiv[N], sigma[N];
    load_chunk<scalar_t, acc_t, N>(xr, valid, VEC || (full && aligned_for<scalar_t, N>(xr)), xv);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const int64_t e = k < valid ? e0 + k : e0;
      lov[k] = lo ? static_cast<acc_t>(lo[e * p.lo_stride]) : acc_t(0);
      hiv[k] = hi ? static_cast<acc_t>(hi[e * p.hi_stride]) : acc_t(0);
      sigma[k] = core::sigma_of<acc_t>(p.sigma_mode, scale, xv[k], lov[k], hiv[k]);
    }
    const uint32_t example = p.example_offset + static_cast<uint32_t>(b);
    const uint32_t group0 = static_cast<uint32_t>(c * G);
    auto samples = [&](auto clip) {  // the sample loop, compiled once with and once without the clamp
      scalar_t* o = out + b * p.numel + e0;
      const uint32_t sample_end = p.sample_start + static_cast<uint32_t>(p.samples);  // check_perturb: no wrap
      for (uint32_t sample = p.sample_start; sample != sample_end; ++sample, o += row_step) {
        acc_t z[N], y[N];
#pragma unroll
        for (int i = 0; i < G; ++i)
          core::noise4<acc_t>(KERNEL, p.key, group0 + i, sample, example, p.stream, z + 4 * i);
#pragma unroll
        for (int k = 0; k < N; ++k)
          y[k] = core::noisy_value<acc_t>(decltype(clip)::value, sigma[k], xv[k], lov[k], hiv[k], z[k]);
        store_chunk<scalar_t, acc_t, N>(o, valid, VEC || (full && aligned_for<scalar_t, N>(o)), y);
      }
    };
    if (p.clip)
      samples(std::true_type{});
    else
      samples(std::false_type{});
  }
}

// table[s] = w_s, table[samples + s] = w_s / n_s (core::welford_advance), once per call.
template <typename acc_t>
__global__ void welford_ratios_kernel(const float* __restrict__ weights, acc_t* __restrict__ table,
                                      const int64_t samples, const double count) {
  acc_t n = static_cast<acc_t>(count);
  for (int64_t s = 0; s < samples; ++s) {
    const acc_t w = weights ? static_cast<acc_t>(weights[s]) : static_cast<acc_t>(1);
    table[s] = w;
    table[samples + s] = core::welford_advance<acc_t>(&n, w);
  }
}

template <typename grad_t, typename stat_t, typename acc_t, bool VEC>
__global__ void __launch_bounds__(kThreads)
    accumulate_kernel(stat_t* __restrict__ mean, stat_t* __restrict__ m2, const grad_t* __restrict__ grads,
                      const acc_t* __restrict__ table, const int64_t samples, const int64_t numel) {
  const acc_t* __restrict__ ratios = table + samples;
  for (int64_t q = first_index(); q < (numel + 3) / 4; q += grid_stride()) {
    const int64_t e0 = 4 * q;
    const int valid = static_cast<int>(VEC ? 4 : std::min<int64_t>(4, numel - e0));
    acc_t mu[4], m[4];
    load_chunk<stat_t, acc_t, 4>(mean + e0, valid, VEC, mu);
    load_chunk<stat_t, acc_t, 4>(m2 + e0, valid, VEC, m);
    const grad_t* row = grads + e0;
    int64_t s = 0;
    for (; s + kUnroll <= samples; s += kUnroll) {  // kUnroll loads in flight, then the merges
      acc_t g[kUnroll][4];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) load_chunk<grad_t, acc_t, 4>(row + (s + u) * numel, valid, VEC, g[u]);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const acc_t w = table[s + u], ratio = ratios[s + u];
#pragma unroll
        for (int k = 0; k < 4; ++k) core::welford_update<acc_t>(&mu[k], &m[k], g[u][k], w, ratio);
      }
    }
    for (; s < samples; ++s) {
      acc_t g[4];
      load_chunk<grad_t, acc_t, 4>(row + s * numel, valid, VEC, g);
#pragma unroll
      for (int k = 0; k < 4; ++k) core::welford_update<acc_t>(&mu[k], &m[k], g[k], table[s], ratios[s]);
    }
    store_chunk<stat_t, acc_t, 4>(mean + e0, valid, VEC, mu);
    store_chunk<stat_t, acc_t, 4>(m2 + e0, valid, VEC, m);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    perturb_weights_many_kernel(const __grid_constant__ WeightBatch batch) {
  using acc_t = acc_type_t<scalar_t>;
  // The tensor of this block: the last one whose first block is <= blockIdx.x.
  int lo_t = 0, hi_t = batch.count - 1;
  while (lo_t < hi_t) {
    const int mid = (lo_t + hi_t + 1) / 2;
    if (batch.first_block[mid] <= static_cast<int64_t>(blockIdx.x))
      lo_t = mid;
    else
      hi_t = mid - 1;
  }
  const WeightTensor& w = batch.tensors[lo_t];
  const scalar_t* clean = static_cast<const scalar_t*>(w.clean);
  scalar_t* out = static_cast<scalar_t*>(w.out);
  const acc_t sigma = static_cast<acc_t>(batch.sigma);
  const int64_t groups = (w.numel + 3) / 4;
  const int64_t g_begin = (static_cast<int64_t>(blockIdx.x) - batch.first_block[lo_t]) * kWeightBlockGroups;
  // WHOLE: every group of this block is full and the tensor aligned (all but a tensor's last block).
  auto groups_of_block = [&](auto whole) {
    constexpr bool WHOLE = decltype(whole)::value;
#pragma unroll
    for (int i = 0; i < kWeightGroupsPerThread; ++i) {
      const int64_t g = g_begin + i * kThreads + threadIdx.x;
      if (!WHOLE && g >= groups) break;
      const int64_t e0 = 4 * g;
      const int valid = WHOLE ? 4 : static_cast<int>(std::min<int64_t>(4, w.numel - e0));
      const bool vector = WHOLE || (w.aligned && valid == 4);
      acc_t c[4], z[4], y[4];
      load_chunk<scalar_t, acc_t, 4>(clean + e0, valid, vector, c);
      core::noise4<acc_t>(core::kGaussian, batch.key, static_cast<uint32_t>(g), batch.draw, w.index,
                          /*stream=*/1u, z);
#pragma unroll
      for (int k = 0; k < 4; ++k) y[k] = core::weight_value<acc_t>(c[k], sigma, z[k]);
      store_chunk<scalar_t, acc_t, 4>(out + e0, valid, vector, y);
    }
  };
  if (w.aligned && g_begin + kWeightBlockGroups <= groups)
    groups_of_block(std::true_type{});
  else
    groups_of_block(std::false_type{});
}

}  // namespace

void launch_perturb(const at::Tensor& x, const at::Tensor& out, const float* lo, const float* hi,
                    const PerturbParams& p) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  FM_DISPATCH_DTYPE(x.scalar_type(), "fastmollify.perturb", [&] {
    constexpr int N = 4 * kGroups<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int grid = grid_for(p.batch * ((p.numel + N - 1) / N));
    const bool vec = p.numel % N == 0 && host_aligned<scalar_t, N>(xp) && host_aligned<scalar_t, N>(op);
    dispatch_kernel(p.kernel, [&](auto k) {
      constexpr int KERNEL = decltype(k)::value;
      if (vec)
        perturb_kernel<scalar_t, KERNEL, true><<<grid, kThreads, 0, stream>>>(xp, op, lo, hi, p);
      else
        perturb_kernel<scalar_t, KERNEL, false><<<grid, kThreads, 0, stream>>>(xp, op, lo, hi, p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void launch_accumulate(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads, const float* weights,
                       const at::Tensor& table, const AccumulateParams& p) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int grid = grid_for((p.numel + 3) / 4);
  FM_DISPATCH_DTYPE(grads.scalar_type(), "fastmollify.accumulate", [&] {
    using grad_t = scalar_t;
    const grad_t* gp = grads.data_ptr<grad_t>();
    auto run = [&](auto* mp, auto* qp, auto* tp) {
      using stat_t = std::remove_pointer_t<decltype(mp)>;
      using acc_t = std::remove_pointer_t<decltype(tp)>;
      welford_ratios_kernel<acc_t><<<1, 1, 0, stream>>>(weights, tp, p.samples, p.count);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const bool vec = p.numel % 4 == 0 && host_aligned<grad_t, 4>(gp) && host_aligned<stat_t, 4>(mp) &&
                       host_aligned<stat_t, 4>(qp);
      if (vec)
        accumulate_kernel<grad_t, stat_t, acc_t, true><<<grid, kThreads, 0, stream>>>(mp, qp, gp, tp, p.samples,
                                                                                     p.numel);
      else
        accumulate_kernel<grad_t, stat_t, acc_t, false><<<grid, kThreads, 0, stream>>>(mp, qp, gp, tp, p.samples,
                                                                                      p.numel);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (table.scalar_type() == c10::kDouble) {
      if (mean.scalar_type() == c10::kDouble)
        run(mean.data_ptr<double>(), m2.data_ptr<double>(), table.data_ptr<double>());
      else
        run(mean.data_ptr<float>(), m2.data_ptr<float>(), table.data_ptr<double>());
    } else {
      run(mean.data_ptr<float>(), m2.data_ptr<float>(), table.data_ptr<float>());
    }
  });
}

void launch_perturb_weights_many(c10::ScalarType dtype, WeightBatch& batch) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  int64_t blocks = 0;
  for (int i = 0; i < batch.count; ++i) {
    batch.first_block[i] = blocks;
    blocks += ((batch.tensors[i].numel + 3) / 4 + kWeightBlockGroups - 1) / kWeightBlockGroups;
  }
  if (blocks == 0) return;
  TORCH_CHECK(blocks <= INT64_C(0x7FFFFFFF), "fastmollify.perturb_weights: too many elements for one launch");
  FM_DISPATCH_DTYPE(dtype, "fastmollify.perturb_weights", [&] {
    for (int i = 0; i < batch.count; ++i)
      batch.tensors[i].aligned = batch.tensors[i].numel % 4 == 0 &&
                                 host_aligned<scalar_t, 4>(batch.tensors[i].clean) &&
                                 host_aligned<scalar_t, 4>(batch.tensors[i].out);
    perturb_weights_many_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(batch);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace fastmollify
