"""The Triton backend: the three ops as fused Triton kernels (CUDA GPUs; CPU under TRITON_INTERPRET=1).

Every kernel follows the noise-stream contract of ``fastmollify.noise`` bit for bit up to the
transform: Philox4x32-10 (``tl.philox``) with key ``(seed & 0xffffffff, seed >> 32)`` and counter
``(j >> 2, sample, example, stream)``, one Philox call per group of four elements, the exact
``(v, upper)`` uniform, Box-Muller and the symmetric inverse CDFs of ``fastmollify.kernels``.
The transcendental functions (log, sin/cos, the Cauchy, hyperbolic-secant and logistic magnitudes)
are written here in plain Triton arithmetic, the formulas of ``csrc/core/fastmath.h`` (range
reductions and polynomials, 1-2.5 ulp; one logarithm per Box-Muller pair, one sin/cos reduction; no
sin/cos or division in the other magnitudes), so the code the CPU tests run under the interpreter is
the code the GPU runs. The one hardware approximation is the reciprocal (``_rcp``: ``rcp.approx`` and
a Newton step, within about half an ulp), which the interpreter computes by division.

Multiply-adds: compiled kernels contract ``a * b + c`` into one rounding (``enable_fp_fusion=True``,
``_COMPILE_OPTIONS``, as nvcc does for the CUDA backend); the interpreter and the CPU backend
(``-ffp-contract=off``) round each operation. The uniforms and the rectangular kernel are exact
either way (bit-identical across backends); the other transforms then differ by a few float32
ulp, within the tolerance every backend is held to against the reference on the GPU
(``tests/test_backends.py``: 32 ulp relative, 16 ulp absolute per unit of sigma);
``tests/test_triton.py`` checks that the compiled code is contracted as stated here.

Work layout: perturb programs take a tile of (example, group of four) pairs of the flattened
``[B, ceil(D / 4)]`` grid and loop over the samples inside, x in registers (read once per call);
accumulate programs take a block of elements and loop over the samples; perturb_weights_many is one
launch for a list of tensors (a device table of their addresses, searched per program). Offsets are
int64. On the
GPU the tile sizes are autotuned (``PERTURB_CONFIGS``, ``ACCUMULATE_CONFIGS``), or pinned to the
first with ``FASTMOLLIFY_TRITON_CONFIGS=pinned``.

A user kernel registered with ``triton_inverse_cdf=<@triton.jit function of u>`` is fused into
the perturb kernel: the function is passed as a ``tl.constexpr`` argument and called on the
float32 uniform ``noise.user_uniform``.

The ops are ``torch.library`` custom ops (``torch.ops.fastmollify_triton.*``) with fake
implementations, so ``torch.compile`` traces calls to them.

Importing this module never fails: when ``triton`` cannot be imported, ``unavailable`` says why.
"""
import os

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

# Launch configurations, autotuned on the GPU; the first is the pinned one (FASTMOLLIFY_TRITON_CONFIGS=pinned,
# set by the GPU suite's tests so that autotuning cannot eat their time) and the one isa_report compiles.
PERTURB_CONFIGS = [{"kwargs": {"GROUPS": 256}, "num_warps": 4}, {"kwargs": {"GROUPS": 128}, "num_warps": 4},
                   {"kwargs": {"GROUPS": 512}, "num_warps": 8}, {"kwargs": {"GROUPS": 256}, "num_warps": 8}]
ACCUMULATE_CONFIGS = [{"kwargs": {"BLOCK": 1024}, "num_warps": 4}, {"kwargs": {"BLOCK": 512}, "num_warps": 4},
                      {"kwargs": {"BLOCK": 2048}, "num_warps": 8}]
# Multiply-add contraction, as nvcc does for the CUDA backend: the noise transforms differ from the
# interpreter's (and the CPU backend's, built with -ffp-contract=off) separately rounded operations by a
# few ulp, within tests/test_backends.py's tolerance; uniforms and the rectangular kernel stay exact.
_COMPILE_OPTIONS = {"enable_fp_fusion": True}


def _configs(configs):
    """triton.Config objects of ``configs``: all of them, or the first if FASTMOLLIFY_TRITON_CONFIGS=pinned."""
    if os.environ.get("FASTMOLLIFY_TRITON_CONFIGS", "").strip().lower() == "pinned":
        configs = configs[:1]
    return [triton.Config(dict(c["kwargs"]), num_warps=c["num_warps"]) for c in configs]


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
        def _log_reduced(f, fe):
            """log(2^fe (1 + f)) = fe ln2 + f P(f), f in [sqrt(1/2) - 1, sqrt(2) - 1) (fastmath.h, degree 8)."""
            p = 8.95945206e-2
            p = p * f - 1.44819751e-1
            p = p * f + 1.49174511e-1
            p = p * f - 1.65437728e-1
            p = p * f + 1.99584126e-1
            p = p * f - 2.50029445e-1
            p = p * f + 3.33341599e-1
            p = p * f - 4.99999791e-1
            p = p * f + 1.0
            return fe * 0.693147182 + f * p

        @triton.jit
        def _log_reduce(x):
            """(f, fe) with x = 2^fe (1 + f), 1 + f in [sqrt(1/2), sqrt(2)), for positive normal float32 x."""
            ix = x.to(tl.int32, bitcast=True) - 0x3F3504F3  # sqrt(1/2)'s bits: the octave starts there
            f = ((ix & 0x007FFFFF) + 0x3F3504F3).to(tl.float32, bitcast=True) - 1.0
            return f, (ix >> 23).to(tl.float32)

        @triton.jit
        def _log1m_reduce(v):
            """The same reduction of 1 - v, v in (0, 1/2], exact from v (1 - v itself is not a float32)."""
            near_one = v <= 0.29289323
            return tl.where(near_one, -v, 1.0 - (v + v)), tl.where(near_one, 0.0, -1.0)

        @triton.jit
        def _log(x):
            """Natural log of positive normal float32."""
            f, fe = _log_reduce(x)
            return _log_reduced(f, fe)

        # Compiled for a GPU (not the interpreter): whether _rcp may use the hardware reciprocal.
        _COMPILED = tl.constexpr(type(_log_reduced).__name__ != "InterpretedFunction")

        @triton.jit
        def _rcp(x):
            """1 / x for positive normal float32 x, within 1 ulp (fastmath.h: fast_rcpf): compiled, the hardware
            reciprocal (rcp.approx, within 1 ulp) refined by one Newton step; interpreted, a division."""
            if _COMPILED:
                r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                              is_pure=True, pack=1)
                r = r + r * (1.0 - x * r)
            else:
                r = 1.0 / x
            return r

        @triton.jit
        def _cot_pi(v):
            """Cauchy magnitude cot(pi v), v in (0, 1/2]: D(v^2) / (v (1 - v^2)) (fastmath.h: fast_cot_pif)."""
            t = v * v
            d = 9.68479458e-3
            d = d * t + 4.11217585e-2
            d = d * t + 3.58187139e-1
            d = d * t - 1.36550784
            d = d * t + 3.18309873e-1
            return d * _rcp(v - v * t)

        @triton.jit
        def _sech_magnitude(v):
            """-(2/pi) log(tan(pi v / 2)) = -(2/pi) log v + H(v^2), v in (0, 1/2] (fastmath.h)."""
            t = v * v
            h = -2.55499035e-1
            h = h * t - 1.16783120e-1
            h = h * t - 2.14994624e-1
            h = h * t - 3.01088333e-1
            h = h * t - 5.23606837e-1
            h = h * t - 2.87486464e-1
            return -6.36619747e-1 * _log(v) + h

        @triton.jit
        def _logit(v):
            """log(1 - v) - log(v) = log(1 / v - 1) for v in (0, 1/2] (fastmath.h: fast_logitf)."""
            return _log(_rcp(v) - 1.0)

        @triton.jit
        def _sincos(a):
            """sin(a), cos(a) for float32 a in [0, 4] (Cephes sinf/cosf, one reduction by pi/2)."""
            qi = (a * 0.63661975 + 0.5).to(tl.int32)  # truncation = floor for a >= 0
            q = qi.to(tl.float32)
            r = ((a - q * 1.5703125) - q * 4.837512969970703125e-4) - q * 7.54978995489188216e-8
            z = r * r
            s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
            c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z \
                - 0.5 * z + 1.0
            swap = (qi & 1) != 0  # quadrant qi: sin = (s, c, -s, -c)[qi], cos = (c, -s, -c, s)[qi]
            sb = tl.where(swap, c, s)
            cb = tl.where(swap, s, c)
            return tl.where((qi & 2) != 0, -sb, sb), tl.where(((qi + 1) & 2) != 0, -cb, cb)

        @triton.jit
        def _uniform(o):
            """The exact (v, upper) form of a 32-bit word's uniform (noise.symmetric_uniform)."""
            k = (o >> 8).to(tl.int32)
            upper = k >= 8388608
            v = tl.where(upper, 16777215 - k, k).to(tl.float32) * 5.9604644775390625e-08 + 2.98023223876953125e-08
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
            f, fe = _log_reduce(va)  # log u_a: one polynomial on the reduction of v_a or of 1 - v_a
            f1, fe1 = _log1m_reduce(va)
            log_u = _log_reduced(tl.where(ua, f1, f), tl.where(ua, fe1, fe))
            radius = tl.sqrt_rn(-2.0 * log_u)
            sin, cos = _sincos(6.283185307179586 * vb)
            return radius * cos, tl.where(ub, -(radius * sin), radius * sin)

        @triton.jit
        def _symmetric(o, KERNEL: tl.constexpr):
            """A built-in kernel's sample: +-magnitude(v) (kernels.py)."""
            if KERNEL == 4:  # rectangular: 2u - 1 = (2k + 1 - 2^24) 2^-24 = +-(1 - 2v), exact (noise.h)
                n = (((o >> 8) << 1) | 1).to(tl.int32, bitcast=True) - 16777216
                z = n.to(tl.float32) * 5.9604644775390625e-08
            else:
                v, upper = _uniform(o)
                if KERNEL == 1:  # poisson (Cauchy): cot(pi v)
                    g = _cot_pi(v)
                elif KERNEL == 2:  # hyperbolic secant: -(2/pi) log(tan((pi/2) v))
                    g = _sech_magnitude(v)
                else:  # logistic: log1p(-v) - log(v)
                    g = _logit(v)
                z = tl.where(upper, g, -g)
            return z

        @triton.jit
        def _no_inverse_cdf(u):
            return u

        @triton.jit
        def _philox_words(key_lo, key_hi, group, sample, example, stream, G: tl.constexpr):
            """Philox4x32-10 with key (key_lo, key_hi) and counters (group, sample, example, stream), G lanes."""
            seed = (tl.to_tensor(key_hi).to(tl.uint64) << 32) | tl.to_tensor(key_lo).to(tl.uint64)
            zero = tl.zeros([G], dtype=tl.uint32)
            return tl.philox(seed, zero + group.to(tl.uint32), zero + tl.to_tensor(sample).to(tl.uint32),
                             zero + tl.to_tensor(example).to(tl.uint32), zero + tl.to_tensor(stream).to(tl.uint32))

        @triton.jit
        def _noise_block(key_lo, key_hi, group, sample, example, stream, KERNEL: tl.constexpr,
                         INV_CDF: tl.constexpr, G: tl.constexpr):
            """The stream's samples for the G groups ``group`` of examples ``example``: [G, 4], element order."""
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
            return tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), [G, 4])

        @triton.jit(do_not_specialize=["key_lo", "key_hi", "stream", "sample_start", "example_offset", "scale", "S"])
        def _perturb_kernel(x_ptr, out_ptr, lo_ptr, hi_ptr, key_lo, key_hi, stream, sample_start, example_offset,
                            scale, S, B, D, KERNEL: tl.constexpr, INV_CDF: tl.constexpr, SIGMA_MODE: tl.constexpr,
                            CLIP: tl.constexpr, BOUNDS_PER_ELEMENT: tl.constexpr, MULTIPLY: tl.constexpr,
                            INDEX64: tl.constexpr, GROUPS: tl.constexpr):
            """out[s, b, j] = x[b, j] + sigma_j z (or x (1 + scale z) with MULTIPLY) for every sample s.

            One program = GROUPS consecutive (example, group of four) pairs of the flattened [B, ceil(D / 4)]
            grid, so a short row does not idle lanes; x (and sigma, lo, hi) are read once into registers and
            the S samples loop inside, each writing its [GROUPS, 4] tile. Offsets are int64 (INDEX64: the
            pair index too, when B ceil(D / 4) >= 2**31).
            """
            per_row = (D + 3) // 4
            if INDEX64:
                pair = tl.program_id(0).to(tl.int64) * GROUPS + tl.arange(0, GROUPS)
            else:
                pair = tl.program_id(0) * GROUPS + tl.arange(0, GROUPS)
            b = pair // per_row
            group = pair - b * per_row
            j = (4 * group)[:, None] + tl.arange(0, 4)[None, :]  # [GROUPS, 4] element of the row
            mask = (b < B)[:, None] & (j < D)
            offset = b.to(tl.int64)[:, None] * D + j
            x = tl.load(x_ptr + offset, mask=mask, other=0.0).to(tl.float32)
            if MULTIPLY:
                sigma = scale
            else:
                if SIGMA_MODE != 0 or CLIP:
                    if BOUNDS_PER_ELEMENT:
                        lo = tl.load(lo_ptr + j, mask=mask, other=0.0)
                        hi = tl.load(hi_ptr + j, mask=mask, other=0.0)
                    else:
                        lo = tl.load(lo_ptr)
                        hi = tl.load(hi_ptr)
                if SIGMA_MODE == 0:
                    sigma = scale
                elif SIGMA_MODE == 1:
                    sigma = (hi - lo) * scale
                else:
                    sigma = tl.minimum(x - lo, hi - x) * scale
            out = out_ptr + offset
            step = B.to(tl.int64) * D  # one sample's rows
            for s in range(S):
                z = _noise_block(key_lo, key_hi, group, sample_start + s, example_offset + b, stream, KERNEL,
                                 INV_CDF, GROUPS)
                if MULTIPLY:
                    y = x * (1.0 + sigma * z)
                else:
                    y = x + sigma * z
                    if CLIP:
                        y = tl.minimum(tl.maximum(y, lo), hi)
                tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)
                out += step

        @triton.jit(do_not_specialize=["S"])
        def _accumulate_kernel(mean_ptr, m2_ptr, grads_ptr, weights_ptr, ratios_ptr, S, M, BLOCK: tl.constexpr):
            """Weighted Welford/West update of one BLOCK of the running statistics over the S samples.

            Every sample is merged without a branch: a zero weight has ratio 0 and leaves (mean, m2) as
            they are. Offsets are int64, the gradient pointer advances by M per sample.
            """
            offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < M
            mean = tl.load(mean_ptr + offs, mask=mask, other=0.0)
            m2 = tl.load(m2_ptr + offs, mask=mask, other=0.0)
            grads = grads_ptr + offs
            for s in range(S):
                w = tl.load(weights_ptr + s)
                ratio = tl.load(ratios_ptr + s)  # w / (weight merged so far, this sample included)
                g = tl.load(grads, mask=mask, other=0.0).to(tl.float32)
                delta = g - mean
                mean = mean + ratio * delta
                m2 = m2 + w * delta * (g - mean)
                grads += M
            tl.store(mean_ptr + offs, mean, mask=mask)
            tl.store(m2_ptr + offs, m2, mask=mask)

        @triton.jit(do_not_specialize=["key_lo", "key_hi", "draw", "sigma", "T"])
        def _perturb_weights_many_kernel(table_ptr, key_lo, key_hi, draw, sigma, T, DTYPE: tl.constexpr,
                                         STEPS: tl.constexpr, GROUPS: tl.constexpr, TILES: tl.constexpr,
                                         ALIGNED: tl.constexpr):
            """out = clean (1 + sigma z) for every tensor of a list, in one launch (multi-tensor apply).

            Row t of the int64 table: clean's address, out's address, numel, the tensor's index (the
            noise stream's example) and its first program. A program takes TILES tiles of GROUPS groups
            of four elements of one tensor, found by a binary search (STEPS = ceil(log2 T)) over the
            first programs; z is the weight stream's (stream 1, sample = draw), as perturb_weights draws
            it. ALIGNED: every address 16-byte aligned and every numel a multiple of 4 (vector access).
            """
            pid = tl.program_id(0).to(tl.int64)
            lo = tl.zeros((), tl.int64)
            hi = lo + T
            for _ in tl.static_range(STEPS):  # the last row whose first program is <= pid
                mid = (lo + hi) // 2
                right = tl.load(table_ptr + 5 * mid + 4) <= pid
                lo = tl.where(right, mid, lo)
                hi = tl.where(right, hi, mid)
            row = table_ptr + 5 * lo
            clean = tl.load(row).to(tl.pointer_type(DTYPE))
            out = tl.load(row + 1).to(tl.pointer_type(DTYPE))
            numel = tl.load(row + 2)
            index = tl.load(row + 3)
            if ALIGNED:
                clean = tl.multiple_of(clean, 16)
                out = tl.multiple_of(out, 16)
                numel = tl.multiple_of(numel, 4)
            first_group = (pid - tl.load(row + 4)).to(tl.int32) * (GROUPS * TILES)  # < 2**31 groups a tensor
            for tile in tl.static_range(TILES):
                group = first_group + tile * GROUPS + tl.arange(0, GROUPS)
                j = (4 * group.to(tl.int64))[:, None] + tl.arange(0, 4)[None, :]
                mask = j < numel
                w = tl.load(clean + j, mask=mask, other=0.0).to(tl.float32)
                z = _noise_block(key_lo, key_hi, group, draw, index, 1, 0, _no_inverse_cdf, GROUPS)
                tl.store(out + j, (w * (1.0 + sigma * z)).to(DTYPE), mask=mask)

        _perturb_kernel_jit = _perturb_kernel
        _accumulate_kernel_jit = _accumulate_kernel

        if not _interpreting():  # on the GPU: autotune unless FASTMOLLIFY_TRITON_CONFIGS=pinned
            _perturb_kernel = triton.autotune(
                configs=_configs(PERTURB_CONFIGS), key=["D", "KERNEL", "SIGMA_MODE", "CLIP", "MULTIPLY"],
            )(_perturb_kernel)
            _accumulate_kernel = triton.autotune(
                configs=_configs(ACCUMULATE_CONFIGS), key=["M"],
                restore_value=["mean_ptr", "m2_ptr"],  # benchmarking must not merge a chunk twice
            )(_accumulate_kernel)
    except Exception as _error:  # a triton whose API differs: decline rather than break the import
        _IMPORT_ERROR = (f"the Triton kernels could not be defined with triton {triton.__version__} "
                         f"({type(_error).__name__}: {_error})")
        triton = tl = None

if triton is None:
    _perturb_kernel_jit = _accumulate_kernel_jit = None

_INDEX32 = 2**31 - 1 - 1024  # int32 pair indices while the last tile (at most 1024 pairs) stays below 2**31


def _launch_perturb(x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset, kernel_id, scale,
                    sigma_mode, clip, multiply):
    """x: [B, D] contiguous, out: [S B, D] contiguous (rows in (s, b) order)."""
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
    pairs = batch * ((width + 3) // 4)
    args = (x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset, float(scale), rows // batch,
            batch, width)
    constants = dict(KERNEL=kernel_const, INV_CDF=inverse_cdf, SIGMA_MODE=sigma_mode, CLIP=bool(clip),
                     BOUNDS_PER_ELEMENT=per_element, MULTIPLY=bool(multiply), INDEX64=pairs > _INDEX32)
    if _interpreting():
        groups = _interpreter_groups(pairs)
        _perturb_kernel[(triton.cdiv(pairs, groups),)](*args, **constants, GROUPS=groups)
    else:
        with torch.cuda.device(x.device):
            _perturb_kernel[lambda meta: (triton.cdiv(pairs, meta["GROUPS"]),)](*args, **constants,
                                                                                 **_COMPILE_OPTIONS)


def _launch_accumulate(mean, m2, grads, weights, ratios):
    size = mean.numel()
    samples = grads.shape[0]
    if size == 0 or samples == 0:
        return
    if _interpreting():
        block = 4 * _interpreter_groups(size)
        _accumulate_kernel[(triton.cdiv(size, block),)](mean, m2, grads, weights, ratios, samples, size, BLOCK=block)
    else:
        with torch.cuda.device(mean.device):
            _accumulate_kernel[lambda meta: (triton.cdiv(size, meta["BLOCK"]),)](
                mean, m2, grads, weights, ratios, samples, size, **_COMPILE_OPTIONS)


# perturb_weights_many: a program takes 4 tiles (1 interpreted: it pays per operation) of 256 groups of four
WEIGHT_GROUPS, WEIGHT_TILES, INTERPRETER_WEIGHT_TILES = 256, 4, 1
_WEIGHT_TABLES: dict = {}  # table contents -> the table on the device (the same list is perturbed every draw)


def _weight_table(cleans, outs, indices, tiles):
    """(table, programs): the int64 [T, 5] table of _perturb_weights_many_kernel on the tensors' device."""
    rows, first = [], 0
    for clean, out, index in zip(cleans, outs, indices):
        rows.append((clean.data_ptr(), out.data_ptr(), clean.numel(), index, first))
        first += triton.cdiv(clean.numel(), 4 * WEIGHT_GROUPS * tiles)
    key = (cleans[0].device, tuple(rows))
    if key not in _WEIGHT_TABLES:
        if len(_WEIGHT_TABLES) >= 16:
            _WEIGHT_TABLES.clear()
        _WEIGHT_TABLES[key] = torch.tensor(rows, dtype=torch.int64).to(cleans[0].device)
    return _WEIGHT_TABLES[key], first


def _launch_perturb_weights_many(cleans, outs, seed_lo, seed_hi, draw, indices, sigma):
    """cleans, outs: contiguous tensors of one dtype and device, numel > 0."""
    tiles = INTERPRETER_WEIGHT_TILES if _interpreting() else WEIGHT_TILES
    table, programs = _weight_table(cleans, outs, indices, tiles)
    aligned = all(t.data_ptr() % 16 == 0 for t in (*cleans, *outs)) and all(t.numel() % 4 == 0 for t in cleans)
    args = (table, seed_lo, seed_hi, draw, float(sigma), len(cleans))
    constants = dict(DTYPE=getattr(tl, str(cleans[0].dtype).removeprefix("torch.")),
                     STEPS=(len(cleans) - 1).bit_length(), GROUPS=WEIGHT_GROUPS, TILES=tiles, ALIGNED=aligned)
    if _interpreting():
        _perturb_weights_many_kernel[(programs,)](*args, **constants)
    else:
        with torch.cuda.device(cleans[0].device):
            _perturb_weights_many_kernel[(programs,)](*args, **constants, num_warps=4, **_COMPILE_OPTIONS)


def _interpreter_groups(count: int) -> int:
    """One fixed tile under the interpreter: large tiles amortise its per-program cost."""
    return min(1024, max(4, triton.next_power_of_2(max(count, 1))))


def isa_specs():
    """The kernels benchmarks/isa_report.py compiles for sm_90: each op, built-in kernel and dtype in the
    first (pinned) configuration, with the row length and pointers 16-divisible as torch's are."""
    specs = []
    for dtype, short in (("float32", "fp32"), ("float16", "fp16"), ("bfloat16", "bf16")):
        config = PERTURB_CONFIGS[0]
        for name, kernel_id in _BUILTIN_IDS.items():
            signature = {"x_ptr": "*" + short, "out_ptr": "*" + short, "lo_ptr": "*fp32", "hi_ptr": "*fp32",
                         "key_lo": "i32", "key_hi": "i32", "stream": "i32", "sample_start": "i32",
                         "example_offset": "i32", "scale": "fp32", "S": "i32", "B": "i32", "D": "i32"}
            constants = dict(KERNEL=kernel_id, INV_CDF=_no_inverse_cdf, SIGMA_MODE=FIXED, CLIP=False,
                             BOUNDS_PER_ELEMENT=False, MULTIPLY=False, INDEX64=False, **config["kwargs"])
            specs.append(dict(key=f"perturb/{name}/{dtype}", op="perturb", dtype=dtype, fn=_perturb_kernel_jit,
                              signature=signature, constants=constants, aligned=["x_ptr", "out_ptr", "D"],
                              options=dict(num_warps=config["num_warps"], **_COMPILE_OPTIONS)))
        # perturb_weights as the engine calls it: perturb_weights_many, a list of up to 256 aligned tensors
        signature = {"table_ptr": "*i64", "key_lo": "i32", "key_hi": "i32", "draw": "i32", "sigma": "fp32", "T": "i32"}
        constants = dict(DTYPE=getattr(tl, dtype), STEPS=8, GROUPS=WEIGHT_GROUPS, TILES=WEIGHT_TILES, ALIGNED=True)
        specs.append(dict(key=f"perturb_weights/gaussian/{dtype}", op="perturb_weights", dtype=dtype,
                          fn=_perturb_weights_many_kernel, signature=signature, constants=constants,
                          aligned=["table_ptr"], options=dict(num_warps=4, **_COMPILE_OPTIONS)))
        config = ACCUMULATE_CONFIGS[0]
        signature = {"mean_ptr": "*fp32", "m2_ptr": "*fp32", "grads_ptr": "*" + short, "weights_ptr": "*fp32",
                     "ratios_ptr": "*fp32", "S": "i32", "M": "i32"}
        specs.append(dict(key=f"accumulate/{dtype}", op="accumulate", dtype=dtype, fn=_accumulate_kernel_jit,
                          signature=signature, constants=dict(config["kwargs"]),
                          aligned=["mean_ptr", "m2_ptr", "grads_ptr", "M"],
                          options=dict(num_warps=config["num_warps"], **_COMPILE_OPTIONS)))
    return specs


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


@torch.library.custom_op("fastmollify_triton::perturb_weights_many", mutates_args=("outs",))
def _perturb_weights_many_op(cleans: list[torch.Tensor], outs: list[torch.Tensor], seed_lo: int, seed_hi: int,
                             draw: int, indices: list[int], sigma: float) -> None:
    chosen = [i for i, clean in enumerate(cleans) if clean.numel()]
    if not chosen:
        return
    targets = [_contiguous_out(outs[i]) for i in chosen]
    sources = [cleans[i].contiguous() for i in chosen]
    _launch_perturb_weights_many(sources, targets, seed_lo, seed_hi, draw, [indices[i] for i in chosen], sigma)
    for i, target in zip(chosen, targets):
        if target is not outs[i]:
            outs[i].copy_(target)


@_perturb_weights_many_op.register_fake
def _(cleans, outs, seed_lo, seed_hi, draw, indices, sigma):
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


def perturb_weights_many(cleans, outs, *, seed, draw, indices, sigma):
    """``perturb_weights`` for every (clean, out, index): one launch per dtype (a multi-tensor kernel)."""
    cleans, outs, indices = list(cleans), list(outs), [int(i) for i in indices]
    if not len(cleans) == len(outs) == len(indices):
        raise ValueError(f"cleans, outs and indices differ in length ({len(cleans)}, {len(outs)}, {len(indices)})")
    for clean, out in zip(cleans, outs):
        if out.shape != clean.shape or out.dtype != clean.dtype or out.device != clean.device:
            raise ValueError("each out must have its clean tensor's shape, dtype and device")
    groups = dict.fromkeys((clean.device, clean.dtype) for clean in cleans)
    for device, dtype in groups:  # once per (device, dtype), not per parameter
        _check(device, dtype, kernels.get("gaussian"))
    seed_lo, seed_hi = _split_seed(seed)
    for group in groups:
        chosen = [i for i, clean in enumerate(cleans) if (clean.device, clean.dtype) == group]
        if _interpreting() and group[0].type != "cpu":  # the interpreter copies tensors: no raw device addresses
            for i in chosen:
                perturb_weights(cleans[i], outs[i], seed=seed, draw=draw, index=indices[i], sigma=sigma)
            continue
        torch.ops.fastmollify_triton.perturb_weights_many([cleans[i] for i in chosen], [outs[i] for i in chosen],
                                                          seed_lo, seed_hi, int(draw), [indices[i] for i in chosen],
                                                          float(sigma))
