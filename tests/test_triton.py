"""The Triton backend: its Philox, fused user kernels, torch.compile tracing and fallback reasons.

The generic comparison of every backend with the reference lives in test_backends.py. On a
machine without an NVIDIA GPU these tests run the kernels in Triton's interpreter
(TRITON_INTERPRET=1, set by conftest.py before triton is imported), so they stay small.
"""
import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():  # conftest.py normally did this already, before torch
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from fastmollify import kernels, noise  # noqa: E402
from fastmollify.ops import ADAPTIVE, FIXED, RANGE, dispatch, reference  # noqa: E402
from fastmollify.ops import triton as backend  # noqa: E402

if backend._interpreting():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    pytest.skip("triton was imported without TRITON_INTERPRET=1 and there is no CUDA GPU: the Triton kernels "
                "cannot run in this process", allow_module_level=True)

SEED = 0xDEADBEEF_12345678  # both key words non-zero, the high one >= 2**31


# ----------------------------------------------------------------------------------------------
# Philox: tl.philox (as the kernels call it) against Random123 and fastmollify.noise
# ----------------------------------------------------------------------------------------------
@triton.jit
def _philox_probe(counter_ptr, out_ptr, key_lo, key_hi, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    mask = i < n
    c0 = tl.load(counter_ptr + 4 * i, mask=mask, other=0)
    c1 = tl.load(counter_ptr + 4 * i + 1, mask=mask, other=0)
    c2 = tl.load(counter_ptr + 4 * i + 2, mask=mask, other=0)
    c3 = tl.load(counter_ptr + 4 * i + 3, mask=mask, other=0)
    o0, o1, o2, o3 = backend._philox_words(key_lo, key_hi, c0, c1, c2, c3, BLOCK)
    tl.store(out_ptr + 4 * i, o0.to(tl.int64), mask=mask)
    tl.store(out_ptr + 4 * i + 1, o1.to(tl.int64), mask=mask)
    tl.store(out_ptr + 4 * i + 2, o2.to(tl.int64), mask=mask)
    tl.store(out_ptr + 4 * i + 3, o3.to(tl.int64), mask=mask)


def _triton_philox(counters, key):
    counters = torch.as_tensor(counters, dtype=torch.int64, device=DEVICE).reshape(-1, 4)
    out = torch.empty_like(counters)
    n = counters.shape[0]
    _philox_probe[(1,)](counters, out, key[0], key[1], n, BLOCK=max(16, triton.next_power_of_2(n)))
    return out


# Random123's published known-answer vectors for Philox4x32-10 (kat_vectors): counter, key, output
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert _triton_philox([counter], key).cpu().tolist() == [list(expected)]


def test_philox_matches_noise_module():
    gen = torch.Generator().manual_seed(7)
    counters = torch.randint(0, 2**32, (200, 4), generator=gen, dtype=torch.int64)
    for key in [(0, 0), (12345, 0), (0xFFFFFFFF, 0x80000001), noise.split_seed(SEED)]:
        expected = noise.philox4x32_10(counters, key)
        assert torch.equal(_triton_philox(counters, key).cpu(), expected)


# ----------------------------------------------------------------------------------------------
# The transforms, over many words (uniform -> kernel sample) against the reference's formulas
# ----------------------------------------------------------------------------------------------
@triton.jit
def _transform_probe(words_ptr, out_ptr, n, KERNEL: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    a = tl.load(words_ptr + 2 * i, mask=mask, other=0).to(tl.uint32)
    b = tl.load(words_ptr + 2 * i + 1, mask=mask, other=0).to(tl.uint32)
    if KERNEL == 0:
        z0, z1 = backend._box_muller(a, b)
    else:
        z0 = backend._symmetric(a, KERNEL)
        z1 = backend._symmetric(b, KERNEL)
    tl.store(out_ptr + 2 * i, z0, mask=mask)
    tl.store(out_ptr + 2 * i + 1, z1, mask=mask)


def _words():
    """Random 32-bit words plus the extremes of the uniform (k = 0, 2**23 - 1, 2**23, 2**24 - 1)."""
    gen = torch.Generator().manual_seed(3)
    k = torch.cat([torch.tensor([0, 1, 2**23 - 1, 2**23, 2**24 - 2, 2**24 - 1, 5, 2**24 - 6]),
                   torch.randint(0, 2**24, (8192,), generator=gen)])
    return (k << 8) | torch.randint(0, 256, k.shape, generator=gen)


@pytest.mark.parametrize("name", kernels.BUILTIN)
def test_transforms_match_reference(name):
    words = _words()
    out = torch.empty(words.shape, dtype=torch.float32, device=DEVICE)
    word_args = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).to(DEVICE)
    n = words.numel() // 2
    _transform_probe[(triton.cdiv(n, 4096),)](word_args, out, n, KERNEL=kernels.get(name).id, BLOCK=4096)
    v, upper = noise.symmetric_uniform(words)
    if name == "gaussian":
        v4, u4 = v.reshape(-1, 4), upper.reshape(-1, 4)
        expected = noise.box_muller(v4, u4).reshape(-1)
    else:
        magnitude = kernels.get(name).magnitude(v)
        expected = torch.where(upper, magnitude, -magnitude)
    # float32 evaluation of the same formula: a few ulps, or a tiny absolute error where it cancels
    torch.testing.assert_close(out.cpu(), expected, rtol=4 * 2**-23, atol=2e-6)
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# The ops against the reference
# ----------------------------------------------------------------------------------------------
def _perturb_both(x, samples, lo=None, hi=None, **options):
    out = torch.empty(samples, *x.shape, dtype=x.dtype, device=x.device)
    expected = torch.empty_like(out)
    backend.perturb(x, out, lo, hi, **options)
    reference.perturb(x, expected, lo, hi, **options)
    return out, expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode,clip,per_element", [(FIXED, False, False), (RANGE, False, True),
                                                   (ADAPTIVE, True, True), (ADAPTIVE, False, False)])
def test_perturb_sigma_modes(dtype, mode, clip, per_element):
    x = torch.rand(3, 45, device=DEVICE).to(dtype)
    lo = (torch.linspace(-0.2, 0.0, 45) if per_element else torch.tensor([0.0])).to(DEVICE)
    hi = (torch.linspace(1.0, 1.3, 45) if per_element else torch.tensor([1.0])).to(DEVICE)
    out, expected = _perturb_both(x, 3, lo, hi, seed=SEED, stream=0, sample_start=11, example_offset=5,
                                  kernel="gaussian", scale=0.25, sigma_mode=mode, clip=clip)
    tol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(out.float(), expected.float(), rtol=tol, atol=tol)
    if clip:
        assert (out.float() >= lo.float() - 1e-6).all() and (out.float() <= hi + 1e-6).all()


def test_perturb_is_chunk_and_batch_invariant():
    x = torch.randn(4, 30, device=DEVICE)
    options = dict(seed=SEED, stream=2, kernel="poisson", scale=0.1, sigma_mode=FIXED, clip=False)
    whole = torch.empty(5, 4, 30, device=DEVICE)
    backend.perturb(x, whole, None, None, sample_start=3, example_offset=7, **options)
    part = torch.empty(2, 2, 30, device=DEVICE)
    backend.perturb(x[2:], part, None, None, sample_start=6, example_offset=9, **options)
    assert torch.equal(part, whole[3:5, 2:])


@pytest.mark.parametrize("samples,sample_start,example_offset", [(1, 2**32 - 1, 2**31 + 5), (4, 2**31 - 2, 2**31 - 1)])
def test_perturb_large_indices(samples, sample_start, example_offset):
    """Counter words at their limits and across 2**31, and a seed >= 2**63."""
    x = torch.randn(2, 9, device=DEVICE)
    out, expected = _perturb_both(x, samples, seed=2**64 - 3, stream=1, sample_start=sample_start,
                                  example_offset=example_offset, kernel="rectangular", scale=1.0,
                                  sigma_mode=FIXED, clip=False)
    assert torch.equal(out, expected)  # 1 - 2v and one multiply-add: exact


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accumulate(weighted, dtype):
    grads = [torch.randn(s, 3, 50, device=DEVICE).to(dtype) for s in (4, 3)]
    weights = [torch.tensor([1.0, 0.0, 2.5, 0.5], device=DEVICE), torch.tensor([0.0, 3.0, 1.0], device=DEVICE)]
    mean, m2 = torch.zeros(3, 50, device=DEVICE), torch.zeros(3, 50, device=DEVICE)
    mean_ref, m2_ref = mean.clone(), m2.clone()
    count = 0.0
    for g, w in zip(grads, weights):
        w = w if weighted else None
        backend.accumulate(mean, m2, g, w, count)
        reference.accumulate(mean_ref, m2_ref, g, w, count)
        count += float(w.sum()) if weighted else g.shape[0]
    torch.testing.assert_close(mean, mean_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m2, m2_ref, rtol=1e-5, atol=1e-5)


def test_perturb_weights():
    clean = torch.randn(5, 7, 3, device=DEVICE)
    out, expected = torch.empty_like(clean), torch.empty_like(clean)
    backend.perturb_weights(clean, out, seed=SEED, draw=4, index=2, sigma=0.2)
    reference.perturb_weights(clean, expected, seed=SEED, draw=4, index=2, sigma=0.2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    strided = torch.empty(3, 7, 5, device=DEVICE).permute(2, 1, 0)  # a non-contiguous target
    backend.perturb_weights(clean, strided, seed=SEED, draw=4, index=2, sigma=0.2)
    assert torch.equal(strided, out)


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
def test_perturb_weights_many_one_launch(monkeypatch, aligned):
    """The multi-tensor kernel as the GPU runs it (4 tiles a program), on tensors that span programs and tiles,
    with vector access (16-byte aligned addresses, numel a multiple of 4: torch's allocations) and without."""
    monkeypatch.setattr(backend, "INTERPRETER_WEIGHT_TILES", backend.WEIGHT_TILES)
    launch, launches = backend._launch_perturb_weights_many, []
    monkeypatch.setattr(backend, "_launch_perturb_weights_many", lambda *args: launches.append(args) or launch(*args))
    sizes = (4, 4096, 4 * 1024 * 4 + 8, 12) if aligned else (5, 4097, 3, 1024 * 4 * 4 + 1)
    cleans = [torch.randn(size, device=DEVICE) for size in sizes]
    outs = [torch.full_like(c, float("nan")) for c in cleans]
    assert all(t.data_ptr() % 16 == 0 for t in cleans + outs)  # torch's allocations: only numel decides
    backend.perturb_weights_many(cleans, outs, seed=SEED, draw=3, indices=[7, 2**32 - 1, 0, 11], sigma=0.2)
    assert len(launches) == 1
    for clean, out, index in zip(cleans, outs, [7, 2**32 - 1, 0, 11]):
        expected = torch.empty_like(clean)
        reference.perturb_weights(clean, expected, seed=SEED, draw=3, index=index, sigma=0.2)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_perturb_int64_pair_index(monkeypatch):
    """The INDEX64 variant (B ceil(D / 4) >= 2**31 on the GPU) computes the same (example, group) pairs."""
    monkeypatch.setattr(backend, "_INDEX32", 0)
    x = torch.randn(3, 37, device=DEVICE)
    out, expected = _perturb_both(x, 2, seed=SEED, stream=0, sample_start=9, example_offset=2**32 - 3,
                                  kernel="rectangular", scale=1.0, sigma_mode=FIXED, clip=False)
    assert torch.equal(out, expected)


def test_perturb_small_rows_share_programs():
    """Rows shorter than a program's tile: one program covers several examples (flattened pairs)."""
    x = torch.randn(37, 3, device=DEVICE)
    out, expected = _perturb_both(x, 3, seed=SEED, stream=0, sample_start=1, example_offset=5, kernel="gaussian",
                                  scale=0.5, sigma_mode=FIXED, clip=False)
    torch.testing.assert_close(out, expected, rtol=32 * 2**-23, atol=8 * 2**-23)


def test_pinned_configs(monkeypatch):
    """FASTMOLLIFY_TRITON_CONFIGS=pinned leaves the first configuration only (what isa_report compiles)."""
    monkeypatch.setenv("FASTMOLLIFY_TRITON_CONFIGS", "pinned")
    assert [c.kwargs for c in backend._configs(backend.PERTURB_CONFIGS)] == [backend.PERTURB_CONFIGS[0]["kwargs"]]
    monkeypatch.delenv("FASTMOLLIFY_TRITON_CONFIGS")
    assert len(backend._configs(backend.ACCUMULATE_CONFIGS)) == len(backend.ACCUMULATE_CONFIGS)


_SASS = """
\t\tFunction : kernel
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   ISETP.GE.AND P0, PT, R0, 0x4, PT ;
        /*0020*/                   FADD R2, R2, 1 ;
        /*0030*/              @!P1 STG.E.128 desc[UR4][R4.64], R8 ;
        /*0040*/              @!P1 BRA 0x80 ;
        /*0050*/               @P2 STG.E desc[UR4][R4.64], R8 ;
        /*0060*/               @P2 STG.E desc[UR4][R4.64+0x4], R9 ;
        /*0070*/                   CALL.REL.NOINC 0xb0 ;
        /*0080*/               @P0 BRA 0x20 ;
        /*0090*/                   EXIT ;
        /*00a0*/                   BRA 0xa0;
        /*00b0*/                   FADD R1, R1, R1 ;
        /*00c0*/                   RET.REL.NODEC R2 0x0 ;
"""


def test_isa_report_counts_the_steady_state_path():
    """benchmarks/isa_report.py on a hand-written loop: the vector-store path (4 instructions, 16 bytes) is
    the steady state; the element-wise path (a ruled-out vector store, two stores, a call of 2) is not."""
    sys.path.insert(0, ROOT)
    from benchmarks import isa_report

    (code,) = isa_report.parse_sass(_SASS).values()
    assert isa_report.steady_state(code, isa_report.store_bytes) == (4, 16)
    index = {address: i for i, (address, *_rest) in enumerate(code)}
    fall_through = isa_report._cheapest(code, index[0x20], lambda i: i == index[0x80], isa_report.store_bytes,
                                        lambda target: 2)
    assert fall_through[8] == 9  # FADD, ruled-out STG.128, BRA, STG, STG, CALL (1 + 2), BRA
    assert isa_report.measure(code, 32, "perturb", "float32")["per_element"] == 1.0


def test_isa_specs_cover_every_op_kernel_and_dtype():
    keys = {spec["key"] for spec in backend.isa_specs()}
    for dtype in ("float32", "float16", "bfloat16"):
        assert {f"perturb/{k}/{dtype}" for k in kernels.BUILTIN} | {f"accumulate/{dtype}",
                                                                   f"perturb_weights/gaussian/{dtype}"} <= keys


# ----------------------------------------------------------------------------------------------
# A user kernel (Laplace) fused into the perturb kernel
# ----------------------------------------------------------------------------------------------
def _laplace_density(t):
    return 0.5 * torch.exp(-torch.as_tensor(t).abs())


def _laplace_inverse_cdf(u):
    d = u - 0.5
    return -torch.sign(d) * torch.log(1 - 2 * d.abs())


@triton.jit
def _laplace_triton(u):
    d = u - 0.5
    return tl.where(d > 0, -1.0, 1.0) * tl.log(1.0 - 2.0 * tl.abs(d))


@pytest.fixture
def laplace():
    kernel = kernels.register("laplace_test", density=_laplace_density, inverse_cdf=_laplace_inverse_cdf,
                              triton_inverse_cdf=_laplace_triton, replace=True)
    yield kernel
    kernels.unregister("laplace_test")


def test_user_kernel_fused(laplace):
    assert backend.unavailable(torch.device(DEVICE), torch.float32, laplace) is None
    x = torch.randn(3, 33, device=DEVICE)
    for kernel in ("laplace_test", laplace.id):
        out, expected = _perturb_both(x, 4, seed=SEED, stream=0, sample_start=2, example_offset=1, kernel=kernel,
                                      scale=0.5, sigma_mode=FIXED, clip=False)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # the noise really follows the user kernel: Laplace has variance 2
    noise_only = torch.empty(64, 1, 256, device=DEVICE)
    backend.perturb(torch.zeros(1, 256, device=DEVICE), noise_only, None, None, seed=1, stream=0, sample_start=0,
                    example_offset=0, kernel="laplace_test", scale=1.0, sigma_mode=FIXED, clip=False)
    assert abs(noise_only.var().item() - 2.0) < 0.15


def test_user_kernel_of_the_other_jit_kind():
    """A triton_inverse_cdf decorated under the other TRITON_INTERPRET setting is re-wrapped."""
    from triton.runtime.interpreter import InterpretedFunction

    other = triton.runtime.JITFunction if backend._interpreting() else InterpretedFunction
    kernels.register("laplace_other_kind", density=_laplace_density, inverse_cdf=_laplace_inverse_cdf,
                              triton_inverse_cdf=other(_laplace_triton.fn), replace=True)
    try:
        x = torch.randn(2, 12, device=DEVICE)
        out, expected = _perturb_both(x, 2, seed=SEED, stream=0, sample_start=0, example_offset=0,
                                      kernel="laplace_other_kind", scale=0.5, sigma_mode=FIXED, clip=False)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    finally:
        kernels.unregister("laplace_other_kind")


def test_user_kernel_without_triton_function():
    kernel = kernels.register("laplace_torch_only", density=_laplace_density, inverse_cdf=_laplace_inverse_cdf,
                              replace=True)
    try:
        reason = backend.unavailable(torch.device(DEVICE), torch.float32, kernel)
        assert "triton_inverse_cdf" in reason
        with pytest.raises(RuntimeError, match="triton_inverse_cdf"):
            dispatch.select("triton", DEVICE, torch.float32, kernel="laplace_torch_only")
        assert dispatch.select("auto", DEVICE, torch.float32, kernel="laplace_torch_only").name != "triton"
    finally:
        kernels.unregister("laplace_torch_only")


# ----------------------------------------------------------------------------------------------
# torch.compile traces the custom ops
# ----------------------------------------------------------------------------------------------
def test_torch_compile_traces_ops():
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    def step(x, out, mean, m2):
        backend.perturb(x, out, None, None, seed=SEED, stream=0, sample_start=0, example_offset=0,
                        kernel="gaussian", scale=0.1, sigma_mode=FIXED, clip=False)
        backend.accumulate(mean, m2, out * 2.0, None, 0.0)
        return out.sum(0)

    x = torch.randn(2, 20, device=DEVICE)
    buffers = [torch.empty(3, 2, 20, device=DEVICE), torch.zeros(2, 20, device=DEVICE), torch.zeros(2, 20, device=DEVICE)]
    expected = [t.clone() for t in buffers]
    eager = step(x, *expected)
    torch._dynamo.reset()
    compiled = torch.compile(step, backend=recording_backend, fullgraph=True)(x, *buffers)
    assert graphs and "fastmollify_triton.perturb" in graphs[0] and "fastmollify_triton.accumulate" in graphs[0]
    assert torch.equal(compiled, eager) and all(torch.equal(a, b) for a, b in zip(buffers, expected))
    torch._dynamo.reset()
    buffers = [torch.empty(3, 2, 20, device=DEVICE), torch.zeros(2, 20, device=DEVICE), torch.zeros(2, 20, device=DEVICE)]
    assert torch.equal(torch.compile(step, backend="aot_eager", fullgraph=True)(x, *buffers), eager)
    assert all(torch.equal(a, b) for a, b in zip(buffers, expected))
    torch._dynamo.reset()


def test_fake_tensors():
    """The fake implementations let shape propagation run without launching a kernel."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 8, device=DEVICE)
        out = torch.empty(3, 2, 8, device=DEVICE)
        torch.ops.fastmollify_triton.perturb(x, out, None, None, 1, 0, 0, 0, 0, 0, 0.1, FIXED, False)
        torch.ops.fastmollify_triton.accumulate(x, x.clone(), out, None, 0.0)
        torch.ops.fastmollify_triton.perturb_weights(x, x.clone(), 1, 0, 0, 0, 0.1)
        torch.ops.fastmollify_triton.perturb_weights_many([x, out], [x.clone(), out.clone()], 1, 0, 0, [0, 1], 0.1)


def test_opcheck_perturb_weights_many():
    """The multi-tensor op's schema, fake implementation and mutation declaration agree (torch.library.opcheck)."""
    cleans = [torch.randn(7, device=DEVICE), torch.randn(3, 5, device=DEVICE)]
    outs = [torch.empty_like(c) for c in cleans]
    torch.library.opcheck(torch.ops.fastmollify_triton.perturb_weights_many.default,
                          (cleans, outs, 5, 0, 2, [1, 2], 0.2))


# ----------------------------------------------------------------------------------------------
# Fallback reasons
# ----------------------------------------------------------------------------------------------
def test_reason_float64():
    reason = backend.unavailable(torch.device(DEVICE), torch.float64, kernels.get("gaussian"))
    assert "float64" in reason
    with pytest.raises(RuntimeError, match="float64"):
        dispatch.select("triton", DEVICE, torch.float64)


def test_reason_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(backend, "_interpreting", lambda: False)
    monkeypatch.setattr(backend, "_mode_mismatch", lambda: False)
    reason = backend.unavailable(torch.device("cpu"), torch.float32, kernels.get("gaussian"))
    assert "TRITON_INTERPRET=1" in reason and "CUDA" in reason


def test_reason_mode_mismatch(monkeypatch):
    monkeypatch.setattr(backend, "_mode_mismatch", lambda: True)
    assert "TRITON_INTERPRET changed" in backend.unavailable(torch.device(DEVICE), torch.float32, kernels.get("gaussian"))


def test_reason_triton_not_importable():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, fastmollify\n"
            "from fastmollify.ops import dispatch, triton as t\n"
            "print(t.unavailable(torch.device('cuda'), torch.float32, fastmollify.kernels.get('gaussian')))\n"
            "print(dispatch.select('auto', 'cpu', torch.float32).name)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("triton is not importable") and lines[1] != "triton"


_COMPILE_CHECK = r"""
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastmollify.ops import triton as backend

@triton.jit
def laplace(u):
    d = u - 0.5
    return tl.where(d > 0, -1.0, 1.0) * tl.log(1.0 - 2.0 * tl.abs(d))

target = GPUTarget("cuda", 90, 32)
signature = {"x_ptr": "*fp32", "out_ptr": "*fp32", "lo_ptr": "*fp32", "hi_ptr": "*fp32", "key_lo": "i32",
             "key_hi": "i64", "stream": "i32", "sample_start": "i64", "example_offset": "i32", "scale": "fp32",
             "S": "i32", "B": "i32", "D": "i64"}
cases = [(0, backend._no_inverse_cdf, 0, False, False, False, "fp32"), (0, backend._no_inverse_cdf, 2, True, True, False, "bf16"),
         (1, backend._no_inverse_cdf, 1, False, True, False, "fp16"), (2, backend._no_inverse_cdf, 0, False, False, False, "fp32"),
         (3, backend._no_inverse_cdf, 0, True, False, False, "fp32"), (4, backend._no_inverse_cdf, 0, False, False, False, "fp32"),
         (-1, laplace, 0, False, False, False, "fp32"), (0, backend._no_inverse_cdf, 0, False, False, True, "fp32")]
for index64 in (False, True):
    for kernel, inverse_cdf, mode, clip, per_element, multiply, dtype in cases:
        sig = dict(signature, x_ptr="*" + dtype, out_ptr="*" + dtype)
        constants = dict(KERNEL=kernel, INV_CDF=inverse_cdf, SIGMA_MODE=mode, CLIP=clip, BOUNDS_PER_ELEMENT=per_element,
                         MULTIPLY=multiply, INDEX64=index64, GROUPS=256)
        sig.update({name: "constexpr" for name in constants})
        ptx = triton.compile(ASTSource(backend._perturb_kernel_jit, sig, constants), target=target,
                             options=backend._COMPILE_OPTIONS).asm["ptx"]
        approx = {line.split()[0] for line in ptx.splitlines() if ".approx" in line}
        # the one approximation: the reciprocal of the Cauchy and logistic magnitudes, Newton-refined (_rcp)
        assert approx == ({"rcp.approx.ftz.f32"} if kernel in (1, 3) else set()), approx
        # the documented decision: multiply-adds are contracted (fma.rn), as nvcc does for the CUDA backend
        assert ("fma.rn.f32" in ptx) == backend._COMPILE_OPTIONS["enable_fp_fusion"] or kernel == 4
for dtype, aligned in ((tl.float32, True), (tl.bfloat16, False)):
    constants = dict(DTYPE=dtype, STEPS=8, GROUPS=backend.WEIGHT_GROUPS, TILES=backend.WEIGHT_TILES, ALIGNED=aligned)
    sig = {"table_ptr": "*i64", "key_lo": "i32", "key_hi": "i32", "draw": "i32", "sigma": "fp32", "T": "i32",
           **{name: "constexpr" for name in constants}}
    ptx = triton.compile(ASTSource(backend._perturb_weights_many_kernel, sig, constants), target=target,
                         options=backend._COMPILE_OPTIONS).asm["ptx"]
    assert ".approx" not in ptx
sig = {"mean_ptr": "*fp32", "m2_ptr": "*fp32", "grads_ptr": "*bf16", "weights_ptr": "*fp32", "ratios_ptr": "*fp32",
       "S": "i32", "M": "i64", "BLOCK": "constexpr"}
triton.compile(ASTSource(backend._accumulate_kernel_jit, sig, {"BLOCK": 1024}), target=target,
               options=backend._COMPILE_OPTIONS)
print("compiled")
"""


def test_gpu_code_compiles_for_sm90(tmp_path):
    """The compiled (non-interpreter) kernels build for an H100 (sm_90), GPU or not (ptxas ships with triton)."""
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except Exception as error:
        pytest.skip(f"triton has no NVIDIA backend here ({error})")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    script = tmp_path / "compile_check.py"  # a file: @triton.jit reads the source of what it decorates
    script.write_text(_COMPILE_CHECK)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env,
                            cwd=ROOT)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]
