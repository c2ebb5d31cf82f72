"""The reference backend: the three ops in plain PyTorch, on any device. The oracle.

It follows ``fastmollify.noise`` literally and computes statistics in float64, so every
compiled backend is tested against it.
"""
from __future__ import annotations

import torch

from .. import kernels, noise
from . import ADAPTIVE, FIXED, RANGE

name = "reference"


def unavailable(device: torch.device, dtype: torch.dtype, kernel: kernels.Kernel):
    """Why this backend cannot serve (never: it runs everywhere)."""
    return None


def opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def stream_noise(kernel: kernels.Kernel, seed: int, stream: int, samples, examples, numel: int,
                 dtype=torch.float32, device=None) -> torch.Tensor:
    """The stream's samples of ``kernel`` (scale 1): ``[S, B, numel]`` in ``dtype``."""
    bits = noise.random_bits(seed, stream, samples, examples, numel, device)
    if not kernel.builtin:
        return kernel.inverse_cdf(noise.user_uniform(bits)).to(dtype)[..., :numel]
    v, upper = noise.symmetric_uniform(bits, dtype)
    if kernel.name == "gaussian":
        return noise.box_muller(v, upper)[..., :numel]
    magnitude = kernel.magnitude(v)
    return torch.where(upper, magnitude, -magnitude)[..., :numel]


def perturb(x, out, lo, hi, *, seed, stream, sample_start, example_offset, kernel, scale, sigma_mode, clip):
    kernel = kernels.get(kernel) if isinstance(kernel, str) else kernels.by_id(kernel)
    batch, numel = x.shape
    acc = opmath(x.dtype)
    xs = x.to(acc)
    if sigma_mode == FIXED:
        sigma = torch.tensor(scale, dtype=acc)
    elif sigma_mode == RANGE:
        sigma = (hi.to(acc) - lo.to(acc)) * scale
    elif sigma_mode == ADAPTIVE:
        sigma = torch.minimum(xs - lo.to(acc), hi.to(acc) - xs) * scale
    else:
        raise ValueError(f"unknown sigma_mode {sigma_mode!r}")
    examples = torch.arange(example_offset, example_offset + batch, device=x.device)
    for s in range(out.shape[0]):
        z = stream_noise(kernel, seed, stream, [sample_start + s], examples, numel, acc, x.device)[0]
        noisy = xs + sigma * z
        if clip:
            noisy = torch.clamp(noisy, lo.to(acc), hi.to(acc))
        out[s].copy_(noisy)


def accumulate(mean, m2, grads, weights, count):
    g = grads.to(torch.float64)
    w = torch.ones(g.shape[0], dtype=torch.float64, device=g.device) if weights is None else weights.double()
    w = w.reshape(-1, *([1] * (g.dim() - 1)))
    total = float(w.sum())
    if total == 0:
        return
    chunk_mean = (w * g).sum(0) / total
    chunk_m2 = (w * (g - chunk_mean) ** 2).sum(0)
    merged = count + total
    delta = chunk_mean - mean.double()
    mean.copy_(mean.double() + delta * (total / merged))
    m2.copy_(m2.double() + chunk_m2 + delta**2 * (count * total / merged))


def perturb_weights(clean, out, *, seed, draw, index, sigma):
    acc = opmath(clean.dtype)
    z = stream_noise(kernels.get("gaussian"), seed, noise.WEIGHT_STREAM, [draw], [index], clean.numel(), acc,
                     clean.device)
    out.copy_((clean.to(acc).reshape(-1) * (1 + sigma * z.reshape(-1))).reshape(clean.shape))


def perturb_weights_many(cleans, outs, *, seed, draw, indices, sigma):
    for clean, out, index in zip(cleans, outs, indices, strict=True):
        perturb_weights(clean, out, seed=seed, draw=draw, index=index, sigma=sigma)
