"""The noise stream: a pure function of (seed, stream, sample, example, element).

Every backend implements this contract bit-for-bit (see the README, "Noise stream"):

* Generator: Philox4x32-10 (Random123), key ``(seed & 0xffffffff, seed >> 32)``,
  counter ``(j >> 2, sample, example, stream)``. Its four outputs ``o0..o3`` serve
  elements ``4g .. 4g+3`` of group ``g = j >> 2``.
* Uniform: ``u = (k + 0.5) * 2**-24`` with ``k = o >> 8``, in (0, 1). float32 cannot hold
  every such ``u`` (values above 1/2 need 25 bits), so backends carry it as the exact pair
  ``(v, upper)``: ``v = min(u, 1 - u) = (min(k, 2**24 - 1 - k) + 0.5) * 2**-24`` (exact in
  float32) and ``upper = k >= 2**23``.
* Symmetric kernels: ``z = +g(v)`` if ``upper`` else ``-g(v)``, with ``g`` the magnitude of
  the lower-tail inverse CDF (``kernels.py``), so far tails are as accurate as the centre.
* Gaussian: Box-Muller on the pairs (u0, u1) and (u2, u3): ``r = sqrt(-2 ln u_a)``
  (``ln u_a = log1p(-v_a)`` when ``upper_a`` else ``ln v_a``), ``theta = 2 pi u_b``
  (``cos theta = cos(2 pi v_b)``, ``sin theta = -+ sin(2 pi v_b)``); the elements get
  ``r cos theta`` and ``r sin theta`` in that order.
* A user kernel's ``inverse_cdf`` receives ``u`` rounded toward zero to float32:
  ``(k + 0.5) * 2**-24`` for ``k < 2**23`` and ``k * 2**-24`` above.

Streams: 0 is the first input's noise, 1 weight noise (example = parameter index, sample =
model draw), ``k + 1`` the noise of input ``k >= 1`` of a multi-input model.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "philox4x32_10",
    "split_seed",
    "random_bits",
    "symmetric_uniform",
    "input_stream",
    "WEIGHT_STREAM",
]

WEIGHT_STREAM = 1
_MASK = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_HALF = 1 << 23
_TOP = (1 << 24) - 1


def input_stream(index: int) -> int:
    """Stream number of the noise for input ``index`` of a (multi-input) model."""
    return 0 if index == 0 else index + 1


def split_seed(seed: int) -> tuple[int, int]:
    """The Philox key words of a 64-bit seed."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return seed & _MASK, seed >> 32


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * b`` for a 32-bit constant and int64 words ``b``."""
    p_lo = a * (b & 0xFFFF)  # < 2**48, exact in int64
    p_hi = a * (b >> 16)
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & _MASK
    hi = (p_hi + (p_lo >> 16)) >> 16
    return hi, lo


def philox4x32_10(counter, key) -> torch.Tensor:
    """Philox4x32-10 (Salmon et al. 2011, Random123), in int64 torch arithmetic.

    ``counter``: integers of shape ``[..., 4]``, ``key``: ``[..., 2]`` (tensors or nested
    sequences, each word in [0, 2**32)). Returns int64 words of shape ``[..., 4]``.
    """
    counter = torch.as_tensor(counter, dtype=torch.int64)
    key = torch.as_tensor(key, dtype=torch.int64, device=counter.device)
    if counter.shape[-1:] != (4,) or key.shape[-1:] != (2,):
        raise ValueError("counter must have a last dimension of 4 and key of 2")
    c0, c1, c2, c3 = counter.unbind(-1)
    k0, k1 = key.unbind(-1)
    for round_ in range(10):
        if round_:
            k0 = (k0 + _PHILOX_W[0]) & _MASK
            k1 = (k1 + _PHILOX_W[1]) & _MASK
        hi0, lo0 = _mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack(torch.broadcast_tensors(c0, c1, c2, c3), dim=-1)


def random_bits(seed: int, stream: int, samples, examples, numel: int, device=None) -> torch.Tensor:
    """The stream's 32-bit words for whole groups: int64 ``[S, B, 4 * ceil(numel / 4)]``.

    ``samples`` and ``examples`` are the global indices (1-D integer sequences or tensors).
    Callers slice ``[..., :numel]`` after any transform that works on groups (Box-Muller).
    """
    k0, k1 = split_seed(seed)
    samples = torch.as_tensor(samples, dtype=torch.int64, device=device).reshape(-1, 1, 1)
    examples = torch.as_tensor(examples, dtype=torch.int64, device=samples.device).reshape(1, -1, 1)
    groups = torch.arange((numel + 3) // 4, dtype=torch.int64, device=samples.device).reshape(1, 1, -1)
    counter = torch.stack(torch.broadcast_tensors(groups, samples, examples, torch.full_like(groups, stream)), -1)
    words = philox4x32_10(counter, torch.tensor([k0, k1], dtype=torch.int64, device=samples.device))
    return words.flatten(-2)


def symmetric_uniform(bits: torch.Tensor, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact ``(v, upper)`` form of the stream's uniforms (see the module docstring)."""
    k = bits >> 8
    upper = k >= _HALF
    v = (torch.where(upper, _TOP - k, k).to(dtype) + 0.5) * 2.0**-24
    return v, upper


def user_uniform(bits: torch.Tensor) -> torch.Tensor:
    """The float32 uniform a user kernel's ``inverse_cdf`` receives (rounded toward zero)."""
    k = bits >> 8
    return (k.to(torch.float32) + torch.where(k < _HALF, 0.5, 0.0)) * 2.0**-24


def box_muller(v: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Gaussian noise from the ``(v, upper)`` uniforms of whole groups of four (last dim)."""
    shape = v.shape
    v = v.reshape(*shape[:-1], -1, 2, 2)  # [..., group, pair, (a, b)]
    upper = upper.reshape(v.shape)
    v_a, v_b = v.unbind(-1)
    up_a, up_b = upper.unbind(-1)
    log_u = torch.where(up_a, torch.log1p(-v_a), torch.log(v_a))
    radius = torch.sqrt(-2.0 * log_u)
    angle = (2.0 * math.pi) * v_b
    sin = torch.sin(angle)
    return torch.stack((radius * torch.cos(angle), radius * torch.where(up_b, -sin, sin)), -1).reshape(shape)
