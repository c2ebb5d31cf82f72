"""The Triton backend: the three ops as fused Triton kernels (CUDA GPUs; CPU under TRITON_INTERPRET=1).

Every kernel follows the noise-stream contract of ``fastmollify.noise`` bit for bit up to the
transform: Philox4x32-10 (``tl.philox``) with key ``(seed & 0xffffffff, seed >> 32)`` and counter
``(j >> 2, sample, example, stream)``, one Philox call per group of four elements, the exact
``(v, upper)`` uniform, Box-Muller and the symmetric inverse CDFs of ``fastmollify.kernels``.
The transcendental functions (log, sin, cos) are written here in plain Triton arithmetic
(Cephes-style range reduction and polynomials, about 1 ulp), so the code the CPU tests run under
the interpreter is the code the GPU runs, and no fast hardware approximation slips in.

A user kernel registered with ``triton_inverse_cdf=<@triton.jit function of u>`` is fused into
the perturb kernel: the function is passed as a ``tl.constexpr`` argument and called on the
float32 uniform ``noise.user_uniform``.

The ops are ``torch.library`` custom ops (``torch.ops.fastmollify_triton.*``) with fake
implementations, so ``torch.compile`` traces calls to them.

Importing this module never fails: when ``triton`` cannot be imported, ``unavailable`` says why.
"""
import torch

from .. import kernels
from . import ADAPTIVE, FIXED, RANGE

name = "triton"

try:  # absolute import: the top-level triton package, not this module
    import triton
    import triton.language as tl
except Exception as _error:  # ImportError, or a broken install raising anything else
    triton = tl = None
    _IMPORT_ERROR = f"triton is not importable ({type(_error).__name__}: {_error})"
else:
    _IMPORT_ERROR = None

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BUILTIN_IDS = {"gaussian": 0, "poisson": 1, "hyperbolic": 2, "sigmoid": 3, "rectangular": 4}
_USER = -1  # the KERNEL constexpr of a fused user kernel


def _interpreting() -> bool:
    """Whether this module's kernels were built for the Triton interpreter (TRITON_INTERPRET=1)."""
    return triton is not None and type(_perturb_kernel_jit).__name__ == "InterpretedFunction"


def _mode_mismatch() -> bool:
    """Whether triton.language was imported interpreted and these kernels compiled, or the reverse."""
    return _interpreting() != (type(tl.philox).__name__ == "InterpretedFunction")


def _is_jit_function(fn) -> bool:
    return triton is not None and isinstance(fn, triton.runtime.KernelInterface) and callable(getattr(fn, "fn", None))


_FUSABLE: dict = {}


def _fusable(fn):
    """``fn`` as the kind of jit function this module's kernels are (interpreted or compiled).

    A function decorated before TRITON_INTERPRET=1 was set (or after it was unset) is re-wrapped,
    so a user kernel works whichever way its module was imported.
    """
    interpreted = type(fn).__name__ == "InterpretedFunction"
    if interpreted == _interpreting():
        return fn
    key = (fn.fn, _interpreting())
    if key not in _FUSABLE:
        if _interpreting():
            from triton.runtime.interpreter import InterpretedFunction
            _FUSABLE[key] = InterpretedFunction(fn.fn)
        else:
            _FUSABLE[key] = triton.runtime.JITFunction(fn.fn)
    return _FUSABLE[key]


def unavailable(device: torch.device, dtype: torch.dtype, kernel: kernels.Kernel):
    """None if the Triton kernels can serve these inputs, else the reason they cannot."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    device = torch.device(device)
    if _mode_mismatch():
        return ("TRITON_INTERPRET changed between the first `import triton` and the import of "
                "fastmollify.ops.triton; set it (or not) before triton is first imported")
    if not _interpreting():
        if device.type != "cuda":
            return ("Triton runs on CUDA tensors; set TRITON_INTERPRET=1 before importing triton "
                    "to run it on the CPU")
        if not torch.cuda.is_available():
            return "CUDA is not available to torch"
    if dtype not in _DTYPES:
        return f"unsupported dtype {dtype} (the Triton kernels take float32, float16 and bfloat16)"
    kernel = kernels.get(kernel)
    if not kernel.builtin:
        if kernel.triton_inverse_cdf is None:
            return (f"the user kernel {kernel.name!r} has no triton_inverse_cdf; register it with "
                    "triton_inverse_cdf=<a @triton.jit function of u> to fuse it")
        if not _is_jit_function(kernel.triton_inverse_cdf):
            return f"the triton_inverse_cdf of kernel {kernel.name!r} is not a @triton.jit function"
    return None


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
def _version_tuple(version):
    return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2])


if triton is not None and _version_tuple(triton.__version__) < (3, 0):
    _IMPORT_ERROR = f"triton {triton.__version__} is too old (the kernels need triton >= 3.0)"
    triton = tl = None

if triton is not None:
    try:
        @triton.jit
        def _log(x):
            """Natural log of positive normal float32 (Cephes logf: frexp, degree-9 polynomial)."""
            bits = x.to(tl.int32, bitcast=True)
            e = (bits >> 23) - 126
            m = ((bits & 0x007FFFFF) | 0x3F000000).to(tl.float32, bitcast=True)  # [1/2, 1)
            small = m < 0.70710677
            e = tl.where(small, e - 1, e)
            f = tl.where(small, m + m, m) - 1.0
            z = f * f
            p = 7.0376836292e-2
            p = p * f - 1.1514610310e-1
            p = p * f + 1.1676998740e-1
            p = p * f - 1.2420140846e-1
            p = p * f + 1.4249322787e-1
            p = p * f - 1.6668057665e-1
            p = p * f + 2.0000714765e-1
            p = p * f - 2.4999993993e-1
            p = p * f + 3.3333331174e-1
            y = p * f * z
            fe = e.to(tl.float32)
            y = y - 2.12194440e-4 * fe
            y = y - 0.5 * z
            return (f + y) + 0.693359375 * fe

        @triton.jit
        def _log1m(v):
            """log1p(-v) for v in (0, 1/2]: log(1 - v) corrected for the rounding of 1 - v."""
            u = 1.0 - v
            d = u - 1.0  # exact
            safe = tl.where(d == 0.0, -1.0, d)
            return tl.where(d == 0.0, -v, _log(u) * tl.div_rn(-v, safe))

        @triton.jit
        def _sincos(a):
            """sin(a), cos(a) for float32 a in [0, 4] (Cephes sinf/cosf, reduction by pi/2)."""
            q = tl.floor(a * 0.63661975 + 0.5)
            r = ((a - q * 1.5703125) - q * 4.837512969970703125e-4) - q * 7.54978995489188216e-8
            z = r * r
            s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
            c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z \
                - 0.5 * z + 1.0
            qi = q.to(tl.int32)
            sin = tl.where(qi == 0, s, tl.where(qi == 1, c, tl.where(qi == 2, -s, -c)))
            cos = tl.where(qi == 0, c, tl.where(qi == 1, -s, tl.where(qi == 2, -c, s)))
            return sin, cos

        @triton.jit
        def _uniform(o):
            """The exact (v, upper) form of a 32-bit word's uniform (noise.symmetric_uniform)."""
            k = (o >> 8).to(tl.int32)
            upper = k >= 8388608
            v = (tl.where(upper, 16777215 - k, k).to(tl.float32) + 0.5) * 5.9604644775390625e-08
            return v, upper

        @triton.jit
        def _user_uniform(o):
            """The float32 uniform a user kernel receives (noise.user_uniform)."""
            k = (o >> 8).to(tl.int32)
            return (k.to(tl.float32) + tl.where(k < 8388608, 0.5, 0.0)) * 5.9604644775390625e-08

        @triton.jit
        def _box_muller(oa, ob):
            va, ua = _uniform(oa)
            vb, ub = _uniform(ob)
            log_u = tl.where(ua, _log1m(va), _log(va))
            radius = tl.sqrt_rn(-2.0 * log_u)
            sin, cos = _sincos(6.283185307179586 * vb)
            return radius * cos, tl.where(ub, -(radius * sin), radius * sin)

        @triton.jit
        def _symmetric(o, KERNEL: tl.constexpr):
            """A built-in kernel's sample: +-magnitude(v) (kernels.py)."""
            v, upper = _uniform(o)
            if KERNEL == 1:  # poisson (Cauchy): cos(pi v) / sin(pi v)
                sin, cos = _sincos(3.141592653589793 * v)
                g = tl.div_rn(cos, sin)
            elif KERNEL == 2:  # hyperbolic secant: -(2/pi) log(tan((pi/2) v))
                sin, cos = _sincos(1.5707963267948966 * v)
                g = -0.6366197723675814 * _log(tl.div_rn(sin, cos))
            elif KERNEL == 3:  # logistic: log1p(-v) - log(v)
                g = _log1m(v) - _log(v)
            else:  # rectangular: 1 - 2 v
                g = 1.0 - 2.0 * v
            return tl.where(upper, g, -g)

        @triton.jit
        def _no_inverse_cdf(u):
            return u

        @triton.jit
        def _philox_words(key_lo, key_hi, group, sample, example, stream, G: tl.constexpr):
            """Philox4x32-10 with key (key_lo, key_hi) and counters (group, sample, example, stream)."""
            seed = (tl.to_tensor(key_hi).to(tl.uint64) << 32) | tl.to_tensor(key_lo).to(tl.uint64)
            zero = tl.zeros([G], dtype=tl.uint32)
            return tl.philox(seed, group.to(tl.uint32), zero + tl.to_tensor(sample).to(tl.uint32),
                             zero + tl.to_tensor(example).to(tl.uint32), zero + tl.to_tensor(stream).to(tl.uint32))

        @triton.jit
        def _noise_block(key_lo, key_hi, group, sample, example, stream, KERNEL: tl.constexpr,
                         INV_CDF: tl.constexpr, G: tl.constexpr):
            """The stream's samples for the G groups ``group`` (4 G elements, in element order)."""
            o0, o1, o2, o3 = _philox_words(key_lo, key_hi, group, sample, example, stream, G)
            if KERNEL == 0:
                z0, z1 = _box_muller(o0, o1)
                z2, z3 = _box_muller(o2, o3)
            elif KERNEL == -1:
                z0 = INV_CDF(_user_uniform(o0)).to(tl.float32)
                z1 = INV_CDF(_user_uniform(o1)).to(tl.float32)
                z2 = INV_CDF(_user_uniform(o2)).to(tl.float32)
                z3 = INV_CDF(_user_uniform(o3)).to(tl.float32)
            else:
                z0 = _symmetric(o0, KERNEL)
                z1 = _symmetric(o1, KERNEL)
                z2 = _symmetric(o2, KERNEL)
                z3 = _symmetric(o3, KERNEL)
            return tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), [4 * G])

        @triton.jit(do_not_specialize=["key_lo", "key_hi", "stream", "sample_start", "example_offset", "scale"])
        def _perturb_kernel(x_ptr, out_ptr, lo_ptr, hi_ptr, key_lo, key_hi, stream, sample_start, example_offset,
                            scale, B, D, KERNEL: tl.constexpr, INV_CDF: tl.constexpr, SIGMA_MODE: tl.constexpr,
                            CLIP: tl.constexpr, BOUNDS_PER_ELEMENT: tl.constexpr, MULTIPLY: tl.constexpr,
                            BLOCK: tl.constexpr):
            """out[s, b, j] = x[b, j] + sigma_j z (or x (1 + scale z) with MULTIPLY); one program = BLOCK of a row."""
            G: tl.constexpr = BLOCK // 4
            pid = tl.program_id(0)
            blocks = tl.cdiv(D, BLOCK)
            row = pid // blocks
            block = pid - row * blocks
            s = row // B
            b = row - s * B
            group = block * G + tl.arange(0, G)
            j = block * BLOCK + tl.arange(0, BLOCK)
            mask = j < D
            x = tl.load(x_ptr + b.to(tl.int64) * D + j, mask=mask, other=0.0).to(tl.float32)
            z = _noise_block(key_lo, key_hi, group, sample_start + s, example_offset + b, stream, KERNEL, INV_CDF, G)
            if MULTIPLY:
                y = x * (1.0 + scale * z)
            else:
                if SIGMA_MODE != 0 or CLIP:
                    if BOUNDS_PER_ELEMENT:
                        lo = tl.load(lo_ptr + j, mask=mask, other=0.0)
                        hi = tl.load(hi_ptr + j, mask=mask, other=0.0)
                    else:
                        lo = tl.load(lo_ptr)
                        hi = tl.load(hi_ptr)
                if SIGMA_MODE == 0:
                    y = x + scale * z
                elif SIGMA_MODE == 1:
                    y = x + ((hi - lo) * scale) * z
                else:
                    y = x + (tl.minimum(x - lo, hi - x) * scale) * z
                if CLIP:
                    y = tl.minimum(tl.maximum(y, lo), hi)
            tl.store(out_ptr + row.to(tl.int64) * D + j, y.to(out_ptr.dtype.element_ty), mask=mask)

        @triton.jit
        def _accumulate_kernel(mean_ptr, m2_ptr, grads_ptr, weights_ptr, ratios_ptr, S, M, BLOCK: tl.constexpr):
            """Weighted Welford/West update of one BLOCK of the running statistics over the S samples."""
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < M
            mean = tl.load(mean_ptr + offs, mask=mask, other=0.0)
            m2 = tl.load(m2_ptr + offs, mask=mask, other=0.0)
            grads = grads_ptr + offs
            for s in range(S):
                w = tl.load(weights_ptr + s)
                if w > 0.0:
                    ratio = tl.load(ratios_ptr + s)  # w / (weight merged so far, this sample included)
                    g = tl.load(grads, mask=mask, other=0.0).to(tl.float32)
                    delta = g - mean
                    mean = mean + ratio * delta
                    m2 = m2 + w * delta * (g - mean)
                grads += M  # pointer arithmetic: no 32-bit overflow of s * M
            tl.store(mean_ptr + offs, mean, mask=mask)
            tl.store(m2_ptr + offs, m2, mask=mask)

        _perturb_kernel_jit = _perturb_kernel
        _accumulate_kernel_jit = _accumulate_kernel

        if not _interpreting():  # on the GPU: autotune the block size (the interpreter runs one fixed config)
            def _prune_perturb(configs, named_args, **kwargs):
                width = max(int(named_args["D"]), 1)
                kept = [c for c in configs if c.kwargs["BLOCK"] <= max(256, triton.next_power_of_2(width))]
                return kept or configs[:1]

            _perturb_kernel = triton.autotune(
                configs=[triton.Config({"BLOCK": 256}, num_warps=2), triton.Config({"BLOCK": 512}, num_warps=4),
                         triton.Config({"BLOCK": 1024}, num_warps=4), triton.Config({"BLOCK": 1024}, num_warps=8),
                         triton.Config({"BLOCK": 2048}, num_warps=8), triton.Config({"BLOCK": 4096}, num_warps=8)],
                key=["D", "KERNEL", "SIGMA_MODE", "CLIP", "MULTIPLY"],
                prune_configs_by={"early_config_prune": _prune_perturb},
            )(_perturb_kernel)
            _accumulate_kernel = triton.autotune(
                configs=[triton.Config({"BLOCK": 512}, num_warps=4), triton.Config({"BLOCK": 1024}, num_warps=4),
                         triton.Config({"BLOCK": 2048}, num_warps=8)],
                key=["M"],
                restore_value=["mean_ptr", "m2_ptr"],  # benchmarking must not merge a chunk twice
            )(_accumulate_kernel)
    except Exception as _error:  # a triton whose API differs: decline rather than break the import
        _IMPORT_ERROR = (f"the Triton kernels could not be defined with triton {triton.__version__} "
                         f"({type(_error).__name__}: {_error})")
        triton = tl = None

if triton is None:
    _perturb_kernel_jit = _accumulate_kernel_jit = None


def _interpreter_block(width: int) -> int:
    """One fixed block under the interpreter: large blocks amortise its per-program cost."""
    return min(4096, max(16, triton.next_power_of_2(max(width, 1))))


def _launch_perturb(x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset, kernel_id, scale,
                    sigma_mode, clip, multiply):
    """x: [B, D] contiguous, out: [R, D] contiguous with R = S B (rows in (s, b) order)."""
    batch, width = x.shape
    rows = out.numel() // width if width else 0
    if rows == 0 or width == 0:
        return
    kernel = kernels.by_id(kernel_id)
    if kernel.builtin:
        kernel_const, inverse_cdf = _BUILTIN_IDS[kernel.name], _no_inverse_cdf
    else:
        kernel_const, inverse_cdf = _USER, _fusable(kernel.triton_inverse_cdf)
    bounds = lo is not None
    if not bounds:
        lo = hi = x
    per_element = bounds and lo.numel() != 1
    args = (x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset, float(scale), batch, width)
    constants = dict(KERNEL=kernel_const, INV_CDF=inverse_cdf, SIGMA_MODE=sigma_mode, CLIP=bool(clip),
                     BOUNDS_PER_ELEMENT=per_element, MULTIPLY=bool(multiply))
    if _interpreting():
        block = _interpreter_block(width)
        _perturb_kernel[(rows * triton.cdiv(width, block),)](*args, **constants, BLOCK=block)
    else:
        with torch.cuda.device(x.device):
            _perturb_kernel[lambda meta: (rows * triton.cdiv(width, meta["BLOCK"]),)](*args, **constants)


def _launch_accumulate(mean, m2, grads, weights, ratios):
    size = mean.numel()
    samples = grads.shape[0]
    if size == 0 or samples == 0:
        return
    if _interpreting():
        block = _interpreter_block(size)
        _accumulate_kernel[(triton.cdiv(size, block),)](mean, m2, grads, weights, ratios, samples, size, BLOCK=block)
    else:
        with torch.cuda.device(mean.device):
            _accumulate_kernel[lambda meta: (triton.cdiv(size, meta["BLOCK"]),)](
                mean, m2, grads, weights, ratios, samples, size)


# ----------------------------------------------------------------------------------------------
# torch.library custom ops (traceable by torch.compile)
# ----------------------------------------------------------------------------------------------
def _contiguous_out(out):
    return out if out.is_contiguous() else torch.empty(out.shape, dtype=out.dtype, device=out.device)


@torch.library.custom_op("fastmollify_triton::perturb", mutates_args=("out",))
def _perturb_op(x: torch.Tensor, out: torch.Tensor, lo: torch.Tensor | None, hi: torch.Tensor | None,
                seed_lo: int, seed_hi: int, stream: int, sample_start: int, example_offset: int, kernel: int,
                scale: float, sigma_mode: int, clip: bool) -> None:
    target = _contiguous_out(out)
    _launch_perturb(x.contiguous(), target.view(-1, x.shape[1]) if x.shape[1] else target, lo, hi, seed_lo, seed_hi,
                    stream, sample_start, example_offset, kernel, scale, sigma_mode, clip, multiply=False)
    if target is not out:
        out.copy_(target)


@_perturb_op.register_fake
def _(x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset, kernel, scale, sigma_mode, clip):
    return None


@torch.library.custom_op("fastmollify_triton::accumulate", mutates_args=("mean", "m2"))
def _accumulate_op(mean: torch.Tensor, m2: torch.Tensor, grads: torch.Tensor, weights: torch.Tensor | None,
                   count: float) -> None:
    samples = grads.shape[0]
    device = grads.device
    if weights is None:
        w = torch.ones(samples, dtype=torch.float64, device=device)
    else:
        w = weights.reshape(-1).to(device=device, dtype=torch.float64)
    merged = count + torch.cumsum(w, 0)  # weight merged after each sample, in float64
    ratios = torch.where(w > 0, w / torch.where(merged > 0, merged, 1.0), 0.0).float()
    targets = [t if t.is_contiguous() else t.contiguous() for t in (mean, m2)]
    _launch_accumulate(targets[0], targets[1], grads.contiguous(), w.float(), ratios)
    for target, original in zip(targets, (mean, m2)):
        if target is not original:
            original.copy_(target)


@_accumulate_op.register_fake
def _(mean, m2, grads, weights, count):
    return None


@torch.library.custom_op("fastmollify_triton::perturb_weights", mutates_args=("out",))
def _perturb_weights_op(clean: torch.Tensor, out: torch.Tensor, seed_lo: int, seed_hi: int, draw: int, index: int,
                        sigma: float) -> None:
    target = _contiguous_out(out)
    flat = clean.contiguous().reshape(1, -1)
    _launch_perturb(flat, target.view(1, -1), None, None, seed_lo, seed_hi, 1, draw, index, 0, sigma, FIXED,
                    False, multiply=True)
    if target is not out:
        out.copy_(target)


@_perturb_weights_op.register_fake
def _(clean, out, seed_lo, seed_hi, draw, index, sigma):
    return None


# ----------------------------------------------------------------------------------------------
# The backend's ops (signatures of fastmollify.ops)
# ----------------------------------------------------------------------------------------------
def _kernel_id(kernel) -> int:
    if isinstance(kernel, kernels.Kernel):
        return kernel.id
    return kernels.get(kernel).id if isinstance(kernel, str) else kernels.by_id(kernel).id


def _split_seed(seed):
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return seed & 0xFFFFFFFF, seed >> 32


def _check(device, dtype, kernel):
    reason = unavailable(device, dtype, kernel)
    if reason is not None:
        raise RuntimeError(f"the triton backend cannot serve this call: {reason}")


def _bounds(t, width, device, name_):
    if t is None:
        return None
    t = t.reshape(-1)
    if t.numel() not in (1, width):
        raise ValueError(f"{name_} must have 1 or {width} elements, got {t.numel()}")
    return t.to(device=device, dtype=torch.float32).contiguous()


def perturb(x, out, lo, hi, *, seed, stream, sample_start, example_offset, kernel, scale, sigma_mode, clip):
    kernel_id = _kernel_id(kernel)
    _check(x.device, x.dtype, kernels.by_id(kernel_id))
    if x.dim() != 2 or out.dim() != 3 or out.shape[1:] != x.shape or out.dtype != x.dtype:
        raise ValueError(f"perturb takes x [B, D] and out [S, B, D] of its dtype, got {tuple(x.shape)} "
                         f"{x.dtype} and {tuple(out.shape)} {out.dtype}")
    if sigma_mode not in (FIXED, RANGE, ADAPTIVE):
        raise ValueError(f"unknown sigma_mode {sigma_mode!r}")
    if (sigma_mode != FIXED or clip) and (lo is None or hi is None):
        raise ValueError("lo and hi are needed for the range and adaptive sigma modes and for clip")
    if sigma_mode == FIXED and not clip:
        lo = hi = None
    width = x.shape[1]
    lo, hi = _bounds(lo, width, x.device, "lo"), _bounds(hi, width, x.device, "hi")
    seed_lo, seed_hi = _split_seed(seed)
    torch.ops.fastmollify_triton.perturb(x, out, lo, hi, seed_lo, seed_hi, int(stream), int(sample_start),
                                         int(example_offset), kernel_id, float(scale), int(sigma_mode), bool(clip))


def accumulate(mean, m2, grads, weights, count):
    _check(grads.device, grads.dtype, kernels.get("gaussian"))
    if mean.dtype != torch.float32 or m2.dtype != torch.float32:
        raise ValueError("mean and m2 must be float32")
    if grads.dim() < 1 or grads.shape[1:] != mean.shape or m2.shape != mean.shape:
        raise ValueError(f"grads must be [S, *mean.shape], got {tuple(grads.shape)} for mean {tuple(mean.shape)}")
    if weights is not None and weights.numel() != grads.shape[0]:
        raise ValueError(f"weights must have one entry per sample ({grads.shape[0]}), got {weights.numel()}")
    torch.ops.fastmollify_triton.accumulate(mean, m2, grads, weights, float(count))


def perturb_weights(clean, out, *, seed, draw, index, sigma):
    _check(clean.device, clean.dtype, kernels.get("gaussian"))
    if out.shape != clean.shape or out.dtype != clean.dtype:
        raise ValueError("out must have clean's shape and dtype")
    seed_lo, seed_hi = _split_seed(seed)
    torch.ops.fastmollify_triton.perturb_weights(clean, out, seed_lo, seed_hi, int(draw), int(index), float(sigma))
