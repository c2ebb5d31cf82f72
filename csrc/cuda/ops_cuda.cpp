// CUDA backend: argument checks, device guard, and registration for DispatchKey CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.h"

namespace fastmollify {
namespace {

void perturb_cuda(const at::Tensor& x, const at::Tensor& out, const std::optional<at::Tensor>& lo,
                  const std::optional<at::Tensor>& hi, int64_t seed_lo, int64_t seed_hi, int64_t stream,
                  int64_t sample_start, int64_t example_offset, int64_t kernel, double scale, int64_t sigma_mode,
                  bool clip) {
  const PerturbParams p = check_perturb(x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset,
                                        kernel, scale, sigma_mode, clip);
  TORCH_CHECK(x.is_cuda(), "fastmollify.perturb (cuda): tensors must be on a CUDA device");
  if (out.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const bool bounded = clip || p.sigma_mode != core::kFixed;
  cuda::launch_perturb(x, out, bounded ? lo->data_ptr<float>() : nullptr, bounded ? hi->data_ptr<float>() : nullptr,
                       p);
}

void accumulate_cuda(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads,
                     const std::optional<at::Tensor>& weights, double count) {
  const AccumulateParams p = check_accumulate(mean, m2, grads, weights, count);
  TORCH_CHECK(grads.is_cuda(), "fastmollify.accumulate (cuda): tensors must be on a CUDA device");
  if (p.samples == 0 || p.numel == 0) return;
  const c10::cuda::CUDAGuard guard(grads.device());
  const bool weighted = weights.has_value() && weights->defined();
  const bool wide = grads.scalar_type() == c10::kDouble || mean.scalar_type() == c10::kDouble;
  const at::Tensor table = at::empty({2 * p.samples}, grads.options().dtype(wide ? c10::kDouble : c10::kFloat));
  cuda::launch_accumulate(mean, m2, grads, weighted ? weights->data_ptr<float>() : nullptr, table, p);
}

// Launches of up to kMaxWeightTensors tensors each.
void perturb_weights_many_cuda(const at::TensorList cleans, const at::TensorList outs, int64_t seed_lo,
                               int64_t seed_hi, int64_t draw, const at::IntArrayRef indices, double sigma) {
  const std::vector<WeightParams> params =
      check_perturb_weights_many(cleans, outs, seed_lo, seed_hi, draw, indices, sigma);
  if (params.empty()) return;
  TORCH_CHECK(cleans[0].is_cuda(), "fastmollify.perturb_weights (cuda): tensors must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(cleans[0].device());
  WeightBatch batch;
  batch.key = params[0].key;
  batch.draw = params[0].draw;
  batch.sigma = sigma;
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].numel == 0) continue;
    WeightTensor& t = batch.tensors[batch.count++];
    t.clean = cleans[i].data_ptr();
    t.out = outs[i].data_ptr();
    t.numel = params[i].numel;
    t.index = params[i].index;
    if (batch.count == kMaxWeightTensors) {
      cuda::launch_perturb_weights_many(cleans[0].scalar_type(), batch);
      batch.count = 0;
    }
  }
  if (batch.count) cuda::launch_perturb_weights_many(cleans[0].scalar_type(), batch);
}

void perturb_weights_cuda(const at::Tensor& clean, const at::Tensor& out, int64_t seed_lo, int64_t seed_hi,
                          int64_t draw, int64_t index, double sigma) {
  perturb_weights_many_cuda({clean}, {out}, seed_lo, seed_hi, draw, {index}, sigma);
}

}  // namespace
}  // namespace fastmollify

TORCH_LIBRARY_IMPL(fastmollify, CUDA, m) {
  m.impl("perturb", &fastmollify::perturb_cuda);
  m.impl("accumulate", &fastmollify::accumulate_cuda);
  m.impl("perturb_weights", &fastmollify::perturb_weights_cuda);
  m.impl("perturb_weights_many", &fastmollify::perturb_weights_many_cuda);
}
