"""Studies beyond the tables: paper 1's eps and alpha sweeps, the N sweep, tol-driven N, antithetic
efficiency, paper 2's extra-noise share and ClipGrad's bias against a high-N reference."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from .. import kernels, methods
from .config import ADAPT_CS, KERNELS, Config, DEFAULT
from .measure import evaluate_method
from .specs import _input_noise

__all__ = ["eps_sweep", "alpha_sweep", "nsweep", "tol_n", "antithetic", "kernel_cdf", "extra_noise", "clip_bias"]

SWEEP_METRICS = ("consistency", "invariance", "localisation", "sparseness")


def _sweep(env, cfg: Config, log, points: dict) -> dict:
    out = {}
    small = dict(shapes_images=cfg.sweep_shapes_images, digits_images=cfg.sweep_digits_images, faithfulness=False,
                 pic=False)
    swept = Config(**{**cfg.__dict__, "n": cfg.sweep_n})
    for kernel in KERNELS:
        rows = {m: [] for m in SWEEP_METRICS}
        rows["se"] = {m: [] for m in SWEEP_METRICS}
        for value, options in points[kernel]:
            res = evaluate_method(_input_noise("mollify", swept, DEFAULT, kernel=kernel, **options), env, swept, DEFAULT,
                                  **small)
            for m in SWEEP_METRICS:
                v = res[m][np.isfinite(res[m])]
                rows[m].append(float(v.mean()))
                rows["se"][m].append(float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))
        out[kernel] = rows
    return out


def eps_sweep(env, cfg: Config, log) -> dict:
    """Paper 1's Table 2: each kernel's metrics against r (eps from (r, alpha)), r a share of the data range."""
    t = time.perf_counter()
    res = _sweep(env, cfg, log, {k: [(r, dict(r=r, alpha=cfg.kernel_alpha)) for r in cfg.sweep_r] for k in KERNELS})
    log(f"  eps sweep: {time.perf_counter() - t:.1f} s")
    return dict(r=list(cfg.sweep_r), alpha=cfg.kernel_alpha, kernels=res,
                eps={k: [kernels.get(k).eps_from(r, cfg.kernel_alpha) for r in cfg.sweep_r] for k in KERNELS})


def alpha_sweep(env, cfg: Config, log) -> dict:
    """Paper 1's Figure 5: each kernel's metrics against alpha at r = cfg.kernel_r."""
    t = time.perf_counter()
    res = _sweep(env, cfg, log, {k: [(a, dict(r=cfg.kernel_r, alpha=a)) for a in cfg.sweep_alpha] for k in KERNELS})
    log(f"  alpha sweep: {time.perf_counter() - t:.1f} s")
    return dict(alpha=list(cfg.sweep_alpha), r=cfg.kernel_r, kernels=res,
                eps={k: [kernels.get(k).eps_from(cfg.kernel_r, a) for a in cfg.sweep_alpha] for k in KERNELS})


def _runs(model, x, y, cfg: Config) -> dict:
    """label -> f(n, **options) returning Stats: the methods whose Monte Carlo error is studied."""
    b, level, r = (0.0, 1.0), cfg.noise_level, cfg.kernel_r
    runs = {
        "SmoothGrad": lambda n, **o: methods.smoothgrad(model, x, y, n=n, noise_level=level, bounds=b, reduce="stats",
                                                        **o),
        "ClipGrad": lambda n, **o: methods.clipgrad(model, x, y, n=n, noise_level=level, bounds=b, reduce="stats", **o),
        "AdaptGrad c=0.95": lambda n, **o: methods.adaptgrad(model, x, y, n=n, c=0.95, bounds=b, reduce="stats", **o),
        "AdaptGrad c=0.999": lambda n, **o: methods.adaptgrad(model, x, y, n=n, c=0.999, bounds=b, reduce="stats",
                                                              **o),
    }
    for kernel in KERNELS:
        runs[f"mollify {kernel} (r={r:g})"] = (lambda k: lambda n, **o: methods.mollify(
            model, x, y, kernel=k, r=r, alpha=cfg.kernel_alpha, n=n, reduce="stats", **o))(kernel)
    for kernel in KERNELS:
        runs[f"mollify {kernel} adaptive"] = (lambda k: lambda n, **o: methods.mollify(
            model, x, y, kernel=k, adaptive=True, alpha=cfg.kernel_alpha, bounds=b, n=n, reduce="stats", **o))(kernel)
    runs["NoiseGrad (N = m)"] = lambda n, **o: methods.noisegrad(model, x, y, m=n, reduce="stats", **o)
    runs["FusionGrad (N = m·n, m = n)"] = lambda n, **o: methods.fusiongrad(
        model, x, y, m=max(1, round(math.sqrt(n))), n=max(1, round(math.sqrt(n))), noise_level=level, bounds=b,
        reduce="stats", **o)
    return runs


def nsweep(env, cfg: Config, log) -> dict:
    """Mean standard error (and relative to mean |map|) against the gradient count (shapes)."""
    model, x, y = env["shapes"], env["sx"][:cfg.nsweep_images], env["sy"][:cfg.nsweep_images]
    out = {}
    for name, fn in _runs(model, x, y, cfg).items():
        if "adaptive" in name and "gaussian" not in name:
            continue  # the N sweep keeps one adaptive kernel; tol_n covers all of them
        t = time.perf_counter()
        ns, se, rel = [], [], []
        for n in cfg.nsweep_ns:
            if name.startswith("FusionGrad") and round(math.sqrt(n)) ** 2 != n:
                continue
            st = fn(n)
            ns.append(int(st.n) if not name.startswith("NoiseGrad") else n)
            ns[-1] = n
            se.append(float(st.stderr.mean()))
            rel.append(float(st.stderr.mean() / st.mean.abs().mean()))
        fit = [i for i, n in enumerate(ns) if n >= 8] if sum(n >= 8 for n in ns) > 1 else list(range(len(ns)))
        slope = (float(np.polyfit(np.log([ns[i] for i in fit]), np.log([se[i] for i in fit]), 1)[0])
                 if len(fit) > 1 else float("nan"))
        out[name] = dict(n=ns, stderr=se, relative=rel, slope=slope)
        log(f"  N sweep {name}: slope {slope:.3f} ({time.perf_counter() - t:.1f} s)")
    return out


def tol_n(env, cfg: Config, log) -> dict:
    """Per method/kernel: the N that ``tol`` chose per image (mean, min, max), capped at ``tol_cap``."""
    model, x, y = env["shapes"], env["sx"][:cfg.tol_images], env["sy"][:cfg.tol_images]
    out = {}
    t = time.perf_counter()
    for name, fn in _runs(model, x, y, cfg).items():
        if name.startswith("FusionGrad"):
            st = methods.fusiongrad(model, x, y, m=cfg.tol_cap // 16 or 2, n=16, noise_level=cfg.noise_level,
                                    bounds=(0.0, 1.0), tol=cfg.tol, reduce="stats")
            name = "FusionGrad (n = 16 per draw)"
        else:
            st = fn(cfg.tol_cap, tol=cfg.tol) if not name.startswith("NoiseGrad") else methods.noisegrad(
                model, x, y, m=cfg.tol_cap, tol=cfg.tol, reduce="stats")
        n = st.n if torch.is_tensor(st.n) else torch.full((len(x),), float(st.n))
        if name.startswith("FusionGrad"):
            n = n.float()
        rel = (st.stderr.flatten(1).pow(2).sum(1) / st.mean.flatten(1).pow(2).sum(1)).sqrt()
        out[name] = dict(mean_n=float(n.float().mean()), min_n=float(n.min()), max_n=float(n.max()),
                         reached=float((rel <= cfg.tol * (1 + 1e-6)).float().mean()))
    log(f"  tol-driven N: {time.perf_counter() - t:.1f} s")
    return dict(tol=cfg.tol, cap=cfg.tol_cap, images=cfg.tol_images, methods=out)


def antithetic(env, cfg: Config, log) -> dict:
    """Variance ratio of plain to antithetic sampling at equal N (> 1: antithetic pairs help)."""
    model, x, y = env["shapes"], env["sx"][:cfg.antithetic_images], env["sy"][:cfg.antithetic_images]
    out = {}
    t = time.perf_counter()
    for name, fn in _runs(model, x, y, cfg).items():
        if name.startswith("FusionGrad") or name.startswith("ClipGrad") or "adaptive" in name:
            continue
        if name.startswith("NoiseGrad"):
            plain = methods.noisegrad(model, x, y, m=cfg.antithetic_n, reduce="stats")
            anti = methods.noisegrad(model, x, y, m=cfg.antithetic_n, antithetic=True, reduce="stats")
        else:
            plain, anti = fn(cfg.antithetic_n), fn(cfg.antithetic_n, antithetic=True)
        vp, va = float(plain.stderr.pow(2).mean()), float(anti.stderr.pow(2).mean())
        out[name] = dict(var_plain=vp, var_antithetic=va, efficiency=vp / va if va > 0 else float("inf"))
    log(f"  antithetic efficiency: {time.perf_counter() - t:.1f} s")
    return dict(n=cfg.antithetic_n, images=cfg.antithetic_images, methods=out)


# --- paper 2's extra noise and ClipGrad's bias ------------------------------------------------------

def kernel_cdf(kernel: str, t: torch.Tensor) -> torch.Tensor:
    """The CDF of a built-in kernel at scale 1 (closed forms of the densities in docs/methods.md)."""
    t = t.double()
    if kernel == "gaussian":
        return 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    if kernel == "poisson":
        return 0.5 + torch.atan(t) / math.pi
    if kernel == "hyperbolic":
        return 2 / math.pi * torch.atan(torch.exp(math.pi * t / 2))
    if kernel == "sigmoid":
        return torch.sigmoid(t)
    if kernel == "rectangular":
        return ((t + 1) / 2).clamp(0, 1)
    raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")


def _outside(kernel: str, x: torch.Tensor, eps: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Per element, P(x + eps z outside [lo, hi]); 0 where eps is 0 (an element on a bound stays)."""
    safe = torch.where(eps > 0, eps, torch.ones_like(eps))
    p = kernel_cdf(kernel, (lo - x) / safe) + 1 - kernel_cdf(kernel, (hi - x) / safe)
    return torch.where(eps > 0, p, torch.zeros_like(p))


def extra_noise(env, cfg: Config, log) -> dict:
    """Paper 2's central quantity: the share of sample elements that fall outside [0, 1], per method and c
    (exact, from each kernel's CDF at every element of the shapes test images)."""
    x = env["sx"][:cfg.noise_images].double()
    lo, hi = 0.0, 1.0
    dist = torch.minimum(x - lo, hi - x)
    rows = {}
    for level in (0.1, 0.2):
        rows[f"SmoothGrad (noise level {level})"] = _outside("gaussian", x, torch.full_like(x, level), lo, hi)
    for c in ADAPT_CS:
        rows[f"AdaptGrad c={c}"] = _outside("gaussian", x, dist * kernels.get("gaussian").eps_from(1.0, c), lo, hi)
    for kernel in KERNELS:
        eps = kernels.get(kernel).eps_from(cfg.kernel_r, cfg.kernel_alpha)
        rows[f"{kernel} (r={cfg.kernel_r:g})"] = _outside(kernel, x, torch.full_like(x, eps), lo, hi)
    for kernel in KERNELS:
        scale = kernels.get(kernel).eps_from(1.0, cfg.kernel_alpha)
        rows[f"{kernel} adaptive"] = _outside(kernel, x, dist * scale, lo, hi)
    out = {}
    for name, p in rows.items():
        per_image = p.flatten(1).mean(1)
        out[name] = dict(share=float(per_image.mean()), max_element=float(p.max()))
    log("  extra noise share: done")
    return dict(images=cfg.noise_images, methods=out)


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over images of ||a - ref|| / ||ref||."""
    return float(((a - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).mean())


def clip_bias(env, cfg: Config, log) -> dict:
    """Distance of each method's map from a high-N reference of the exact Gaussian convolution (SmoothGrad, N
    = bias_ref_n, its own seed); at N = bias_ref_n the Monte Carlo part is small, what stays is bias."""
    model, x, y = env["shapes"], env["sx"][:cfg.bias_images], env["sy"][:cfg.bias_images]
    b, level, big = (0.0, 1.0), cfg.noise_level, cfg.bias_ref_n
    t = time.perf_counter()
    ref = methods.smoothgrad(model, x, y, n=big, noise_level=level, bounds=b, seed=10_001, reduce="stats")
    out = {}
    for n in (cfg.bias_n, big):
        runs = {"SmoothGrad": methods.smoothgrad(model, x, y, n=n, noise_level=level, bounds=b, seed=1,
                                                 reduce="stats"),
                "ClipGrad": methods.clipgrad(model, x, y, n=n, noise_level=level, bounds=b, seed=1, reduce="stats"),
                "AdaptGrad c=0.95": methods.adaptgrad(model, x, y, n=n, c=0.95, bounds=b, seed=1, reduce="stats")}
        for name, st in runs.items():
            # the expected squared distance from Monte Carlo error alone: sum of both estimates' variances
            floor = ((st.stderr.pow(2) + ref.stderr.pow(2)).flatten(1).sum(1).sqrt()
                     / ref.mean.flatten(1).norm(dim=1)).mean()
            out[f"{name} N={n}"] = dict(distance=_rel(st.mean, ref.mean), monte_carlo_floor=float(floor))
    log(f"  ClipGrad bias: {time.perf_counter() - t:.1f} s")
    return dict(reference_n=big, images=cfg.bias_images, methods=out)
