"""The methods of each table as functions ``spec(model, x, target, ctx, offset) -> maps`` under a protocol.

``ctx`` (``Ctx``) carries the data range and the bounds the adaptive noise uses; ``offset`` is
the global index of ``x[0]`` (``example_offset``), so an image's noise does not depend on the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import compose, methods, models
from ..stats import Stats
from .config import ADAPT_CS, KERNELS, Config, Protocol

__all__ = ["Ctx", "paper1", "paper2", "zoo", "authors_ig"]


@dataclass(frozen=True)
class Ctx:
    bounds: tuple  # the data range [lo, hi]: noise level, ClipGrad's clamp, the default IG baseline (lo)
    adaptive_bounds: tuple  # bounds of AdaptGrad / adaptive kernels
    ig_bounds: tuple  # bounds of AdaptGrad inside the authors' IG (the path runs from the baselines 0 and 1)


def _mean(result) -> torch.Tensor:
    return (result.mean if isinstance(result, Stats) else result).detach().float()


def _clean(model, x, t, proto: Protocol, offset):
    return methods.gradient(model, x, t, output=proto.output).detach().float()


def _with_clean(stats: Stats, model, x, t, proto: Protocol, offset) -> torch.Tensor:
    """The authors' N + 1 average: ``(N mean + clean gradient) / (N + 1)``, or the mean."""
    if not proto.include_clean:
        return _mean(stats)
    n = float(stats.n)
    return (n * stats.mean.float() + _clean(model, x, t, proto, offset)) / (n + 1)


def _noise_params(model, proto: Protocol):
    if not proto.skip_classifier:
        return None
    skip = set(models.classifier_params(model))
    return [name for name, p in model.named_parameters() if name not in skip and p.is_floating_point()] or None


def authors_ig(model, x, t, *, baseline: float, inner: str, proto: Protocol, steps: int, offset: int, **inner_options):
    """The AdaptGrad authors' IG: ``(x - x0) * mean(g(x), G(x0 + (i/steps)(x - x0)) for i < steps)``.

    ``steps`` left-Riemann points from the baseline plus the clean gradient at x (``steps + 1``
    gradients, equal weights); ``G`` the inner method (its own N + 1 average under the protocol).
    """
    b = x.shape[0]
    x0 = torch.full_like(x, float(baseline))
    alphas = torch.arange(steps, dtype=x.dtype) / steps
    path = (x0.unsqueeze(1) + alphas.reshape(1, steps, *[1] * (x.dim() - 1)) * (x - x0).unsqueeze(1))
    path = path.reshape(b * steps, *x.shape[1:])
    tp = t.repeat_interleave(steps)
    common = dict(output=proto.output, example_offset=offset * steps)
    if inner == "gradient":
        g = methods.gradient(model, path, tp, output=proto.output).detach().float()
    else:
        fn = getattr(methods, inner)
        st = fn(model, path, tp, reduce="stats", **common, **inner_options)
        g = _with_clean(st, model, path, tp, proto, offset) if inner != "adaptgrad" else _mean(st)
    g = g.reshape(b, steps, *x.shape[1:])
    total = g.sum(1) + _clean(model, x, t, proto, offset)
    return (x - x0).float() * total / (steps + 1)


def _input_noise(fn_name, cfg: Config, proto: Protocol, **options):
    """SmoothGrad / ClipGrad / mollify / AdaptGrad as a spec (N + 1 under the authors' protocol)."""
    def spec(model, x, t, ctx: Ctx, offset):
        opts = dict(options)
        if fn_name in ("smoothgrad", "clipgrad"):
            opts.update(noise_level=cfg.noise_level, bounds=ctx.bounds)
        if fn_name == "adaptgrad" or opts.get("adaptive"):
            opts["bounds"] = ctx.adaptive_bounds
        if fn_name == "mollify" and "r" in opts:
            opts["r"] = opts["r"] * float(ctx.bounds[1] - ctx.bounds[0])
        if fn_name == "adaptgrad" and proto.include_clean:
            opts["include_clean"] = True
        st = getattr(methods, fn_name)(model, x, t, n=cfg.n, seed=cfg.seed, example_offset=offset, reduce="stats",
                                       output=proto.output, **opts)
        return _mean(st) if fn_name == "adaptgrad" else _with_clean(st, model, x, t, proto, offset)
    return spec


def _grad(proto: Protocol):
    return lambda model, x, t, ctx, offset: _clean(model, x, t, proto, offset)


def _noisegrad(cfg: Config, proto: Protocol):
    m = cfg.authors_m if proto.name == "authors" else cfg.m

    def spec(model, x, t, ctx, offset):
        st = methods.noisegrad(model, x, t, m=m, seed=cfg.seed, example_offset=offset, reduce="stats",
                               output=proto.output, params=_noise_params(model, proto))
        return _with_clean(st, model, x, t, proto, offset)
    return spec


def _fusiongrad(cfg: Config, proto: Protocol):
    fm, fn = cfg.fusion

    def spec(model, x, t, ctx, offset):
        return _mean(methods.fusiongrad(model, x, t, m=fm, n=fn, noise_level=cfg.noise_level, bounds=ctx.bounds,
                                        seed=cfg.seed, example_offset=offset, reduce="stats", output=proto.output,
                                        params=_noise_params(model, proto)))
    return spec


def _ig(cfg: Config, proto: Protocol, inner: str, baseline=None):
    """IG with an inner method: the project's midpoint rule (baseline: the data's lo), or the authors' rule."""
    def inner_options(ctx, authors: bool):
        if inner == "smoothgrad":
            return dict(n=cfg.authors_ig_n if authors else cfg.ig_n, noise_level=cfg.noise_level, bounds=ctx.bounds,
                        seed=cfg.seed)
        if inner == "adaptgrad":
            o = dict(n=cfg.authors_ig_n if authors else cfg.ig_n, c=0.95, seed=cfg.seed,
                     bounds=ctx.ig_bounds if authors else ctx.bounds)
            if authors:
                o["include_clean"] = True
            return o
        return {}

    def spec(model, x, t, ctx: Ctx, offset):
        if proto.ig == "authors":
            return authors_ig(model, x, t, baseline=baseline, inner=inner, proto=proto, steps=cfg.authors_ig_steps,
                              offset=offset, **inner_options(ctx, True))
        return _mean(compose.integrated_gradients(model, x, t, inner=inner, steps=cfg.ig_steps, baseline=ctx.bounds[0],
                                                  example_offset=offset, reduce="stats", output=proto.output,
                                                  **inner_options(ctx, False)))
    return spec


def _gxi(cfg: Config, proto: Protocol, inner: str):
    def spec(model, x, t, ctx: Ctx, offset):
        if inner == "gradient":
            return x.float() * _clean(model, x, t, proto, offset)
        return x.float() * _input_noise(inner, cfg, proto, **({"c": 0.95} if inner == "adaptgrad" else {}))(
            model, x, t, ctx, offset)
    return spec


def paper2(cfg: Config, proto: Protocol) -> dict:
    """Paper 2's rows: Grad, SmoothGrad, ClipGrad, AdaptGrad (c), NoiseGrad, FusionGrad, IG and G×I compositions."""
    specs = {"Grad": _grad(proto), "SmoothGrad": _input_noise("smoothgrad", cfg, proto),
             "ClipGrad": _input_noise("clipgrad", cfg, proto)}
    for c in ADAPT_CS:
        specs[f"AdaptGrad c={c}"] = _input_noise("adaptgrad", cfg, proto, c=c)
    specs["NoiseGrad"] = _noisegrad(cfg, proto)
    specs["FusionGrad"] = _fusiongrad(cfg, proto)
    if proto.ig == "authors":
        for inner, label in (("gradient", "IG"), ("smoothgrad", "IG + SmoothGrad"), ("adaptgrad", "IG + AdaptGrad")):
            for baseline in (0.0, 1.0):
                specs[f"{label} (x0={baseline:g})"] = _ig(cfg, proto, inner, baseline)
    else:
        specs["IG"] = _ig(cfg, proto, "gradient")
        specs["IG + SmoothGrad"] = _ig(cfg, proto, "smoothgrad")
        specs["IG + AdaptGrad"] = _ig(cfg, proto, "adaptgrad")
    specs["G×I"] = _gxi(cfg, proto, "gradient")
    specs["G×I + SmoothGrad"] = _gxi(cfg, proto, "smoothgrad")
    specs["G×I + AdaptGrad"] = _gxi(cfg, proto, "adaptgrad")
    return specs


def paper1(cfg: Config, proto: Protocol) -> dict:
    """Paper 1's rows: Grad, each kernel at eps from (r, alpha), and each kernel with adaptive=True (alpha)."""
    specs = {"Grad": _grad(proto)}
    for kernel in KERNELS:
        specs[f"{kernel} (r={cfg.kernel_r:g})"] = _input_noise("mollify", cfg, proto, kernel=kernel, r=cfg.kernel_r,
                                                               alpha=cfg.kernel_alpha)
    for kernel in KERNELS:
        specs[f"{kernel} adaptive"] = _input_noise("mollify", cfg, proto, kernel=kernel, adaptive=True,
                                                   alpha=cfg.kernel_alpha)
    return specs


def zoo(cfg: Config, proto: Protocol) -> dict:
    """The rows run on the other models (small ResNet, MLP): the main methods, no compositions with noise."""
    p2 = paper2(cfg, proto)
    keep = ["Grad", "SmoothGrad", "ClipGrad", "AdaptGrad c=0.95", "NoiseGrad", "G×I"]
    keep += ["IG (x0=0)", "IG (x0=1)"] if proto.ig == "authors" else ["IG"]
    out = {k: p2[k] for k in keep}
    out[f"poisson (r={cfg.kernel_r:g})"] = paper1(cfg, proto)[f"poisson (r={cfg.kernel_r:g})"]
    return out
