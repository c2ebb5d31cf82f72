"""The compiled backends ``cpu`` and ``cuda``: the ops of ``fastmollify._C`` (csrc/).

``fastmollify._C`` registers ``torch.ops.fastmollify.{perturb, accumulate, perturb_weights}``
(schemas once, kernels for the CPU and CUDA dispatch keys); this module adds their fake
implementations (so ``torch.compile`` can trace them) and wraps them in the backend objects
``CPU`` and ``CUDA``, whose ops take exactly the reference backend's arguments.

Importing this module never fails: a missing, stale or broken ``_C`` sets ``LOAD_ERROR``,
warns once (``FASTMOLLIFY_DEBUG_EXTENSION=1`` adds the traceback) and both backends then
report why they cannot serve, so dispatch falls back to another backend.

Seeds cross the op boundary as their two Philox key words ``seed_lo = seed & 0xffffffff``
and ``seed_hi = seed >> 32`` (each fits a schema ``int``), so any seed in [0, 2**64) works.
"""
from __future__ import annotations

import math
import os
import traceback
import warnings

import torch

from .. import kernels, noise
from . import ADAPTIVE, FIXED, RANGE

__all__ = ["CPU", "CUDA", "LOAD_ERROR", "available"]

ABI_VERSION = 3  # must equal fastmollify::kAbiVersion in csrc/ops.h
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_FIRST_USER_KERNEL_ID = 100
_DEBUG_VARIABLE = "FASTMOLLIFY_DEBUG_EXTENSION"

_C = None
LOAD_ERROR: str | None = None  # why _C is unusable (None: loaded)


def _register_fakes() -> None:
    """Fake (meta) kernels: the ops mutate their outputs and return nothing."""

    @torch.library.register_fake("fastmollify::perturb")
    def _perturb_fake(x, out, lo, hi, seed_lo, seed_hi, stream, sample_start, example_offset, kernel, scale,
                      sigma_mode, clip):
        return None

    @torch.library.register_fake("fastmollify::accumulate")
    def _accumulate_fake(mean, m2, grads, weights, count):
        return None

    @torch.library.register_fake("fastmollify::perturb_weights")
    def _perturb_weights_fake(clean, out, seed_lo, seed_hi, draw, index, sigma):
        return None

    @torch.library.register_fake("fastmollify::perturb_weights_many")
    def _perturb_weights_many_fake(cleans, outs, seed_lo, seed_hi, draw, indices, sigma):
        return None


def _load() -> None:
    global _C, LOAD_ERROR
    try:
        from .. import _C as module
    except ModuleNotFoundError as error:
        if error.name not in ("fastmollify._C", None):
            LOAD_ERROR = f"fastmollify._C failed to import ({type(error).__name__}: {error})"
        else:
            LOAD_ERROR = ("the compiled extension fastmollify._C is not built "
                          "(pip install --no-build-isolation -e . builds it)")
        details = traceback.format_exc()
    except Exception as error:  # noqa: BLE001 - a broken build may raise anything (OSError, ...)
        LOAD_ERROR = f"fastmollify._C failed to import ({type(error).__name__}: {error})"
        details = traceback.format_exc()
    else:
        version = getattr(module, "ABI_VERSION", None)
        if version != ABI_VERSION:
            LOAD_ERROR = (f"fastmollify._C is stale (ABI version {version}, this package needs {ABI_VERSION}); "
                          "rebuild it with pip install --no-build-isolation -e .")
            details = ""
        else:
            try:
                _register_fakes()
            except Exception as error:  # noqa: BLE001
                LOAD_ERROR = f"fastmollify._C's ops could not be set up ({type(error).__name__}: {error})"
                details = traceback.format_exc()
            else:
                _C = module
                return
    message = f"fastmollify: {LOAD_ERROR}; the cpu and cuda backends are off and other backends serve."
    if os.environ.get(_DEBUG_VARIABLE, "").strip() not in ("", "0"):
        message += "\n" + details
    else:
        message += f" Set {_DEBUG_VARIABLE}=1 to see the traceback."
    warnings.warn(message, RuntimeWarning, stacklevel=3)


_load()


def available() -> bool:
    """Whether fastmollify._C loaded."""
    return _C is not None


def _kernel(kernel) -> kernels.Kernel:
    if isinstance(kernel, kernels.Kernel):
        return kernel
    if isinstance(kernel, str):
        return kernels.get(kernel)
    return kernels.by_id(int(kernel))


def _kernel_id(kernel) -> int:
    if isinstance(kernel, (kernels.Kernel, str)):
        kernel = _kernel(kernel)
        if not kernel.builtin:
            raise ValueError(f"kernel {kernel.name!r} is a user kernel: the compiled backends serve the built-in "
                             f"kernels only ({', '.join(kernels.BUILTIN)})")
        return kernel.id
    kernel = int(kernel)
    if not 0 <= kernel < len(kernels.BUILTIN):
        raise ValueError(f"kernel id {kernel} is not a built-in kernel: the compiled backends serve ids "
                         f"0..{len(kernels.BUILTIN) - 1}")
    return kernel


def _bound(bound, like: torch.Tensor):
    """lo/hi as the op wants them: None, or a contiguous flat float32 tensor on x's device."""
    if bound is None:
        return None
    bound = torch.as_tensor(bound, dtype=torch.float32, device=like.device)
    return bound.reshape(-1).contiguous() if bound.numel() else None


class _Backend:
    """A compiled backend: ``cpu`` or ``cuda`` (the same ops, one device type each)."""

    def __init__(self, name: str, device_type: str):
        self.name = name
        self.device_type = device_type

    def __repr__(self):
        return f"<fastmollify backend {self.name!r}>"

    def unavailable(self, device, dtype, kernel) -> str | None:
        """Why this backend cannot serve ``dtype`` tensors on ``device`` with ``kernel`` (None: it can)."""
        if _C is None:
            return LOAD_ERROR
        device = torch.device(device)
        if self.device_type == "cuda" and not _C.WITH_CUDA:
            return ("fastmollify._C was built without its CUDA part (no CUDA toolkit or CUDA torch at build "
                    "time, or FASTMOLLIFY_NO_CUDA=1)")
        if device.type != self.device_type:
            return f"the {self.name} backend serves {self.device_type} tensors, not {device.type} ones"
        if self.device_type == "cuda" and not torch.cuda.is_available():
            return "no CUDA device is available"
        if dtype not in DTYPES:
            return f"dtype {dtype} is not supported (float32, float16, bfloat16, float64 are)"
        kernel = _kernel(kernel)
        if not kernel.builtin or kernel.id >= _FIRST_USER_KERNEL_ID:
            return (f"kernel {kernel.name!r} is a user kernel; compiled backends serve the built-in kernels only "
                    "(the triton backend fuses a user kernel given triton_inverse_cdf; the reference serves any)")
        return None

    def _check(self, *tensors):
        if _C is None:
            raise RuntimeError(f"the {self.name} backend is unavailable: {LOAD_ERROR}")
        for tensor in tensors:
            if tensor is not None and tensor.device.type != self.device_type:
                raise RuntimeError(f"the {self.name} backend serves {self.device_type} tensors, got one on "
                                   f"{tensor.device}")

    def perturb(self, x, out, lo, hi, *, seed, stream, sample_start, example_offset, kernel, scale, sigma_mode,
                clip):
        """``out[s, b] = x[b] + sigma * z`` (see fastmollify.ops); x ``[B, ...]``, out ``[S, B, ...]``."""
        self._check(x, out)
        seed_lo, seed_hi = noise.split_seed(seed)
        if sigma_mode not in (FIXED, RANGE, ADAPTIVE):
            raise ValueError(f"unknown sigma_mode {sigma_mode!r}")
        batch, numel = x.shape[0], math.prod(x.shape[1:])
        x2 = x.contiguous().reshape(batch, numel)
        target = out if out.is_contiguous() else torch.empty(out.shape, dtype=out.dtype, device=out.device)
        torch.ops.fastmollify.perturb(
            x2, target.view(target.shape[0], batch, numel), _bound(lo, x), _bound(hi, x), seed_lo, seed_hi,
            int(stream), int(sample_start), int(example_offset), _kernel_id(kernel), float(scale), int(sigma_mode),
            bool(clip))
        if target is not out:
            out.copy_(target)

    def accumulate(self, mean, m2, grads, weights, count):
        """Merge ``grads[S, ...]`` (optional per-sample ``weights[S]``) into ``mean``/``m2`` in place."""
        self._check(mean, m2, grads)
        if weights is not None:
            weights = weights.to(device=grads.device, dtype=torch.float32).reshape(-1).contiguous()
        mean_t = mean if mean.is_contiguous() else mean.contiguous()
        m2_t = m2 if m2.is_contiguous() else m2.contiguous()
        torch.ops.fastmollify.accumulate(mean_t, m2_t, grads.contiguous(), weights, float(count))
        if mean_t is not mean:
            mean.copy_(mean_t)
        if m2_t is not m2:
            m2.copy_(m2_t)

    def perturb_weights(self, clean, out, *, seed, draw, index, sigma):
        """``out = clean * (1 + sigma * z)`` with the weight stream's Gaussian ``z`` (row-major order)."""
        self._check(clean, out)
        seed_lo, seed_hi = noise.split_seed(seed)
        target = out if out.is_contiguous() else torch.empty(out.shape, dtype=out.dtype, device=out.device)
        torch.ops.fastmollify.perturb_weights(clean.contiguous(), target, seed_lo, seed_hi, int(draw), int(index),
                                              float(sigma))
        if target is not out:
            out.copy_(target)

    def perturb_weights_many(self, cleans, outs, *, seed, draw, indices, sigma):
        """``perturb_weights`` for every (clean, out, index): one op call per dtype (one launch on the GPU)."""
        cleans, outs, indices = list(cleans), list(outs), [int(i) for i in indices]
        if not len(cleans) == len(outs) == len(indices):
            raise ValueError(f"cleans, outs and indices differ in length ({len(cleans)}, {len(outs)}, {len(indices)})")
        self._check(*cleans, *outs)
        seed_lo, seed_hi = noise.split_seed(seed)
        targets = [out if out.is_contiguous() else torch.empty(out.shape, dtype=out.dtype, device=out.device)
                   for out in outs]
        for dtype in dict.fromkeys(clean.dtype for clean in cleans):
            chosen = [i for i, clean in enumerate(cleans) if clean.dtype == dtype]
            torch.ops.fastmollify.perturb_weights_many([cleans[i].contiguous() for i in chosen],
                                                       [targets[i] for i in chosen], seed_lo, seed_hi, int(draw),
                                                       [indices[i] for i in chosen], float(sigma))
        for target, out in zip(targets, outs):
            if target is not out:
                out.copy_(target)


CPU = _Backend("cpu", "cpu")
CUDA = _Backend("cuda", "cuda")
