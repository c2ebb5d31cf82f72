"""Paper-style evaluation on the built-in data (``python -m fastmollify evaluate``).

Writes to ``out``:

* ``paper1_kernels.md``: the five mollification kernels, eps from the same (r, alpha), ×
  consistency, invariance (digits), localisation, sparseness (shapes);
* ``paper2_methods.md``: Grad, SmoothGrad, ClipGrad, AdaptGrad (c = 0.95 ... 0.999),
  NoiseGrad, FusionGrad, and SmoothGrad/AdaptGrad inside Integrated Gradients and
  Gradient×Input, × sparseness, faithfulness (insertion/deletion AUC), consistency,
  invariance, localisation (attribution mass, pointing game);
* ``nsweep.md``, ``nsweep_stderr.png``, ``nsweep_relative.png``: the Monte Carlo standard error
  against N for each method (log-log);
* ``claims.md``: the papers' claims checked on these numbers (paired per-image differences);
* ``examples_shapes.png``, ``examples_digits.png``: the maps themselves; ``results.json``:
  every number and setting.

Data and models: ``fastmollify.data`` / ``fastmollify.models`` (seeded, cached). Every value
is a mean over test images ± its standard error over images.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import compose, data, kernels, methods, metrics, models, viz
from .stats import Stats

__all__ = ["Config", "run", "FULL", "QUICK"]

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular")
ADAPT_CS = (0.95, 0.99, 0.995, 0.999)


@dataclass
class Config:
    shapes_images: int = 160  # localisation / sparseness images (shapes test set)
    faith_images: int = 80  # insertion / deletion images
    faith_steps: int = 16
    digits_images: int = 300  # consistency / invariance images (digits test split)
    n: int = 50  # input samples (SmoothGrad, ClipGrad, AdaptGrad, mollification)
    m: int = 25  # NoiseGrad weight draws
    fusion: tuple = (10, 10)  # FusionGrad (m, n)
    ig_steps: int = 8
    ig_n: int = 16  # inner samples per IG step
    noise_level: float = 0.2
    kernel_r: tuple = (0.1, 0.4)  # paper 1: eps from (r, alpha) for each kernel
    kernel_alpha: float = 0.95
    sweep_images: int = 8
    sweep_ns: tuple = (2, 4, 8, 16, 32, 64, 128, 256)
    shapes_train: dict = field(default_factory=lambda: dict(n=models.SHAPES_TRAIN["n"],
                                                            epochs=models.SHAPES_TRAIN["epochs"]))
    digits_epochs: int = models.DIGITS_TRAIN["epochs"]
    seed: int = 0


FULL = Config()
QUICK = Config(shapes_images=4, faith_images=2, faith_steps=4, digits_images=6, n=3, m=2, fusion=(2, 2), ig_steps=2,
               ig_n=2, kernel_r=(0.4,), sweep_images=2, sweep_ns=(2, 4, 8), shapes_train=dict(n=200, epochs=1),
               digits_epochs=1)


# --- the methods ---------------------------------------------------------------------------------

def _paper2_methods(cfg: Config) -> dict:
    """label -> f(model, x, y, bounds, seed) returning Stats (or a map)."""
    n, level = cfg.n, cfg.noise_level
    specs = {
        "Grad": lambda mdl, x, y, b, s: methods.gradient(mdl, x, y, reduce="stats"),
        "SmoothGrad": lambda mdl, x, y, b, s: methods.smoothgrad(mdl, x, y, n=n, noise_level=level, bounds=b,
                                                                 seed=s, reduce="stats"),
        "ClipGrad": lambda mdl, x, y, b, s: methods.clipgrad(mdl, x, y, n=n, noise_level=level, bounds=b, seed=s,
                                                             reduce="stats"),
    }
    for c in ADAPT_CS:
        specs[f"AdaptGrad c={c}"] = (lambda c: lambda mdl, x, y, b, s: methods.adaptgrad(
            mdl, x, y, c=c, n=n, bounds=b, seed=s, reduce="stats"))(c)
    fm, fn = cfg.fusion
    specs["NoiseGrad"] = lambda mdl, x, y, b, s: methods.noisegrad(mdl, x, y, m=cfg.m, seed=s, reduce="stats")
    specs["FusionGrad"] = lambda mdl, x, y, b, s: methods.fusiongrad(mdl, x, y, m=fm, n=fn, noise_level=level,
                                                                     bounds=b, seed=s, reduce="stats")
    ig = dict(steps=cfg.ig_steps, reduce="stats")
    # IG's baseline: the black image of the data range (b[0]), so the +1-shifted model gets a shifted baseline
    specs["IG"] = lambda mdl, x, y, b, s: compose.integrated_gradients(mdl, x, y, inner="gradient", baseline=b[0],
                                                                       **ig)
    specs["IG + SmoothGrad"] = lambda mdl, x, y, b, s: compose.integrated_gradients(
        mdl, x, y, inner="smoothgrad", n=cfg.ig_n, noise_level=level, bounds=b, seed=s, baseline=b[0], **ig)
    specs["IG + AdaptGrad"] = lambda mdl, x, y, b, s: compose.integrated_gradients(
        mdl, x, y, inner="adaptgrad", n=cfg.ig_n, c=0.95, bounds=b, seed=s, baseline=b[0], **ig)
    specs["G×I"] = lambda mdl, x, y, b, s: compose.gradient_x_input(mdl, x, y, inner="gradient", reduce="stats")
    specs["G×I + SmoothGrad"] = lambda mdl, x, y, b, s: compose.gradient_x_input(
        mdl, x, y, inner="smoothgrad", n=n, noise_level=level, bounds=b, seed=s, reduce="stats")
    specs["G×I + AdaptGrad"] = lambda mdl, x, y, b, s: compose.gradient_x_input(
        mdl, x, y, inner="adaptgrad", n=n, c=0.95, bounds=b, seed=s, reduce="stats")
    return specs


def _paper1_methods(cfg: Config) -> dict:
    specs = {"Grad": lambda mdl, x, y, b, s: methods.gradient(mdl, x, y, reduce="stats")}
    for r in cfg.kernel_r:
        for kernel in KERNELS:
            specs[f"{kernel} (r={r})"] = (lambda k, r: lambda mdl, x, y, b, s: methods.mollify(
                mdl, x, y, kernel=k, r=r * float(b[1] - b[0]), alpha=cfg.kernel_alpha, n=cfg.n, seed=s,
                reduce="stats"))(kernel, r)
    return specs


def _maps(spec, model, x, y, bounds, seed, batch: int = 16) -> torch.Tensor:
    """The method's maps for x, ``batch`` images per call (example_offset keeps the noise per image)."""
    out = []
    for i in range(0, len(x), batch):
        result = spec(model, x[i:i + batch], y[i:i + batch], bounds, seed + i)
        out.append((result.mean if isinstance(result, Stats) else result).detach().float())
    return torch.cat(out)


# --- the data and models ---------------------------------------------------------------------------

def _setup(cfg: Config, log):
    t = time.perf_counter()
    shapes_model = models.shapes_model(n=cfg.shapes_train["n"], epochs=cfg.shapes_train["epochs"], seed=cfg.seed)
    n_test = max(cfg.shapes_images, cfg.faith_images, cfg.sweep_images)
    sx, sy, smask = data.shapes(n_test, seed=7 + cfg.seed)
    digit_models = models.digits_models(seed=cfg.seed, epochs=cfg.digits_epochs)
    dx, dy = data.digits()
    idx = digit_models["test_idx"][:cfg.digits_images]
    dx, dy = dx[idx], dy[idx]
    acc = {"shapes": models.accuracy(shapes_model, sx, sy),
           "digits normal": models.accuracy(digit_models["normal"], dx, dy),
           "digits random labels": models.accuracy(digit_models["random"], dx, dy),
           "digits shifted +1 (on x+1)": models.accuracy(digit_models["shifted"], dx + 1, dy)}
    log(f"models ready in {time.perf_counter() - t:.1f} s; test accuracy: "
        + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return dict(shapes_model=shapes_model, sx=sx, sy=sy, smask=smask, digits=digit_models, dx=dx, dy=dy, acc=acc)


# --- one method, all metrics ------------------------------------------------------------------------

def _evaluate_method(spec, env, cfg: Config, faithfulness: bool) -> dict:
    """Per-image metric values (NumPy arrays) for one method."""
    res = {}
    sm, sx, sy, smask = env["shapes_model"], env["sx"], env["sy"], env["smask"]
    k = cfg.shapes_images
    maps = _maps(spec, sm, sx[:k], sy[:k], (0.0, 1.0), cfg.seed)
    res["sparseness"] = metrics.sparseness(maps)
    res["localisation"] = metrics.attribution_localisation(maps, smask[:k])
    res["pointing game"] = metrics.pointing_game(maps, smask[:k])
    if faithfulness:
        f = cfg.faith_images
        fd = metrics.insertion_deletion(sm, sx[:f], maps[:f], sy[:f], steps=cfg.faith_steps)
        res["insertion AUC"], res["deletion AUC"] = fd["insertion"], fd["deletion"]
    dm, dx, dy = env["digits"], env["dx"], env["dy"]
    normal = _maps(spec, dm["normal"], dx, dy, (0.0, 1.0), cfg.seed)
    random = _maps(spec, dm["random"], dx, dy, (0.0, 1.0), cfg.seed)
    shifted = _maps(spec, dm["shifted"], dx + 1.0, dy, (1.0, 2.0), cfg.seed)
    res["consistency"] = metrics.consistency(normal, random, abs=True)
    res["invariance"] = metrics.invariance(normal, shifted, abs=True)
    return {name: v.cpu().numpy().astype(np.float64) for name, v in res.items()}


ARROWS = {"sparseness": "↑", "localisation": "↑", "pointing game": "↑", "insertion AUC": "↑", "deletion AUC": "↓",
          "consistency": "↓", "invariance": "↓"}  # invariance: methods.md's direction (see INVARIANCE_NOTE)
INVARIANCE_NOTE = ("Invariance is marked lower-is-better as docs/methods.md defines it; under Kindermans et al.'s "
                   "input invariance (a model that compensates a constant shift should get the same map) higher "
                   "would be better, which reverses that column's ranking.")


def _fmt(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return "n/a"
    se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{v.mean():.3f} ± {se:.3f}"


def _table(results: dict, columns: list, seconds: dict) -> str:
    head = "| method | " + " | ".join(f"{c} {ARROWS.get(c, '')}".strip() for c in columns) + " | seconds |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    best = {}
    for c in columns:
        means = {m: np.nanmean(r[c]) for m, r in results.items()}
        pick = max if ARROWS.get(c) == "↑" else min
        best[c] = pick(means, key=means.get)
    for m, r in results.items():
        cells = [(f"**{_fmt(r[c])}**" if best[c] == m else _fmt(r[c])) for c in columns]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {seconds[m]:.1f} |")
    return "\n".join(lines) + "\n"


# --- claims ---------------------------------------------------------------------------------------

def _paired(a: np.ndarray, b: np.ndarray):
    """Mean of a - b over images with finite values, and its standard error."""
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), float("nan")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def _verdict(diff, se, want_positive: bool) -> str:
    if not math.isfinite(se):
        return "inconclusive"
    signed = diff if want_positive else -diff
    if signed > 2 * se:
        return "holds"
    if signed < -2 * se:
        return "does not hold (opposite, > 2 s.e.)"
    return "inconclusive (within 2 s.e.)"


def _claims(p2: dict) -> list:
    """Paper 2's claims (and two common beliefs about smoothing), each a paired test over images."""
    rows = []

    def claim(text, res, a, b, metric, better_higher=None):
        if a not in res or b not in res or metric not in res[a]:
            return
        higher = ARROWS[metric] == "↑" if better_higher is None else better_higher
        diff, se = _paired(res[a][metric], res[b][metric])
        rows.append((text, f"{metric}: {a} − {b} = {diff:+.4f} ± {se:.4f}", _verdict(diff, se, higher)))

    claim("AdaptGrad is sparser than SmoothGrad (paper 2: 0.574 vs 0.529)", p2, "AdaptGrad c=0.95", "SmoothGrad",
          "sparseness")
    claim("AdaptGrad is sparser than plain Grad (paper 2: 0.574 vs 0.558)", p2, "AdaptGrad c=0.95", "Grad",
          "sparseness")
    claim("SmoothGrad is less sparse than plain Grad (paper 2: 0.529 vs 0.558)", p2, "Grad", "SmoothGrad",
          "sparseness")
    claim("AdaptGrad beats ClipGrad (the ablation): sparseness", p2, "AdaptGrad c=0.95", "ClipGrad", "sparseness")
    claim("Higher c gives a sparser AdaptGrad (c=0.999 vs 0.95)", p2, "AdaptGrad c=0.999", "AdaptGrad c=0.95",
          "sparseness")
    for metric in ("insertion AUC", "deletion AUC", "localisation", "consistency", "invariance"):
        note = " (lower is better, as methods.md defines it)" if metric == "invariance" else ""
        claim(f"AdaptGrad beats SmoothGrad: {metric}{note}", p2, "AdaptGrad c=0.95", "SmoothGrad", metric)
    claim("AdaptGrad inside IG beats SmoothGrad inside IG: sparseness", p2, "IG + AdaptGrad", "IG + SmoothGrad",
          "sparseness")
    claim("AdaptGrad inside G×I beats SmoothGrad inside G×I: sparseness", p2, "G×I + AdaptGrad", "G×I + SmoothGrad",
          "sparseness")
    claim("Smoothing (SmoothGrad) localises better than plain Grad", p2, "SmoothGrad", "Grad", "localisation")
    claim("Smoothing (SmoothGrad) is more faithful than plain Grad (insertion)", p2, "SmoothGrad", "Grad",
          "insertion AUC")
    return rows


def _kernel_comparisons(p1: dict) -> list:
    """Each kernel against the Gaussian at the same (r, alpha): paper 1 compares them (its claims unread)."""
    rows = []
    for key in p1:
        if not key.startswith("gaussian"):
            continue
        suffix = key[len("gaussian"):]
        for kernel in KERNELS[1:]:
            other = kernel + suffix
            for metric in ("localisation", "sparseness", "consistency", "invariance"):
                diff, se = _paired(p1[other][metric], p1[key][metric])
                verdict = _verdict(diff, se, ARROWS[metric] == "↑")
                word = {"holds": "better", "inconclusive (within 2 s.e.)": "no difference within 2 s.e.",
                        "inconclusive": "n/a"}.get(verdict, "worse")
                rows.append((f"{other} vs {key}", f"{metric}: {diff:+.4f} ± {se:.4f}", word))
    return rows


def _sweep_claims(sweep: dict) -> list:
    rows = []
    for name, s in sweep.items():
        rows.append((f"Monte Carlo error falls as N^-1/2: {name}", f"log-log slope {s['slope']:.3f}",
                     "holds (within 0.1)" if abs(s["slope"] + 0.5) < 0.1 else "does not hold"))
    if "SmoothGrad" in sweep and "AdaptGrad c=0.95" in sweep:
        a, b = sweep["AdaptGrad c=0.95"]["relative"][-1], sweep["SmoothGrad"]["relative"][-1]
        rows.append(("AdaptGrad is less noisy than SmoothGrad at equal N (relative standard error)",
                     f"at N={sweep['SmoothGrad']['n'][-1]}: {a:.4f} vs {b:.4f}", "holds" if a < b else "does not hold"))
    return rows


# --- the N sweep ----------------------------------------------------------------------------------

def _sweep(env, cfg: Config, log) -> dict:
    """Mean standard error (and relative to mean |map|) against the gradient count, shapes data."""
    model, x, y = env["shapes_model"], env["sx"][:cfg.sweep_images], env["sy"][:cfg.sweep_images]
    b, level = (0.0, 1.0), cfg.noise_level
    r = max(cfg.kernel_r)
    runs = {
        "SmoothGrad": lambda n: methods.smoothgrad(model, x, y, n=n, noise_level=level, bounds=b, reduce="stats"),
        "ClipGrad": lambda n: methods.clipgrad(model, x, y, n=n, noise_level=level, bounds=b, reduce="stats"),
        "AdaptGrad c=0.95": lambda n: methods.adaptgrad(model, x, y, n=n, c=0.95, bounds=b, reduce="stats"),
        "AdaptGrad c=0.999": lambda n: methods.adaptgrad(model, x, y, n=n, c=0.999, bounds=b, reduce="stats"),
    }
    for kernel in KERNELS:
        runs[f"mollify {kernel} (r={r:g})"] = (lambda k: lambda n: methods.mollify(
            model, x, y, kernel=k, r=r, alpha=cfg.kernel_alpha, n=n, reduce="stats"))(kernel)
    runs["NoiseGrad (N = m)"] = lambda n: methods.noisegrad(model, x, y, m=n, reduce="stats")
    runs["FusionGrad (N = m·n, m = n)"] = lambda n: methods.fusiongrad(
        model, x, y, m=max(1, round(math.sqrt(n))), n=max(1, round(math.sqrt(n))), noise_level=level, bounds=b,
        reduce="stats")
    out = {}
    for name, fn in runs.items():
        t = time.perf_counter()
        ns, se, rel = [], [], []
        for n in cfg.sweep_ns:
            if name.startswith("FusionGrad") and round(math.sqrt(n)) ** 2 != n:
                continue
            st = fn(n)
            ns.append(int(st.n))
            se.append(float(st.stderr.mean()))
            rel.append(float(st.stderr.mean() / st.mean.abs().mean()))
        # the fit skips N < 8, where the standard error is itself a poor estimate (biased low)
        fit = [i for i, n in enumerate(ns) if n >= 8] if sum(n >= 8 for n in ns) > 1 else list(range(len(ns)))
        slope = (float(np.polyfit(np.log([ns[i] for i in fit]), np.log([se[i] for i in fit]), 1)[0])
                 if len(fit) > 1 else float("nan"))
        out[name] = dict(n=ns, stderr=se, relative=rel, slope=slope)
        log(f"  sweep {name}: slope {slope:.3f} ({time.perf_counter() - t:.1f} s)")
    return out


# --- the run --------------------------------------------------------------------------------------

def _examples(env, cfg: Config, out: Path):
    """Grids of maps: 3 shapes images and 3 digits, a few methods each."""
    sm, sx, sy = env["shapes_model"], env["sx"][:3], env["sy"][:3]
    specs = _paper2_methods(cfg)
    pick = ["Grad", "SmoothGrad", "ClipGrad", "AdaptGrad c=0.95", "NoiseGrad", "FusionGrad", "IG + AdaptGrad",
            "G×I + AdaptGrad"]
    maps = {name: _maps(specs[name], sm, sx, sy, (0.0, 1.0), cfg.seed) for name in pick}
    labels = [data.SHAPE_CLASSES[int(c)] for c in sy]
    viz.grid(sx, maps, out / "examples_shapes.png", row_labels=labels,
             title="shapes test images: signed maps (red +, blue −) of the true class")
    dm, dx, dy = env["digits"], env["dx"][:3], env["dy"][:3]
    dmaps = {}
    for name in ("Grad", "SmoothGrad", "AdaptGrad c=0.95"):
        dmaps[f"{name}\nnormal"] = _maps(specs[name], dm["normal"], dx, dy, (0.0, 1.0), cfg.seed)
        dmaps[f"{name}\nrandom labels"] = _maps(specs[name], dm["random"], dx, dy, (0.0, 1.0), cfg.seed)
        dmaps[f"{name}\nshifted +1"] = _maps(specs[name], dm["shifted"], dx + 1, dy, (1.0, 2.0), cfg.seed)
    viz.grid(dx, dmaps, out / "examples_digits.png", row_labels=[f"digit {int(d)}" for d in dy],
             title="digits: maps of the normal, random-label and +1-shifted models")


def run(out, quick: bool = False, log=print, config: Config | None = None) -> dict:
    """Run the whole evaluation and write its tables and plots into ``out``; returns the results."""
    cfg = config or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = _setup(cfg, log)
    p1, p1_seconds = {}, {}
    for name, spec in _paper1_methods(cfg).items():
        t = time.perf_counter()
        p1[name] = _evaluate_method(spec, env, cfg, faithfulness=False)
        p1_seconds[name] = time.perf_counter() - t
        log(f"  paper 1 {name}: {p1_seconds[name]:.1f} s")
    p2, p2_seconds = {}, {}
    for name, spec in _paper2_methods(cfg).items():
        t = time.perf_counter()
        p2[name] = _evaluate_method(spec, env, cfg, faithfulness=True)
        p2_seconds[name] = time.perf_counter() - t
        log(f"  paper 2 {name}: {p2_seconds[name]:.1f} s")
    sweep = _sweep(env, cfg, log)
    _examples(env, cfg, out)

    setting = (f"Settings: shapes test images {cfg.shapes_images} (faithfulness: {cfg.faith_images}, "
               f"{cfg.faith_steps} steps, softmax score, insertion into and deletion to a black image), "
               f"digits test images {cfg.digits_images}; N = {cfg.n} input samples, NoiseGrad m = {cfg.m}, "
               f"FusionGrad m×n = {cfg.fusion[0]}×{cfg.fusion[1]}, IG {cfg.ig_steps} steps × {cfg.ig_n} inner samples, "
               f"noise level {cfg.noise_level} of the data range, bounds = the data range; model test accuracy: "
               + ", ".join(f"{k} {v:.3f}" for k, v in env["acc"].items()) + ". Mean ± standard error over images; "
               "best in bold. Consistency/invariance: |Spearman ρ| of the absolute maps. " + INVARIANCE_NOTE + "\n")
    eps_line = "eps from (r, alpha): " + "; ".join(
        f"r = {r}: " + ", ".join(f"{k} {kernels.get(k).eps_from(r, cfg.kernel_alpha):.4g}" for k in KERNELS)
        for r in cfg.kernel_r) + ".\n\n"
    p1_cols = ["consistency", "invariance", "localisation", "pointing game", "sparseness"]
    p2_cols = ["sparseness", "insertion AUC", "deletion AUC", "consistency", "invariance", "localisation",
               "pointing game"]
    (out / "paper1_kernels.md").write_text(
        f"### Paper 1: the five mollification kernels (eps from (r, alpha = {cfg.kernel_alpha}))\n\n"
        + _table(p1, p1_cols, p1_seconds) + "\n" + eps_line + setting)
    (out / "paper2_methods.md").write_text("### Paper 2: gradient-smoothing methods\n\n"
                                           + _table(p2, p2_cols, p2_seconds) + "\n" + setting)
    ns_lines = ["### Monte Carlo standard error against N (shapes, mean over elements and images)\n",
                "| method | " + " | ".join(f"N={n}" for n in cfg.sweep_ns) + " | log-log slope |",
                "|" + "---|" * (len(cfg.sweep_ns) + 2)]
    for name, s in sweep.items():
        cells = {n: f"{v:.2e}" for n, v in zip(s["n"], s["stderr"])}
        ns_lines.append(f"| {name} | " + " | ".join(cells.get(n, "") for n in cfg.sweep_ns)
                        + f" | {s['slope']:.3f} |")
    ns_lines.append("\nRelative standard error (mean standard error / mean |map|):\n")
    ns_lines.append("| method | " + " | ".join(f"N={n}" for n in cfg.sweep_ns) + " |")
    ns_lines.append("|" + "---|" * (len(cfg.sweep_ns) + 1))
    for name, s in sweep.items():
        cells = {n: f"{v:.3f}" for n, v in zip(s["n"], s["relative"])}
        ns_lines.append(f"| {name} | " + " | ".join(cells.get(n, "") for n in cfg.sweep_ns) + " |")
    (out / "nsweep.md").write_text("\n".join(ns_lines) + "\n")
    viz.loglog({k: (s["n"], s["stderr"]) for k, s in sweep.items()}, out / "nsweep_stderr.png",
               "N (gradients per image)", "mean standard error", "Monte Carlo standard error vs N (shapes)")
    viz.loglog({k: (s["n"], s["relative"]) for k, s in sweep.items()}, out / "nsweep_relative.png",
               "N (gradients per image)", "mean standard error / mean |map|", "Relative standard error vs N")
    claims = _claims(p2) + _sweep_claims(sweep)
    kernel_rows = _kernel_comparisons(p1)
    (out / "claims.md").write_text(
        "### The papers' claims on this data\n\n| claim | measured (paired over images) | verdict |\n|---|---|---|\n"
        + "".join(f"| {c} | {m} | {v} |\n" for c, m, v in claims)
        + "\n### Kernels against the Gaussian at the same (r, alpha) (paper 1)\n\n"
        "| comparison | measured (paired over images) | result |\n|---|---|---|\n"
        + "".join(f"| {c} | {m} | {v} |\n" for c, m, v in kernel_rows))
    results = dict(
        config=asdict(cfg), accuracy=env["acc"], seconds=time.perf_counter() - start,
        paper1={m: {k: float(np.nanmean(v)) for k, v in r.items()} for m, r in p1.items()},
        paper2={m: {k: float(np.nanmean(v)) for k, v in r.items()} for m, r in p2.items()},
        sweep=sweep, claims=[dict(claim=c, measured=m, verdict=v) for c, m, v in claims],
        kernel_comparisons=[dict(comparison=c, measured=m, result=v) for c, m, v in kernel_rows])
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    log(f"evaluation written to {out} in {results['seconds']:.0f} s")
    return results
