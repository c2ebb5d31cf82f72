// Host entry points of the CUDA kernels (kernels.cu), called by ops_cuda.cpp after the
// argument checks; the current device and stream are set by the caller.
#pragma once
#include "../ops.h"

namespace fastmollify {
namespace cuda {

void launch_perturb(const at::Tensor& x, const at::Tensor& out, const float* lo, const float* hi,
                    const PerturbParams& p);
// table: 2 S elements of the merge's type (float, double for float64 grads or statistics), filled
// with the per-sample weights and ratios before the merge.
void launch_accumulate(const at::Tensor& mean, const at::Tensor& m2, const at::Tensor& grads, const float* weights,
                       const at::Tensor& table, const AccumulateParams& p);
// One launch for batch.count tensors of `dtype` (fills batch.first_block and the tensors' aligned flags).
void launch_perturb_weights_many(c10::ScalarType dtype, WeightBatch& batch);

}  // namespace cuda
}  // namespace fastmollify
