"""Every non-reference backend (cpu, cuda, triton) against the reference backend, the oracle.

Inputs are fresh random tensors; expected values always come from ``fastmollify.ops.reference``
(or, for Philox, from Random123's published known-answer vector), never from the backend.

A backend this machine cannot run (not built, no GPU) is skipped, unless the comma list in
``FASTMOLLIFY_REQUIRE_BACKENDS`` (e.g. ``cpu,triton``) names it: then its tests fail with the
reason. A dtype or kernel a backend declines by design (e.g. Triton and float64) is skipped.

Tolerances (float32 math, ``EPS32 = 2**-23``):
* uniforms are exact by contract: the rectangular kernel with ``x = 0, scale = 1`` gives
  ``out = 2u - 1 = +-(1 - 2v)``, exact in float32, so they are compared with ``torch.equal``;
* the other transforms go through log/log1p/sin/cos/tan, whose implementations (glibc,
  CUDA libdevice, SLEEF inside PyTorch, Triton) each err by up to ~1-2 ulp, and the formulas
  compound a few of them (Box-Muller: log, sqrt, sin/cos and products): relative error up to
  ~8 ulp, hence ``rtol = 32 * EPS32`` (~4e-6) with headroom. Cauchy tails reach ~1e7, which
  only a relative tolerance can judge. Where a result crosses zero (hyperbolic secant
  ``log(tan(~pi/4))``, logistic ``log1p(-v) - log(v)`` near v = 1/2, cos near pi/2) the
  error is absolute, a few ulp of the O(1) operands: ``atol = 16 * EPS32`` (~2e-6) per unit
  of sigma;
* float16/bfloat16 outputs are float32 values rounded once: the backends' float32 values
  differ by a few float32 ulp, so after rounding to the dtype they agree or sit 1 dtype ulp
  apart (a float32 difference straddling a rounding boundary): ``|a - b| <= ulp_dtype`` plus
  the float32 tolerance (which matters only for results rounding to subnormals);
* float64 math: ``rtol = atol = 1e-12`` (libm ulp errors at 2**-52 compounded);
* accumulate: the reference merges in float64; a backend's float32 Welford/Chan merge over
  S samples errs by O(S) float32 roundings of the O(1) statistics: ``rtol = atol = 2e-5``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fastmollify import kernels
from fastmollify.ops import ADAPTIVE, FIXED, RANGE, dispatch
from fastmollify.ops import reference as ref

BACKENDS = ("cpu", "cuda", "triton")
EPS32 = 2.0**-23
RTOL32, ATOL32 = 32 * EPS32, 16 * EPS32
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
KERNELS = kernels.BUILTIN  # gaussian, poisson, hyperbolic, sigmoid, rectangular
BIG_SEED = 2**63 + 2**40 + 12345  # both Philox key words non-zero, top bit set


def _required() -> set[str]:
    return {name.strip() for name in os.environ.get("FASTMOLLIFY_REQUIRE_BACKENDS", "").split(",") if name.strip()}


def _device_for(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")  # triton: interpreter on the CPU


class Backend:
    def __init__(self, name):
        self.name = name
        self.device = _device_for(name)
        self.ops = dispatch.load(name)

    def need(self, dtype=torch.float32, kernel="gaussian"):
        """Skip what this backend declines by design (a dtype, a kernel)."""
        reason = dispatch.why_not(self.name, self.device, dtype, kernel)
        if reason is not None:
            pytest.skip(f"backend {self.name!r} declines {dtype}/{kernel}: {reason}")


def _skip_or_fail(name: str, reason: str):
    message = f"backend {name!r} is unavailable here: {reason}"
    if name in _required():
        pytest.fail(message + " (FASTMOLLIFY_REQUIRE_BACKENDS names it)")
    pytest.skip(message)


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    name = request.param
    reason = dispatch.why_not(name, _device_for(name), torch.float32)
    if reason is not None:
        _skip_or_fail(name, reason)
    return Backend(name)


def _perturb_both(backend, x, samples, *, lo=None, hi=None, seed=BIG_SEED, stream=0, sample_start=0,
                  example_offset=0, kernel="gaussian", scale=1.0, sigma_mode=FIXED, clip=False):
    """(backend's out, reference's out) for the same call; the reference sees x as [B, D]."""
    kwargs = dict(seed=seed, stream=stream, sample_start=sample_start, example_offset=example_offset,
                  kernel=kernels.get(kernel).id, scale=scale, sigma_mode=sigma_mode, clip=clip)
    out = torch.full((samples, *x.shape), float("nan"), dtype=x.dtype, device=x.device)
    backend.ops.perturb(x, out, lo, hi, **kwargs)
    x2 = x.reshape(x.shape[0], -1)
    expected = torch.empty((samples, *x2.shape), dtype=x.dtype, device=x.device)
    ref.perturb(x2, expected, lo, hi, **kwargs)
    return out.reshape(expected.shape), expected


def _assert_close(actual, expected, dtype, scale=1.0):
    """Equality up to the tolerances of the module docstring."""
    assert actual.dtype == expected.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected, rtol=RTOL32, atol=ATOL32 * scale)
    elif dtype == torch.float64:
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12 * scale)
    else:  # one ulp of the dtype (ulp(v) <= eps |v| for normal v; the subnormal step) on top of
        # the float32 tolerance of the values before their one rounding to the dtype
        a, e = actual.double(), expected.double()
        info = torch.finfo(dtype)
        big = torch.maximum(a.abs(), e.abs())
        bound = info.eps * big + info.smallest_normal * info.eps + RTOL32 * big + ATOL32 * scale
        bad = ~((a - e).abs() <= bound) & ~(torch.isnan(a) & torch.isnan(e))
        assert not bad.any(), (f"{int(bad.sum())} of {bad.numel()} elements differ by more than 1 ulp of {dtype}: "
                               f"{a[bad][:5].tolist()} vs {e[bad][:5].tolist()}")


# ----------------------------------------------------------------------------------------------
# perturb
# ----------------------------------------------------------------------------------------------
SHAPES = [(1, 1, 1), (2, 3, 5), (3, 1, 7), (1, 4, 4), (2, 2, 130), (4, 3, 257), (1, 2, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "SxBxD=%dx%dx%d" % s)
def test_uniforms_bit_identical(backend, shape):
    samples, batch, numel = shape
    x = torch.zeros(batch, numel, device=backend.device)
    for seed, sample_start, example_offset, stream in [(0, 0, 0, 0), (BIG_SEED, 1000, 17, 0),
                                                       (2**32 + 7, 2**31, 2**32 - batch, 3)]:
        out, expected = _perturb_both(backend, x, samples, seed=seed, sample_start=sample_start,
                                      example_offset=example_offset, stream=stream, kernel="rectangular")
        assert torch.equal(out, expected), (seed, sample_start, example_offset)


def test_philox_known_answer(backend):
    # Random123 kat_vectors: philox4x32_10, counter 0, key 0 -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8.
    # Counter (group 0, sample 0, example 0, stream 0), seed 0; rectangular out = 2u - 1 exactly.
    words = [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    expected = torch.tensor([2 * ((w >> 8) + 0.5) / 2**24 - 1 for w in words], dtype=torch.float32)
    x = torch.zeros(1, 4, device=backend.device)
    out = torch.empty(1, 1, 4, device=backend.device)
    backend.ops.perturb(x, out, None, None, seed=0, stream=0, sample_start=0, example_offset=0,
                        kernel=kernels.get("rectangular").id, scale=1.0, sigma_mode=FIXED, clip=False)
    assert torch.equal(out.reshape(4).cpu(), expected)


_PHILOX_PATH_SCRIPT = textwrap.dedent("""
    import torch
    from fastmollify import _C, kernels
    from fastmollify.ops import FIXED, dispatch
    cpu, ref = dispatch.load("cpu"), dispatch.load("reference")
    print(_C.philox_path())
    rect = kernels.get("rectangular").id
    for batch, numel in [(3, 4 * 16 * 3 + 4 * 9 + 3), (1, 4 * 256 + 4 * 21 + 1), (2, 5)]:  # x16 + x8 + scalar tails
        x = torch.zeros(batch, numel)
        out, want = torch.empty(2, batch, numel), torch.empty(2, batch, numel)
        for backend, target in ((cpu, out), (ref, want)):
            backend.perturb(x, target, None, None, seed=2**40 + 3, stream=1, sample_start=5, example_offset=7,
                            kernel=rect, scale=1.0, sigma_mode=FIXED, clip=False)
        assert torch.equal(out, want), (batch, numel)
    print("OK")
""")


@pytest.mark.parametrize("path", [0, 1, 2], ids=["scalar", "avx2", "avx512"])
def test_every_cpu_philox_path_matches_the_reference(path):
    """The hand-vectorised Philox paths (AVX-512, AVX2) and the scalar loop give the reference's words."""
    reason = dispatch.why_not("cpu", torch.device("cpu"), torch.float32)
    if reason is not None:
        _skip_or_fail("cpu", reason)
    result = subprocess.run([sys.executable, "-c", _PHILOX_PATH_SCRIPT], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "FASTMOLLIFY_PHILOX_PATH": str(path)})
    assert result.returncode == 0 and result.stdout.split()[-1] == "OK", result.stdout + result.stderr
    ran = int(result.stdout.split()[0])
    if ran != path:
        pytest.skip(f"this CPU's widest Philox path is {ran}; path {path} needs a CPU that has it")


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_noise(backend, kernel):
    backend.need(torch.float32, kernel)
    x = torch.randn(3, 1001, device=backend.device)
    out, expected = _perturb_both(backend, x, 4, kernel=kernel, scale=0.7, sample_start=5, example_offset=11)
    _assert_close(out, expected, torch.float32, scale=0.7)
    # Noise alone (x = 0, scale = 1): the far tails (Cauchy to ~1e7) are relative-accurate too.
    zero = torch.zeros(2, 2048, device=backend.device)
    out, expected = _perturb_both(backend, zero, 2, kernel=kernel, seed=BIG_SEED + 1)
    _assert_close(out, expected, torch.float32)


TRANSFORM_ULPS = 3.0


@pytest.mark.parametrize("kernel", ("poisson", "hyperbolic", "sigmoid"))
def test_magnitudes_against_float64_closed_forms(backend, kernel):
    """The float32 magnitude formulas (fastmath.h, Triton's twins) against the kernels' closed forms in float64.

    On the same uniforms (the reference backend at float64), the error is at most TRANSFORM_ULPS
    units of 2^-23 |z| where |z| >= 1, and of 2^-23 below. csrc/core/fit_polynomials.py measures the
    formulas over all 2^23 uniforms: at most 2.49 (host rounding) and 2.03 (contracted multiply-adds);
    the GPU's Newton-refined reciprocal is within about half an ulp, like the host's division.
    """
    backend.need(torch.float32, kernel)
    interpreted = backend.name == "triton" and backend.device.type == "cpu"
    x = torch.zeros(16, 2**10 if interpreted else 2**16)
    kwargs = dict(seed=BIG_SEED + 7, stream=3, sample_start=0, example_offset=0, kernel=kernels.get(kernel).id,
                  scale=1.0, sigma_mode=FIXED, clip=False)
    out = torch.empty(4, *x.shape, device=backend.device)
    backend.ops.perturb(x.to(backend.device), out, None, None, **kwargs)  # x = 0, scale 1: out = z
    exact = torch.empty(4, *x.shape, dtype=torch.float64)
    ref.perturb(x.double(), exact, None, None, **kwargs)
    error = (out.cpu().double() - exact).abs() / (EPS32 * exact.abs().clamp(min=1))
    worst = int(error.argmax())
    assert float(error.max()) <= TRANSFORM_ULPS, (
        f"{kernel}: {float(error.max()):.2f} x 2^-23 at z = {exact.flatten()[worst].item()!r} "
        f"(got {out.flatten()[worst].item()!r})")


@pytest.mark.parametrize("per_element", [True, False], ids=["bounds[D]", "bounds[1]"])
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("mode", [FIXED, RANGE, ADAPTIVE], ids=["fixed", "range", "adaptive"])
def test_sigma_modes_and_clip(backend, mode, clip, per_element):
    batch, numel = 3, 301
    x = torch.rand(batch, numel, device=backend.device)
    if per_element:
        lo = -torch.rand(numel, device=backend.device) * 0.1
        hi = 1 + torch.rand(numel, device=backend.device) * 0.1
    else:
        lo, hi = torch.tensor([-0.05], device=backend.device), torch.tensor([1.02], device=backend.device)
    uses_bounds = clip or mode != FIXED
    out, expected = _perturb_both(backend, x, 3, lo=lo if uses_bounds else None, hi=hi if uses_bounds else None,
                                  scale=0.3, sigma_mode=mode, clip=clip, sample_start=2, example_offset=9)
    _assert_close(out, expected, torch.float32, scale=0.3)
    if clip:
        assert (out >= lo).all() and (out <= hi).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("kernel", ["gaussian", "poisson", "sigmoid"])
def test_perturb_dtypes(backend, dtype, kernel):
    backend.need(dtype, kernel)
    x = (torch.randn(2, 515, device=backend.device) * 3).to(dtype)
    lo, hi = torch.tensor([-8.0], device=backend.device), torch.tensor([8.0], device=backend.device)
    out, expected = _perturb_both(backend, x, 3, lo=lo, hi=hi, kernel=kernel, scale=0.25, sigma_mode=RANGE,
                                  seed=2**33 + 1, sample_start=3, example_offset=2**20)
    _assert_close(out, expected, dtype, scale=4.0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "SxBxD=%dx%dx%d" % s)
def test_awkward_shapes(backend, shape):
    samples, batch, numel = shape
    x = torch.randn(batch, numel, device=backend.device)
    out, expected = _perturb_both(backend, x, samples, kernel="gaussian", scale=0.5, sample_start=7,
                                  example_offset=3)
    _assert_close(out, expected, torch.float32, scale=0.5)


def test_non_contiguous_inputs(backend):
    # Transposed and strided [B, D] views: the element order is the logical row-major one, as if
    # x were .contiguous() (the ops' wrappers make it so).
    x = torch.randn(13, 6, device=backend.device).t()
    assert not x.is_contiguous()
    out, expected = _perturb_both(backend, x, 2, scale=0.5)
    _assert_close(out, expected, torch.float32, scale=0.5)
    x = torch.randn(3, 40, device=backend.device)[:, 1::3]
    assert not x.is_contiguous()
    out, expected = _perturb_both(backend, x, 2, scale=0.5, kernel="poisson", example_offset=4)
    _assert_close(out, expected, torch.float32, scale=0.5)
    # a channels_last image batch flattened to [B, D] by the caller
    images = torch.randn(2, 3, 5, 4, device=backend.device).to(memory_format=torch.channels_last)
    out, expected = _perturb_both(backend, images.flatten(1), 3, scale=0.5, kernel="sigmoid")
    _assert_close(out, expected, torch.float32, scale=0.5)

    # a non-contiguous out buffer is filled through a temporary
    x = torch.randn(2, 9, device=backend.device)
    storage = torch.full((9, 2, 3), float("nan"), device=backend.device)
    out = storage.permute(2, 1, 0)  # [3, 2, 9], not contiguous
    kwargs = dict(seed=5, stream=0, sample_start=0, example_offset=0, kernel=0, scale=1.0, sigma_mode=FIXED,
                  clip=False)
    backend.ops.perturb(x, out, None, None, **kwargs)
    expected = torch.empty(3, 2, 9, device=backend.device)
    ref.perturb(x, expected, None, None, **kwargs)
    _assert_close(out, expected, torch.float32)


# ----------------------------------------------------------------------------------------------
# accumulate
# ----------------------------------------------------------------------------------------------
def _merge_in_chunks(ops, grads, weights, chunk):
    """Run accumulate over the samples in chunks, carrying the merged weight as count."""
    mean = torch.zeros(grads.shape[1:], dtype=torch.float32, device=grads.device)
    m2 = torch.zeros_like(mean)
    count = 0.0
    for start in range(0, grads.shape[0], chunk):
        g = grads[start:start + chunk].contiguous()
        w = None if weights is None else weights[start:start + chunk]
        ops.accumulate(mean, m2, g, w, count)
        count += g.shape[0] if w is None else float(w.double().sum())
    return mean, m2


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", [(10, 3, 37), (7, 1, 1), (9, 2, 64)], ids=lambda s: "NxBxD=%dx%dx%d" % s)
def test_accumulate(backend, weighted, shape):
    grads = torch.randn(shape, device=backend.device) * 2 + 1
    weights = None
    if weighted:
        weights = torch.rand(shape[0], device=backend.device) + 0.1
        weights[1] = 0.0  # a sample of zero weight changes nothing
    chunk = 4  # N not a multiple of the chunk: the last chunk is short
    mean, m2 = _merge_in_chunks(backend.ops, grads, weights, chunk)
    mean_ref, m2_ref = _merge_in_chunks(ref, grads, weights, chunk)
    torch.testing.assert_close(mean, mean_ref, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(m2, m2_ref, rtol=2e-5, atol=2e-5)
    # and the oracle's statistics are those of all N samples at once
    w = torch.ones(shape[0], dtype=torch.float64, device=grads.device) if weights is None else weights.double()
    w = w.reshape(-1, 1, 1)
    full_mean = (w * grads.double()).sum(0) / w.sum()
    torch.testing.assert_close(mean.double(), full_mean, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(m2.double(), (w * (grads.double() - full_mean) ** 2).sum(0), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("numel", [1, 6, 64], ids=lambda n: f"D={n}")
def test_accumulate_samples_in_flight(backend, numel):
    # 11 samples: two groups of four loaded before they merge, then a remainder of three; zero weights
    # inside a group and at the end merge without a branch and change nothing.
    grads = torch.randn(11, 3, numel, device=backend.device) * 2 - 1
    weights = torch.rand(11, device=backend.device) + 0.2
    weights[[2, 5, 10]] = 0.0
    for w in (None, weights):
        mean, m2 = _merge_in_chunks(backend.ops, grads, w, 11)
        mean_ref, m2_ref = _merge_in_chunks(ref, grads, w, 11)
        torch.testing.assert_close(mean, mean_ref, rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(m2, m2_ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_accumulate_grad_dtypes(backend, dtype):
    backend.need(dtype)
    grads = (torch.randn(6, 2, 45, device=backend.device) * 3).to(dtype)
    weights = torch.rand(6, device=backend.device) + 0.5
    for w in (None, weights):
        mean, m2 = _merge_in_chunks(backend.ops, grads, w, 4)
        mean_ref, m2_ref = _merge_in_chunks(ref, grads, w, 4)  # the same dtype-rounded gradients
        torch.testing.assert_close(mean, mean_ref, rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(m2, m2_ref, rtol=2e-5, atol=2e-5 * 9)


def test_accumulate_continues_from_count(backend):
    # Statistics already holding 5 samples' worth (count=5) merge with a new chunk exactly like the reference.
    mean = torch.randn(3, 17, device=backend.device)
    m2 = torch.rand(3, 17, device=backend.device) * 4
    mean_ref, m2_ref = mean.clone(), m2.clone()
    grads = torch.randn(3, 3, 17, device=backend.device)
    backend.ops.accumulate(mean, m2, grads, None, 5.0)
    ref.accumulate(mean_ref, m2_ref, grads, None, 5.0)
    torch.testing.assert_close(mean, mean_ref, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(m2, m2_ref, rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------------------------
# perturb_weights
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (4, 3, 3, 3), (1000,)], ids=str)
def test_perturb_weights(backend, dtype, shape):
    backend.need(dtype)
    clean = torch.randn(shape, device=backend.device).to(dtype)
    out = torch.full_like(clean, float("nan"))
    expected = torch.empty_like(clean)
    kwargs = dict(seed=BIG_SEED, draw=3, index=2**31 + 5, sigma=0.2)
    backend.ops.perturb_weights(clean, out, **kwargs)
    ref.perturb_weights(clean, expected, **kwargs)
    _assert_close(out, expected, dtype)


def test_perturb_weights_many(backend):
    # Every tensor as perturb_weights (reference) makes it: sizes with and without a partial group of
    # four, empty and 0-d tensors, two dtypes in one list, a non-contiguous out, indices past 2**31.
    shapes = [(7,), (), (3, 5), (0,), (4, 3, 3, 3), (1000,), (1025,), (1,), (2, 2050)]
    dtypes = [torch.float32] * 6 + [torch.float16, torch.float16, torch.float32]
    for dtype in set(dtypes):
        backend.need(dtype)
    cleans = [torch.randn(shape, device=backend.device).to(dtype) for shape, dtype in zip(shapes, dtypes)]
    outs = [torch.full_like(c, float("nan")) for c in cleans]
    outs[2] = torch.full((5, 3), float("nan"), device=backend.device).t()  # not contiguous
    indices = [0, 1, 2**31 + 5, 3, 4, 17, 2**32 - 1, 9, 10]
    kwargs = dict(seed=BIG_SEED, draw=6, sigma=0.3)
    backend.ops.perturb_weights_many(cleans, outs, indices=indices, **kwargs)
    for clean, out, index in zip(cleans, outs, indices):
        expected = torch.empty_like(clean)
        ref.perturb_weights(clean, expected, index=index, **kwargs)
        _assert_close(out, expected, clean.dtype)
    with pytest.raises((ValueError, RuntimeError)):
        backend.ops.perturb_weights_many(cleans, outs[:-1], indices=indices, **kwargs)


def test_perturb_weights_many_splits_long_lists(backend):
    # More tensors than one CUDA launch takes (kMaxWeightTensors = 256): the same values.
    cleans = [torch.randn(1 + i % 9, device=backend.device) for i in range(300)]
    outs = [torch.empty_like(c) for c in cleans]
    backend.ops.perturb_weights_many(cleans, outs, seed=3, draw=1, indices=range(300), sigma=0.1)
    for i in (0, 255, 256, 299):
        expected = torch.empty_like(cleans[i])
        ref.perturb_weights(cleans[i], expected, seed=3, draw=1, index=i, sigma=0.1)
        _assert_close(outs[i], expected, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("numel", [5, 6, 9, 12, 13, 16, 130], ids=lambda n: f"D={n}")
def test_perturb_row_tails(backend, dtype, numel):
    # Rows whose length is not a multiple of the vector width (4 elements, 8 for 16-bit types on CUDA):
    # aligned and unaligned row starts, the partial chunk at each row's end, several samples; D = 16
    # takes the all-vector path.
    backend.need(dtype)
    x = torch.randn(5, numel, device=backend.device).to(dtype)
    lo, hi = torch.tensor([-2.0], device=backend.device), torch.tensor([2.0], device=backend.device)
    out, expected = _perturb_both(backend, x, 3, lo=lo, hi=hi, scale=0.5, clip=True, sample_start=4,
                                  example_offset=6)
    _assert_close(out, expected, dtype, scale=0.5)
    out, expected = _perturb_both(backend, x, 3, kernel="rectangular", scale=1.0, seed=11)
    _assert_close(out, expected, dtype)


def _available_memory() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def test_cpu_index_math_past_2_31():
    """Output offsets beyond 2**31 elements (S B D = 2**31 + 8192): the last sample's row is where the
    reference puts it. float16 (4 GiB), the rectangular kernel (exact), checked against Philox itself."""
    reason = dispatch.why_not("cpu", torch.device("cpu"), torch.float16)
    if reason is not None:
        _skip_or_fail("cpu", reason)
    if _available_memory() < 10 * 2**30:
        pytest.skip("needs about 10 GiB of free memory (a 4 GiB output)")
    batch, numel = 2, 4096
    samples = 2**31 // (batch * numel) + 1
    x = torch.zeros(batch, numel, dtype=torch.float16)
    out = torch.empty(samples, batch, numel, dtype=torch.float16)
    seed = 2**40 + 77
    dispatch.load("cpu").perturb(x, out, None, None, seed=seed, stream=0, sample_start=0, example_offset=3,
                                 kernel=kernels.get("rectangular").id, scale=1.0, sigma_mode=FIXED, clip=False)
    from fastmollify import noise

    assert ((samples - 1) * batch) * numel >= 2**31  # the last sample's rows lie past 2**31
    for s, b in ((samples - 1, batch - 1), (samples - 1, 0), (samples // 2, 1)):
        bits = noise.random_bits(seed, 0, [s], [3 + b], numel)[0, 0]
        expected = (2.0 * ((bits >> 8).double() + 0.5) / 2**24 - 1.0).to(torch.float16)
        assert torch.equal(out[s, b], expected), (s, b)
    del out


# ----------------------------------------------------------------------------------------------
# the compiled extension: availability, torch.compile, import failure
# ----------------------------------------------------------------------------------------------
def _compiled_cpu():
    from fastmollify.ops import extension

    reason = extension.CPU.unavailable(torch.device("cpu"), torch.float32, kernels.get("gaussian"))
    if reason is not None:
        _skip_or_fail("cpu", reason)
    return extension


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_compiled_backends_decline_clearly(name):
    from fastmollify.ops import extension

    backend = getattr(extension, name.upper())
    device = _device_for(name)
    reason = backend.unavailable(device, torch.float32, kernels.get("gaussian"))
    if reason is not None:
        assert isinstance(reason, str) and reason  # a non-empty reason
        _skip_or_fail(name, reason)
    for dtype in DTYPES:
        for kernel in KERNELS:
            assert backend.unavailable(device, dtype, kernels.get(kernel)) is None
    assert "dtype" in backend.unavailable(device, torch.int32, kernels.get("gaussian"))
    other = torch.device("cuda" if name == "cpu" else "cpu")
    assert backend.unavailable(other, torch.float32, kernels.get("gaussian")) is not None
    user = kernels.register("test_backends_laplace",
                            density=lambda t: 0.5 * torch.exp(-t.abs()),
                            inverse_cdf=lambda u: -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs()))
    try:
        assert user.id >= 100
        assert "user kernel" in backend.unavailable(device, torch.float32, user)
        assert dispatch.why_not(name, device, torch.float32, user.name) is not None
    finally:
        kernels.unregister(user.name)


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_compiled_wrapper_takes_image_batches(name):
    # The compiled backends' wrappers also take x [B, ...] with out [S, B, ...], of any memory
    # format (here channels_last): elements in logical row-major order, as the reference's [B, D].
    from fastmollify.ops import extension

    device = _device_for(name)
    backend = getattr(extension, name.upper())
    reason = backend.unavailable(device, torch.float32, kernels.get("gaussian"))
    if reason is not None:
        _skip_or_fail(name, reason)
    images = torch.randn(2, 3, 5, 4, device=device).to(memory_format=torch.channels_last)
    assert not images.is_contiguous()
    kwargs = dict(seed=BIG_SEED, stream=0, sample_start=1, example_offset=4, kernel=3, scale=0.5, sigma_mode=FIXED,
                  clip=False)
    out = torch.empty(2, 3, 3, 4, 5, device=device).permute(1, 0, 2, 4, 3)  # [3, 2, 3, 5, 4], not contiguous
    assert not out.is_contiguous()
    backend.perturb(images, out, None, None, **kwargs)
    expected = torch.empty(3, 2, 60, device=device)
    ref.perturb(images.reshape(2, 60), expected, None, None, **kwargs)
    _assert_close(out.reshape(3, 2, 60), expected, torch.float32, scale=0.5)


def test_torch_compile_traces_cpu_op():
    extension = _compiled_cpu()

    def smooth(x):
        out = torch.empty((3, *x.shape), dtype=x.dtype)
        torch.ops.fastmollify.perturb(x, out, None, None, 7, 1, 0, 0, 0, 0, 0.5, FIXED, False)
        return out.mean(0)

    def wrapped(x):  # the backend object's wrapper, with its argument handling
        out = torch.empty((2, *x.shape), dtype=x.dtype)
        extension.CPU.perturb(x, out, None, None, seed=2**32 + 7, stream=0, sample_start=0, example_offset=0,
                              kernel=0, scale=0.5, sigma_mode=FIXED, clip=False)
        return out * 2

    x = torch.randn(4, 10)
    torch._dynamo.reset()
    compiled = torch.compile(smooth, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), smooth(x), rtol=0, atol=0)
    compiled = torch.compile(wrapped, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), wrapped(x), rtol=0, atol=0)
    # the fake implementation: shapes propagate without running the kernel
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fx = mode.from_tensor(x)
        fout = torch.empty(3, 4, 10)
        torch.ops.fastmollify.perturb(fx, fout, None, None, 1, 0, 0, 0, 0, 0, 1.0, FIXED, False)
        assert fout.shape == (3, 4, 10)


def test_opcheck_schemas():
    _compiled_cpu()
    x = torch.randn(2, 6)
    lo, hi = torch.zeros(6), torch.ones(6)
    torch.library.opcheck(torch.ops.fastmollify.perturb.default,
                          (x, torch.empty(3, 2, 6), lo, hi, 1, 2, 0, 4, 5, 0, 0.2, ADAPTIVE, True))
    torch.library.opcheck(torch.ops.fastmollify.accumulate.default,
                          (torch.zeros(2, 6), torch.zeros(2, 6), torch.randn(3, 2, 6), torch.rand(3), 2.0))
    torch.library.opcheck(torch.ops.fastmollify.perturb_weights.default,
                          (torch.randn(5, 3), torch.empty(5, 3), 1, 2, 3, 4, 0.1))
    torch.library.opcheck(torch.ops.fastmollify.perturb_weights_many.default,
                          ([torch.randn(5, 3), torch.randn(7)], [torch.empty(5, 3), torch.empty(7)], 1, 2, 3, [4, 9],
                           0.1))


def test_op_argument_errors():
    _compiled_cpu()
    x = torch.randn(2, 6)
    with pytest.raises(RuntimeError, match="must be \\[S, B, D\\]"):
        torch.ops.fastmollify.perturb(x, torch.empty(3, 2, 5), None, None, 0, 0, 0, 0, 0, 0, 1.0, FIXED, False)
    with pytest.raises(RuntimeError, match="lo is required"):
        torch.ops.fastmollify.perturb(x, torch.empty(3, 2, 6), None, None, 0, 0, 0, 0, 0, 0, 1.0, RANGE, False)
    with pytest.raises(RuntimeError, match="not a built-in kernel"):
        torch.ops.fastmollify.perturb(x, torch.empty(3, 2, 6), None, None, 0, 0, 0, 0, 0, 100, 1.0, FIXED, False)
    with pytest.raises(RuntimeError, match="32-bit"):
        torch.ops.fastmollify.perturb(x, torch.empty(3, 2, 6), None, None, 0, 0, 0, 2**32 - 2, 0, 0, 1.0, FIXED,
                                      False)
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.fastmollify.perturb(x.t().contiguous().t(), torch.empty(3, 2, 6), None, None, 0, 0, 0, 0, 0, 0,
                                      1.0, FIXED, False)


_IMPORT_FAILURE_SCRIPT = textwrap.dedent(r"""
    import importlib, os, sys, warnings
    import importlib.abc, types

    def load_extension():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if "fastmollify.ops.extension" in sys.modules:
                module = importlib.reload(sys.modules["fastmollify.ops.extension"])
            else:
                import fastmollify.ops.extension as module
            import fastmollify.ops.extension  # a second import: no second warning
        mine = [w for w in caught if "fastmollify" in str(w.message)]
        assert len(mine) == 1, [str(w.message) for w in caught]
        assert issubclass(mine[0].category, RuntimeWarning)
        return module, str(mine[0].message)

    import torch
    from fastmollify import kernels

    # 1. a missing extension
    sys.modules["fastmollify._C"] = None
    ext, message = load_extension()
    assert "FASTMOLLIFY_DEBUG_EXTENSION" in message, message
    assert not ext.available() and ext.LOAD_ERROR
    gauss = kernels.get("gaussian")
    for backend in (ext.CPU, ext.CUDA):
        assert backend.unavailable(torch.device("cpu"), torch.float32, gauss) == ext.LOAD_ERROR
        assert backend.unavailable(torch.device("cpu"), torch.float32, gauss) == ext.LOAD_ERROR  # no new warning
    from fastmollify.ops import dispatch
    assert dispatch.select("auto", "cpu", torch.float32).name == "reference"
    try:
        dispatch.select("cpu", "cpu", torch.float32)
    except RuntimeError as error:
        assert "not built" in str(error), error
    else:
        raise AssertionError("an explicitly requested cpu backend must raise its reason")

    # 2. a stale extension (another ABI version)
    sys.modules["fastmollify._C"] = types.ModuleType("fastmollify._C")
    sys.modules["fastmollify._C"].ABI_VERSION = -1
    ext, message = load_extension()
    assert "stale" in message and "stale" in ext.CPU.unavailable(torch.device("cpu"), torch.float32, gauss)

    # 3. a broken build (the loader raises something other than ImportError), with the debug variable
    del sys.modules["fastmollify._C"]
    import fastmollify
    if hasattr(fastmollify, "_C"):
        delattr(fastmollify, "_C")

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fastmollify._C":
                raise OSError("undefined symbol: _ZN3c105ErrorC2E")
            return None

    sys.meta_path.insert(0, Broken())
    os.environ["FASTMOLLIFY_DEBUG_EXTENSION"] = "1"
    ext, message = load_extension()
    assert "OSError" in ext.LOAD_ERROR and "undefined symbol" in ext.LOAD_ERROR
    assert "Traceback" in message, message
    assert dispatch.select("auto", "cpu", torch.float32).name == "reference"
    print("OK")
""")


def test_extension_import_failure_degrades_gracefully():
    result = subprocess.run([sys.executable, "-c", _IMPORT_FAILURE_SCRIPT], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "FASTMOLLIFY_DEBUG_EXTENSION": "0"})
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_cuda_part_was_compiled_where_a_toolkit_exists():
    """CI sets FASTMOLLIFY_EXPECT_CUDA_BUILD=1 where nvcc exists, so a CUDA source that stops
    compiling (setup.py then quietly falls back to a CPU-only build) fails the suite."""
    if os.environ.get("FASTMOLLIFY_EXPECT_CUDA_BUILD") != "1":
        pytest.skip("FASTMOLLIFY_EXPECT_CUDA_BUILD is not set (no CUDA toolkit expected here)")
    from fastmollify import _C

    assert _C.WITH_CUDA == 1, "fastmollify._C was built without its CUDA part: see the pip install log"
