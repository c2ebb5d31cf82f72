"""Markdown tables, paired comparisons and the papers' claims with verdicts."""
from __future__ import annotations

import math

import numpy as np

from .config import KERNELS

__all__ = ["ARROWS", "summarise", "table", "table_summary", "paired", "verdict", "paper2_claims", "paper1_claims", "sweep_claims"]

ARROWS = {"sparseness": "↑", "localisation": "↑", "pointing game": "↑", "insertion AUC": "↑", "deletion AUC": "↓",
          "SIC AUC": "↑", "AIC AUC": "↑", "consistency": "↓", "invariance": "↑"}


def mean_se(values: np.ndarray):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se, len(v)


def summarise(results: dict) -> dict:
    """``{row: {metric: per-image values}}`` as ``{row: {metric: {mean, se, images}}}`` (``results.json``)."""
    return {row: {k: dict(zip(("mean", "se", "images"), mean_se(v))) for k, v in metrics.items()}
            for row, metrics in results.items()}


def table(results: dict, columns: list, seconds: dict) -> str:
    """Rows = methods, columns = metrics (mean ± s.e. over images), the best of each column in bold."""
    return table_summary(summarise(results), columns, seconds)


def table_summary(rows: dict, columns: list, seconds: dict) -> str:
    """``table`` from ``results.json`` summaries (``{row: {metric: {mean, se, images}}}``): the same text."""
    columns = [c for c in columns if any(c in r for r in rows.values())]
    head = "| method | " + " | ".join(f"{c} {ARROWS.get(c, '')}".strip() for c in columns) + " | seconds |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    best = {}
    for c in columns:
        means = {m: r[c]["mean"] for m, r in rows.items() if c in r and r[c]["images"]}
        if means:
            best[c] = (max if ARROWS.get(c) == "↑" else min)(means, key=means.get)

    def cell(m, c):
        v = rows[m].get(c)
        if v is None or not v["images"]:
            return "n/a"
        text = f"{v['mean']:.3f} ± {v['se']:.3f}"
        return f"**{text}**" if best.get(c) == m else text

    for m in rows:
        lines.append(f"| {m} | " + " | ".join(cell(m, c) for c in columns) + f" | {seconds.get(m, float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def paired(a, b):
    """Mean of a - b over images where both are finite, and its standard error."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if len(d) < 2:
        return (float(d.mean()) if len(d) else float("nan")), float("nan")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def verdict(diff, se, want_positive: bool) -> str:
    if not math.isfinite(se) or not math.isfinite(diff):
        return "inconclusive"
    signed = diff if want_positive else -diff
    if signed > 2 * se:
        return "holds"
    if signed < -2 * se:
        return "does not hold (opposite, > 2 s.e.)"
    return "inconclusive (within 2 s.e.)"


def _ig_name(res: dict, label: str) -> str:
    return label if label in res else f"{label} (x0=0)"


def paper2_claims(p2: dict) -> list:
    """Paper 2's claims (and two common beliefs about smoothing): paired tests over images."""
    rows = []

    def claim(text, a, b, metric):
        a, b = _ig_name(p2, a), _ig_name(p2, b)
        if a not in p2 or b not in p2 or metric not in p2[a]:
            return
        diff, se = paired(p2[a][metric], p2[b][metric])
        rows.append(dict(claim=text, measured=f"{metric}: {a} − {b} = {diff:+.4f} ± {se:.4f}",
                         verdict=verdict(diff, se, ARROWS[metric] == "↑"), diff=diff, se=se))

    claim("AdaptGrad is sparser than SmoothGrad (paper 2: 0.574 vs 0.529)", "AdaptGrad c=0.95", "SmoothGrad",
          "sparseness")
    claim("AdaptGrad is sparser than plain Grad (paper 2: 0.574 vs 0.558)", "AdaptGrad c=0.95", "Grad", "sparseness")
    claim("SmoothGrad is less sparse than plain Grad (paper 2: 0.529 vs 0.558)", "Grad", "SmoothGrad", "sparseness")
    claim("AdaptGrad beats ClipGrad (the ablation): sparseness", "AdaptGrad c=0.95", "ClipGrad", "sparseness")
    claim("Higher c gives a sparser AdaptGrad (c=0.999 vs 0.95)", "AdaptGrad c=0.999", "AdaptGrad c=0.95",
          "sparseness")
    for metric in ("insertion AUC", "deletion AUC", "SIC AUC", "localisation", "consistency", "invariance"):
        claim(f"AdaptGrad beats SmoothGrad: {metric}", "AdaptGrad c=0.95", "SmoothGrad", metric)
    claim("AdaptGrad inside IG beats SmoothGrad inside IG: sparseness", "IG + AdaptGrad", "IG + SmoothGrad",
          "sparseness")
    claim("AdaptGrad inside IG beats SmoothGrad inside IG: SIC AUC", "IG + AdaptGrad", "IG + SmoothGrad", "SIC AUC")
    claim("AdaptGrad inside G×I beats SmoothGrad inside G×I: sparseness", "G×I + AdaptGrad", "G×I + SmoothGrad",
          "sparseness")
    claim("Smoothing (SmoothGrad) localises better than plain Grad", "SmoothGrad", "Grad", "localisation")
    claim("Smoothing (SmoothGrad) is more faithful than plain Grad (insertion)", "SmoothGrad", "Grad", "insertion AUC")
    return rows


PAPER1_CLAIMS = (("Poisson and Rectangular are best on consistency and invariance", ("poisson", "rectangular"),
                  ("consistency", "invariance")),
                 ("Gaussian and Rectangular are best on localisation and sparseness", ("gaussian", "rectangular"),
                  ("localisation", "sparseness")))


def paper1_claims(p1: dict, suffix: str) -> list:
    """Paper 1's claims over the five kernels with rows ``'<kernel><suffix>'``: per metric, each named kernel
    against each other kernel (paired). Holds: every named kernel beats every other by > 2 s.e.; does not
    hold: some other kernel beats a named one by > 2 s.e.; otherwise inconclusive (the ranking is given)."""
    rows = []
    for text, named, metrics in PAPER1_CLAIMS:
        for metric in metrics:
            keys = {k: f"{k}{suffix}" for k in KERNELS}
            if not all(v in p1 and metric in p1[v] for v in keys.values()):
                continue
            up = ARROWS[metric] == "↑"
            ranking = sorted(KERNELS, key=lambda k: np.nanmean(p1[keys[k]][metric]), reverse=up)
            wins, losses, parts = 0, 0, []
            for a in named:
                for b in KERNELS:
                    if b in named:
                        continue
                    diff, se = paired(p1[keys[a]][metric], p1[keys[b]][metric])
                    v = verdict(diff, se, up)
                    wins += v == "holds"
                    losses += v.startswith("does not")
                    parts.append(f"{a}−{b} {diff:+.3f}±{se:.3f}")
            total = len(named) * (len(KERNELS) - len(named))
            word = ("holds" if wins == total else "does not hold (another kernel is better by > 2 s.e.)" if losses
                    else "inconclusive (within 2 s.e.)")
            rows.append(dict(claim=f"{text} — {metric}{' (' + suffix.strip() + ')' if suffix.strip() else ''}",
                             measured=f"ranking {' > '.join(ranking)}; " + ", ".join(parts), verdict=word))
    return rows


def sweep_claims(sweep: dict) -> list:
    rows = []
    for name, s in sweep.items():
        rows.append(dict(claim=f"Monte Carlo error falls as N^-1/2: {name}", measured=f"log-log slope {s['slope']:.3f}",
                         verdict="holds (within 0.1)" if abs(s["slope"] + 0.5) < 0.1 else "does not hold"))
    if "SmoothGrad" in sweep and "AdaptGrad c=0.95" in sweep:
        a, b = sweep["AdaptGrad c=0.95"]["relative"][-1], sweep["SmoothGrad"]["relative"][-1]
        rows.append(dict(claim="AdaptGrad is less noisy than SmoothGrad at equal N (relative standard error)",
                         measured=f"at N={sweep['SmoothGrad']['n'][-1]}: {a:.4f} vs {b:.4f}",
                         verdict="holds" if a < b else "does not hold"))
    return rows
