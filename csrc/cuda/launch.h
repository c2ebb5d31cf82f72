// Host entry points of the CUDA kernels (kernels.cu), called by ops_cuda.cpp after the
// argument checks; the current device and stream are set by the caller.
#pragma once
#include "../ops.h"

namespace fastmollify {
namespace cuda {

void launch_perturb(const at::Tensor& x, const at::Tensor& out, const float* lo, const float* hi,
                    const PerturbParams& p);
void launch_accumulate(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads, const float* weights,
                       const AccumulateParams& p);
void launch_perturb_weights(const at::Tensor& clean, const at::Tensor& out, const WeightParams& p);

}  // namespace cuda
}  // namespace fastmollify
