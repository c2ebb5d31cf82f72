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

from . import checks, engine, methods
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
    stats = Stats(mean=mean.float(), m2=torch.zeros_like(mean, dtype=torch.float32), n=n,
                  backend=stats_like.backend, seed=stats_like.seed)
    count = stats.counts()
    stats.m2 = (var_of_mean * count * (count - 1)).float()  # Stats.stderr = sqrt(m2 / (n - 1) / n)
    return stats


def _check(reduce, inner_options, what: str):
    checks.choice("reduce", reduce, ("mean", "stats"))
    if inner_options.get("layer") is not None:
        raise ValueError(f"{what} multiplies the gradient by the inputs: it needs input gradients, not layer=")


def gradient_x_input(model, inputs, target=None, *, inner="smoothgrad", reduce: str = "mean", **inner_options):
    """``x * G(x)``, G the inner (smoothed) gradient. Its standard error is ``|x| * stderr(G)``."""
    x = _tensor(inputs, "gradient_x_input")
    _check(reduce, inner_options, "gradient_x_input")
    g = _stats(_inner(inner)(model, x, target, reduce="stats", **inner_options))
    xf = x.detach().float()
    return _finish(xf * g.mean, xf**2 * g.stderr**2, g.n, reduce, x.dtype, g)


def _baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    try:
        x0 = torch.as_tensor(checks.scalar(baseline), dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"baseline must be None, a number or a tensor broadcastable to inputs, got "
                        f"{type(baseline).__name__}") from None
    try:
        return x0.expand_as(x)
    except RuntimeError:
        raise ValueError(f"baseline has shape {tuple(x0.shape)}, which does not broadcast to inputs "
                         f"{tuple(x.shape)}: pass a number, one example's shape {tuple(x.shape[1:])}, or inputs' "
                         f"shape") from None


def _per_step(arg, batch: int, steps: int):
    """A per-example forward argument repeated for each example's steps (example-major)."""
    if torch.is_tensor(arg) and arg.dim() > 0 and arg.shape[0] == batch:
        return arg.repeat_interleave(steps, dim=0)
    return arg


def integrated_gradients(model, inputs, target=None, *, inner="smoothgrad", steps: int = 16, baseline=None,
                         reduce: str = "mean", additional_forward_args=None, example_offset: int = 0,
                         **inner_options):
    """``(x - x0) * (1/steps) sum_k G(x0 + a_k (x - x0))``, a_k = (k + 1/2)/steps (midpoint rule).

    ``baseline`` x0: None (zeros), a number or a tensor broadcastable to ``inputs``. All the
    ``B * steps`` interpolated inputs go to the inner method in one call, example-major: step k
    of the example with global index g (``example_offset`` + its position) is inner example
    ``g * steps + k``, so each example's map depends only on (seed, g, steps), whatever the batch
    split. Per-example ``additional_forward_args`` and targets are repeated for the steps. For
    AdaptGrad/ClipGrad pass ``bounds``: the default (the inputs' min and max) is taken over all
    interpolated inputs. Its standard error is the spread of the IG map over the inner method's
    independent units (samples, antithetic pairs, or weight draws, which all steps share).
    ``tol`` is refused: examples of the inner call are path points, which must not stop apart.
    """
    x = _tensor(inputs, "integrated_gradients")
    _check(reduce, inner_options, "integrated_gradients")
    steps = checks.positive_int("steps", steps)
    x0 = _baseline(baseline, x)
    b = x.shape[0]
    offset = checks.stream_index("example_offset", example_offset, b)
    checks.stream_index("example_offset * steps", offset * steps, b * steps, " (integrated_gradients gives each "
                        "example steps indices)")
    target = checks.target(target, b, x.device)
    if inner_options.get("tol") is not None:
        raise ValueError("tol stops examples apart; integrated_gradients needs every path point sampled alike: "
                         "drop tol (or use it with the method directly)")
    options = dict(inner_options, example_offset=offset * steps) if offset else dict(inner_options)
    if additional_forward_args is not None:
        extra = additional_forward_args if isinstance(additional_forward_args, (tuple, list)) else \
            (additional_forward_args,)
        options["additional_forward_args"] = tuple(_per_step(a, b, steps) for a in extra)
    alphas = (torch.arange(steps, dtype=torch.float64, device=x.device) + 0.5) / steps
    shape = (1, steps) + (1,) * (x.dim() - 1)
    path = x0.detach().unsqueeze(1) + alphas.to(x.dtype).reshape(shape) * (x - x0).detach().unsqueeze(1)
    path = path.reshape(b * steps, *x.shape[1:])
    path_target = None if target is None else target.repeat_interleave(steps)
    diff = (x - x0).detach().float()

    def compose(unit_means):  # [U, B * steps, ...] -> the IG map of each independent unit [U, B, ...]
        return diff * unit_means.reshape(unit_means.shape[0], b, steps, *x.shape[1:]).mean(2)

    try:
        with engine.composed_units(compose):
            g = _stats(_inner(inner)(model, path, path_target, reduce="stats", **options))
    except ValueError as error:  # speak of the user's batch, not of the B * steps path points
        raise ValueError(str(error).replace(f"B = {b * steps}", f"B = {b} (x {steps} path steps)")) from None
    mean = diff * g.mean.reshape(b, steps, *x.shape[1:]).mean(1)
    if g.composed is None:  # a callable that returned a map: no error estimate
        return _finish(mean, torch.full_like(mean, float("nan")), 1.0, reduce, x.dtype, g)
    units = g.composed
    return _finish(mean, (units.stderr**2).reshape(x.shape), units.n, reduce, x.dtype, g)
