"""A user-defined mollifier (Laplace) fused into the Triton backend's perturb kernel.

    python examples/custom_kernel.py           # on a CUDA GPU, or on the CPU through Triton's interpreter

``fastmollify.kernels.register`` takes the kernel's density and inverse CDF as torch functions (the
reference backend and the checks use them) and, optionally, the same inverse CDF as a
``@triton.jit`` function of a float32 block ``u``: the Triton backend then calls it inside its
perturb kernel, so the noise is drawn, transformed and added to the inputs in one pass with
nothing materialised. Without ``triton_inverse_cdf`` the kernel still works everywhere through the
reference backend (``backend="auto"`` falls back to it).
"""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run the Triton kernels in its interpreter (set before importing triton)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import fastmollify as fm  # noqa: E402
from fastmollify.ops import FIXED, dispatch, reference  # noqa: E402


def laplace_density(t):
    return 0.5 * torch.exp(-torch.as_tensor(t).abs())


def laplace_inverse_cdf(u):
    """F^-1(u) = -sign(u - 1/2) log(1 - 2 |u - 1/2|), for tensors u in (0, 1)."""
    d = u - 0.5
    return -torch.sign(d) * torch.log(1 - 2 * d.abs())


@triton.jit
def laplace_inverse_cdf_triton(u):
    """The same inverse CDF on a float32 Triton block (plain tl.* math: it runs in the interpreter too)."""
    d = u - 0.5
    return tl.where(d > 0, -1.0, 1.0) * tl.log(1.0 - 2.0 * tl.abs(d))


def main():
    fm.kernels.register("laplace", density=laplace_density, inverse_cdf=laplace_inverse_cdf,
                        triton_inverse_cdf=laplace_inverse_cdf_triton, replace=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("triton backend:", dispatch.why_not("triton", device, torch.float32, "laplace") or "available")

    # The op level: 8 noisy copies of 2 inputs, fused, against the pure-PyTorch reference.
    triton_ops = dispatch.select("triton", device, torch.float32, kernel="laplace")
    x = torch.rand(2, 1000, device=device)
    fused, expected = torch.empty(8, 2, 1000, device=device), torch.empty(8, 2, 1000, device=device)
    options = dict(seed=2024, stream=0, sample_start=0, example_offset=0, kernel="laplace", scale=0.1,
                   sigma_mode=FIXED, clip=False)
    triton_ops.perturb(x, fused, None, None, **options)
    reference.perturb(x, expected, None, None, **options)
    print(f"fused vs reference: max |difference| = {(fused - expected).abs().max().item():.2e}")
    print(f"noise variance (Laplace(0, 0.1): 0.02): {(fused - x).var().item():.4f}")

    # The API level: any method that takes a kernel name, e.g. Monte Carlo mollification.
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(device)
    inputs = torch.randn(4, 20, device=device)
    fused = fm.mollify(model, inputs, target=0, kernel="laplace", eps=0.05, n=16, seed=7, backend="triton")
    plain = fm.mollify(model, inputs, target=0, kernel="laplace", eps=0.05, n=16, seed=7, backend="reference")
    print(f"mollify with the fused Laplace kernel: {tuple(fused.shape)}, "
          f"max |triton - reference| = {(fused - plain).abs().max().item():.2e}")

if __name__ == "__main__":
    main()
