"""Integrated Gradients and Gradient x Input with any fastmollify method as the inner gradient.

>>> integrated_gradients(model, x, target, inner="adaptgrad", steps=16, c=0.95, bounds=(0, 1), n=20)
>>> gradient_x_input(model, x, target, inner="smoothgrad", n=50)

``inner`` is a method name ('gradient', 'smoothgrad', 'mollify', 'adaptgrad', 'clipgrad',
'noisegrad', 'fusiongrad') or a callable with a method's signature ``(model, inputs,
target, **options)``; the remaining keyword arguments go to it (``n``, ``seed``, ``bounds``,
...). ``reduce``: 'mean' (the map) or 'stats' (a ``Stats`` whose ``stderr`` is the Monte
Carlo standard error of the composed map). Single-tensor inputs only.
"""
from __future__ import annotations

import torch

from . import checks, methods
from .stats import Stats

__all__ = ["integrated_gradients", "gradient_x_input", "INNER_METHODS"]

INNER_METHODS = ("gradient", "smoothgrad", "mollify", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad")


def _inner(inner):
    if callable(inner):
        return inner
    if inner not in INNER_METHODS:
        raise ValueError(f"unknown inner method {inner!r}; choose one of {', '.join(INNER_METHODS)} or pass a callable")
    return getattr(methods, inner)


def _tensor(inputs, what: str) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{what} takes one input tensor [B, ...], got {type(inputs).__name__}")
    if inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError(f"{what}: inputs must be a non-empty batch [B, ...], got shape {tuple(inputs.shape)}")
    return inputs


def _stats(result) -> Stats:
    if isinstance(result, Stats):
        return result
    # a user callable that ignores reduce='stats': its map with no error estimate
    return Stats(mean=result.float(), m2=torch.zeros_like(result, dtype=torch.float32), n=1.0)


def _finish(mean, var_of_mean, n, reduce, dtype, stats_like: Stats):
    """The composed map, or a Stats whose stderr is ``sqrt(var_of_mean)`` (``m2`` scaled to match)."""
    if reduce == "mean":
        return mean.to(dtype)
    m2 = var_of_mean * n * max(n - 1, 1)  # Stats.stderr = sqrt(m2 / (n - 1) / n)
    return Stats(mean=mean.float(), m2=m2.float(), n=n, backend=stats_like.backend, seed=stats_like.seed)


def _check_reduce(reduce):
    checks.choice("reduce", reduce, ("mean", "stats"))


def gradient_x_input(model, inputs, target=None, *, inner="smoothgrad", reduce: str = "mean", **inner_options):
    """``x * G(x)``, G the inner (smoothed) gradient. Its standard error is ``|x| * stderr(G)``."""
    x = _tensor(inputs, "gradient_x_input")
    _check_reduce(reduce)
    g = _stats(_inner(inner)(model, x, target, reduce="stats", **inner_options))
    xf = x.detach().float()
    return _finish(xf * g.mean, xf**2 * g.stderr**2, g.n, reduce, x.dtype, g)


def integrated_gradients(model, inputs, target=None, *, inner="smoothgrad", steps: int = 16, baseline=None,
                         reduce: str = "mean", **inner_options):
    """``(x - x0) * (1/steps) sum_k G(x0 + a_k (x - x0))``, a_k = (k + 1/2)/steps (midpoint rule).

    ``baseline`` x0: None (zeros), a number or a tensor broadcastable to ``inputs``. All the
    ``steps * B`` interpolated inputs go to the inner method in one call (each gets its own
    noise: the example index runs over steps and batch). For AdaptGrad/ClipGrad pass
    ``bounds``: the default (the inputs' min and max) is taken over all interpolated inputs.
    Its standard error combines the steps' standard errors:
    ``|x - x0| * sqrt(sum_k stderr_k^2) / steps``.
    """
    x = _tensor(inputs, "integrated_gradients")
    _check_reduce(reduce)
    steps = checks.positive_int("steps", int(steps))
    x0 = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype,
                                                                      device=x.device).expand_as(x)
    b = x.shape[0]
    alphas = (torch.arange(steps, dtype=torch.float64, device=x.device) + 0.5) / steps
    shape = (steps,) + (1,) * x.dim()
    path = (x0.detach().unsqueeze(0) + alphas.to(x.dtype).reshape(shape) * (x - x0).detach().unsqueeze(0))
    path = path.reshape(steps * b, *x.shape[1:])
    if target is not None and not isinstance(target, (int, bool)):
        t = torch.as_tensor(target, device=x.device)
        if t.numel() == b > 1:  # one target per example: the same for each of its steps
            target = t.reshape(-1).repeat(steps)
    g = _stats(_inner(inner)(model, path, target, reduce="stats", **inner_options))
    mean = g.mean.reshape(steps, *x.shape).mean(0)
    var_of_mean = (g.stderr**2).reshape(steps, *x.shape).sum(0) / steps**2
    diff = (x - x0).detach().float()
    return _finish(diff * mean, diff**2 * var_of_mean, g.n, reduce, x.dtype, g)
