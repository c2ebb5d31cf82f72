"""Every op of the cuda and triton backends on awkward shapes, for NVIDIA's compute-sanitizer.

    compute-sanitizer --tool memcheck --error-exitcode 1 python -m benchmarks.sanitize_ops
    python -m benchmarks.sanitize_ops --device cpu      # the same calls on the CPU backends (a dry run)

Shapes: B = 1 and odd B, row lengths that are not multiples of the 4-element group or of the CUDA
chunk (1, 3, 7, 130, 257), every dtype the backend serves, every kernel, the three sigma modes with
clipping, a non-zero sample start and example offset, and perturb_weights_many over tensors of odd
sizes. Each result is compared with the reference backend (tolerances of tests/test_backends.py),
so an out-of-bounds write that lands inside a tensor is caught too. benchmarks/gpu_suite.sh runs
its CUDA backend under memcheck with SANITIZE=1 (compute-sanitizer from $CUDA_HOME/bin or the PATH).
"""
from __future__ import annotations

import argparse
import sys

import torch

from fastmollify import kernels
from fastmollify.ops import ADAPTIVE, FIXED, RANGE, dispatch
from fastmollify.ops import reference as ref

SHAPES = ((1, 1), (3, 3), (1, 7), (2, 130), (5, 257))  # (B, D)
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
RTOL = ATOL = 4e-6  # float32; one ulp of the dtype on top for 16-bit data


def _close(actual, expected, dtype) -> bool:
    a, e = actual.double(), expected.double()
    slack = 0.0 if dtype in (torch.float32, torch.float64) else torch.finfo(dtype).eps
    return bool(((a - e).abs() <= (RTOL + slack) * e.abs() + ATOL + slack).all())


def perturb_cases(backend, name, device):
    for dtype in DTYPES:
        for kernel in kernels.BUILTIN:
            if dispatch.why_not(name, device, dtype, kernel) is not None:
                continue
            for (batch, width), (mode, clip) in zip(SHAPES * 2, [(FIXED, False), (RANGE, True), (ADAPTIVE, True),
                                                                (ADAPTIVE, False), (RANGE, False)] * 2):
                x = torch.rand(batch, width, device=device).to(dtype)
                lo, hi = torch.zeros(width, device=device), torch.ones(width, device=device)
                options = dict(seed=2**40 + width, stream=1, sample_start=7, example_offset=3,
                               kernel=kernels.get(kernel).id, scale=0.3, sigma_mode=mode, clip=clip)
                out = torch.full((3, batch, width), float("nan"), dtype=dtype, device=device)
                backend.perturb(x, out, lo, hi, **options)
                expected = torch.empty_like(out)
                ref.perturb(x, expected, lo, hi, **options)
                yield f"perturb {dtype} {kernel} B={batch} D={width} mode={mode} clip={clip}", out, expected, dtype


def accumulate_cases(backend, name, device):
    for dtype in DTYPES[:3]:
        for batch, width in SHAPES:
            if dispatch.why_not(name, device, dtype) is not None:
                continue
            grads = torch.randn(5, batch * width, device=device).to(dtype)
            weights = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5], device=device)
            states = []
            for ops in (backend, ref):
                mean = torch.zeros(batch * width, device=device)
                m2 = torch.zeros_like(mean)
                ops.accumulate(mean, m2, grads, weights, 0.0)
                states.append(torch.cat([mean, m2]))
            yield f"accumulate {dtype} B={batch} D={width}", states[0], states[1], torch.float32


def weight_cases(backend, name, device):
    for dtype in DTYPES[:3]:
        if dispatch.why_not(name, device, dtype) is not None:
            continue
        cleans = [torch.randn(size, device=device).to(dtype) for size in (1, 3, 7, 130, 257, 4099)]
        outs = [torch.full_like(c, float("nan")) for c in cleans]
        expected = [torch.empty_like(c) for c in cleans]
        options = dict(seed=2**40 + 1, draw=2, sigma=0.2)
        backend.perturb_weights_many(cleans, outs, indices=list(range(5, 11)), **options)
        ref.perturb_weights_many(cleans, expected, indices=list(range(5, 11)), **options)
        yield f"perturb_weights_many {dtype}", torch.cat(outs), torch.cat(expected), dtype


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the calls")
    parser.add_argument("--backends", default=None,
                        help="comma list (default: cuda,triton on a GPU, cpu on the CPU; Triton compiles ~90 variants)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    default = "cuda,triton" if device.type == "cuda" else "cpu"
    names = [name.strip() for name in (args.backends or default).split(",") if name.strip()]
    failures = calls = 0
    for name in names:
        reason = dispatch.why_not(name, device, torch.float32)
        if reason is not None:
            print(f"{name}: not run ({reason})")
            failures += 1
            continue
        backend = dispatch.load(name)
        for cases in (perturb_cases, accumulate_cases, weight_cases):
            for label, actual, expected, dtype in cases(backend, name, device):
                calls += 1
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if not _close(actual, expected, dtype):
                    failures += 1
                    print(f"{name} {label}: differs from the reference")
    print(f"sanitize_ops: {calls} calls on {device}, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
