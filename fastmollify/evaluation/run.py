"""``run``: the whole evaluation, written as markdown, PNGs and ``results.json``."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import data, models, viz
from . import specs, studies, tables
from .config import AUTHORS, DEFAULT, FULL, KERNELS, QUICK, Config, Protocol
from .measure import SHAPES, evaluate_method, maps, setup

__all__ = ["run", "VERIFY_ROWS", "P1_COLUMNS", "P2_COLUMNS"]

P1_COLUMNS = ["consistency", "invariance", "localisation", "pointing game", "sparseness"]
P2_COLUMNS = ["sparseness", "insertion AUC", "deletion AUC", "SIC AUC", "AIC AUC", "consistency", "invariance",
              "localisation", "pointing game"]
# rows `evaluate --verify` reruns (per protocol): (table, row)
VERIFY_ROWS = {"default": [("paper2", "Grad"), ("paper2", "SmoothGrad"), ("paper2", "AdaptGrad c=0.95"),
                           ("paper2", "NoiseGrad"), ("paper2", "IG"), ("paper1", "poisson (r=0.4)"),
                           ("paper1", "rectangular adaptive")],
               "authors": [("paper2", "AdaptGrad c=0.95"), ("paper2", "IG (x0=0)")]}


def _run_table(name, table_specs, env, cfg, proto, log, **options):
    res, seconds = {}, {}
    for row, spec in table_specs.items():
        t = time.perf_counter()
        res[row] = evaluate_method(spec, env, cfg, proto, **options)
        seconds[row] = time.perf_counter() - t
        log(f"  [{proto.name}] {name} {row}: {seconds[row]:.1f} s")
    return res, seconds


def _settings(cfg: Config, proto: Protocol, env) -> str:
    if proto.name == "authors":
        methods_part = (f"N = {cfg.n} input samples + the clean gradient (N + 1 averaged), NoiseGrad m = {cfg.authors_m} "
                        f"+ the clean gradient, the classifier (last linear layer) unperturbed, FusionGrad m×n = "
                        f"{cfg.fusion[0]}×{cfg.fusion[1]}; IG: {cfg.authors_ig_steps} left-Riemann steps from the "
                        f"baseline x0 = 0 or 1 plus the clean gradient ({cfg.authors_ig_steps + 1} gradients, equal "
                        f"weights), inner SmoothGrad/AdaptGrad with {cfg.authors_ig_n} + 1 samples; softmax output, "
                        "predicted class; consistency/invariance: |Spearman ρ| of the signed channel-summed maps "
                        "scaled by twice their 99th percentile and clipped to ±1")
    else:
        methods_part = (f"N = {cfg.n} input samples, NoiseGrad m = {cfg.m}, FusionGrad m×n = {cfg.fusion[0]}×"
                        f"{cfg.fusion[1]}, IG {cfg.ig_steps} midpoint steps × {cfg.ig_n} inner samples (baseline: the "
                        "data's lower bound), logit output, true class; consistency/invariance: |Spearman ρ| of the "
                        "absolute maps")
    return (f"Protocol **{proto.name}**: {methods_part}. Noise level {cfg.noise_level} of the data range, bounds = the "
            f"data range (shifted digits: adaptive noise with bounds {proto.shifted_adaptive_bounds}). Images: shapes "
            f"{cfg.shapes_images} (insertion/deletion {cfg.faith_images}, {cfg.faith_steps} steps, to/from black; SIC/AIC "
            f"{cfg.pic_images}), digits {cfg.digits_images}. Mean ± standard error over images; best in bold.\n")


def _sweep_plot(sweep: dict, key: str, path, xlabel: str, log_x: bool):
    plt = viz._plt()
    fig, axes = plt.subplots(1, len(studies.SWEEP_METRICS), figsize=(4.2 * len(studies.SWEEP_METRICS), 3.6))
    xs = sweep[key]
    for ax, metric in zip(axes, studies.SWEEP_METRICS):
        for kernel in KERNELS:
            ys = np.array(sweep["kernels"][kernel][metric])
            se = np.array(sweep["kernels"][kernel]["se"][metric])
            ax.errorbar(xs, ys, yerr=se, marker="o", ms=3, capsize=2, label=kernel)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(f"{metric} {tables.ARROWS[metric]}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _examples(env, cfg: Config, out: Path):
    sm, sx, sy = env["shapes"], env["sx"][:3], env["sy"][:3]
    p2 = specs.paper2(cfg, DEFAULT)
    pick = ["Grad", "SmoothGrad", "ClipGrad", "AdaptGrad c=0.95", "NoiseGrad", "FusionGrad", "IG + AdaptGrad",
            "G×I + AdaptGrad"]
    grid = {name: maps(p2[name], sm, sx, sy, SHAPES) for name in pick}
    viz.grid(sx, grid, out / "examples_shapes.png", row_labels=[data.SHAPE_CLASSES[int(c)] for c in sy],
             title="shapes test images: signed maps (red +, blue −) of the true class")
    from .measure import DIGITS_SHIFTED
    d, dx, dy = env["digits_cnn"], env["dx"][:3], env["dy"][:3]
    dmaps = {}
    for name in ("Grad", "SmoothGrad", "AdaptGrad c=0.95"):
        dmaps[f"{name}\nnormal"] = maps(p2[name], d["normal"], dx, dy, SHAPES)
        dmaps[f"{name}\nrandom labels"] = maps(p2[name], d["random"], dx, dy, SHAPES)
        dmaps[f"{name}\nshifted +1"] = maps(p2[name], d["shifted"], dx + 1, dy, DIGITS_SHIFTED(DEFAULT))
    viz.grid(dx, dmaps, out / "examples_digits.png", row_labels=[f"digit {int(v)}" for v in dy],
             title="digits: maps of the normal, random-label and +1-shifted models")


def _verify_values(tables_by_protocol: dict, cfg: Config) -> dict:
    """Per-image values of the verified rows on the first ``verify_images`` images (``evaluate --verify``)."""
    out = {}
    for proto_name, rows in VERIFY_ROWS.items():
        for table_name, row in rows:
            res = tables_by_protocol.get(proto_name, {}).get(table_name, {}).get(row)
            if res is None:
                continue
            out.setdefault(proto_name, {})[f"{table_name}/{row}"] = {
                k: [None if not math.isfinite(x) else x for x in v[:cfg.verify_images].tolist()] for k, v in res.items()}
    return out


def run(out, quick: bool = False, log=print, config: Config | None = None, retrain: bool = False,
        protocols=("default", "authors"), docs=None, readme=None) -> dict:
    """Run the evaluation and write its tables, plots and ``results.json`` into ``out``.

    ``protocols``: 'default' and/or 'authors' (docs/evaluation.md). ``retrain``: train the built-in
    models instead of loading the shipped weights. ``docs`` / ``readme``: also write docs/evaluation.md
    and the README's evaluation section (between its markers) from the results.
    """
    cfg = config or (QUICK if quick else FULL)
    chosen = [{"default": DEFAULT, "authors": AUTHORS}[p] for p in protocols]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = setup(cfg, log, retrain=retrain)
    results = dict(config=asdict(cfg), protocols={}, accuracy=env["acc"], retrained=retrain,
                   weights={k: v["sha256"] for k, v in models.manifest().items() if not k.startswith("_")}
                   if not retrain else {})
    by_protocol, claims = {}, {}
    for proto in chosen:
        p1, s1 = _run_table("paper 1", specs.paper1(cfg, proto), env, cfg, proto, log, faithfulness=False, pic=False)
        p2, s2 = _run_table("paper 2", specs.paper2(cfg, proto), env, cfg, proto, log)
        zs, szs = _run_table("ResNet", specs.zoo(cfg, proto), env, cfg, proto, log, shapes_model="resnet",
                             shapes_images=cfg.zoo_shapes_images, digits_images=0, pic=False)
        zd, szd = _run_table("MLP", specs.zoo(cfg, proto), env, cfg, proto, log, digits_arch="mlp", shapes_images=0,
                             digits_images=cfg.zoo_digits_images)
        zoo = {row: {**zs[row], **{f"MLP {k}": v for k, v in zd[row].items()}} for row in zs}
        zoo_seconds = {row: szs[row] + szd[row] for row in zs}
        by_protocol[proto.name] = dict(paper1=p1, paper2=p2, zoo=zoo)
        claims[proto.name] = dict(paper2=tables.paper2_claims(p2),
                                  paper1=tables.paper1_claims(p1, f" (r={cfg.kernel_r:g})")
                                  + tables.paper1_claims(p1, " adaptive"))
        results["protocols"][proto.name] = dict(paper1=tables.summarise(p1), paper2=tables.summarise(p2),
                                                zoo=tables.summarise(zoo),
                                                seconds={**{f"paper1/{k}": v for k, v in s1.items()},
                                                         **{f"paper2/{k}": v for k, v in s2.items()},
                                                         **{f"zoo/{k}": v for k, v in zoo_seconds.items()}})
    t = time.perf_counter()
    study = dict(eps_sweep=studies.eps_sweep(env, cfg, log), alpha_sweep=studies.alpha_sweep(env, cfg, log),
                 nsweep=studies.nsweep(env, cfg, log), tol=studies.tol_n(env, cfg, log),
                 antithetic=studies.antithetic(env, cfg, log), extra_noise=studies.extra_noise(env, cfg, log),
                 clip_bias=studies.clip_bias(env, cfg, log))
    results["studies"] = study
    results["studies_seconds"] = time.perf_counter() - t
    from . import inside  # smoothing inside the network: its own tables, layers.md
    results["inside_seconds"] = inside.run(out, quick=quick, log=log)["seconds"]
    claims["sweep"] = tables.sweep_claims(study["nsweep"])
    results["claims"] = claims
    results["verify"] = _verify_values(by_protocol, cfg)
    _examples(env, cfg, out)
    _sweep_plot(study["eps_sweep"], "r", out / "eps_sweep.png", "r (share of the data range), alpha = "
                f"{cfg.kernel_alpha}", True)
    _sweep_plot(study["alpha_sweep"], "alpha", out / "alpha_sweep.png", f"alpha (r = {cfg.kernel_r})", False)
    sweep = study["nsweep"]
    viz.loglog({k: (s["n"], s["stderr"]) for k, s in sweep.items()}, out / "nsweep_stderr.png",
               "N (gradients per image)", "mean standard error", "Monte Carlo standard error vs N (shapes)")
    viz.loglog({k: (s["n"], s["relative"]) for k, s in sweep.items()}, out / "nsweep_relative.png",
               "N (gradients per image)", "mean standard error / mean |map|", "Relative standard error vs N")
    results["seconds"] = time.perf_counter() - start
    from . import report
    text = report.texts(results, cfg)
    for name, body in report.files(results, text, cfg).items():
        (out / name).write_text(body)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, allow_nan=True) + "\n")
    if docs is not None:
        Path(docs).write_text(report.evaluation_md(results, text, cfg, image_prefix="evaluation/"))
    if readme is not None:
        report.update_readme(readme, report.readme_section(results, text, cfg))
    log(f"evaluation written to {out} in {results['seconds']:.0f} s")
    return results
