"""Convergence: samples a relative-error target needs (``tol=``), and antithetic sampling's efficiency.

Two parts, per method (SmoothGrad, mollification with each kernel, AdaptGrad, ClipGrad, NoiseGrad,
FusionGrad) and model, on the CPU with one torch thread:

* ``tol``: ``fm.<method>(..., tol=t, reduce="stats")`` with the default chunk (checks every
  ``engine.TOL_CHECK`` samples, or after each weight draw) and a cap on n (m for NoiseGrad /
  FusionGrad), for t = 0.1 / 0.05 / 0.02: the samples each example took (``Stats.n``: mean and
  max over the batch), its wall time, and the share of examples that reached t within the cap.
  Against it, the fixed n a user would have to pick for the same guarantee: the smallest n of the
  doubling ladder 16, 32, ... (cap) whose worst example's relative standard error
  ``||stderr_b|| / ||mean_b||`` is <= t, timed at the default chunk. ``time_saving`` = fixed time
  / tol time; ``sample_saving`` = B * fixed n / sum of n_b; ``hindsight_saving`` = B * max n_b /
  sum of n_b (against the best fixed n known only after the fact: a lower bound on the saving).
* ``antithetic``: the same call at a fixed even n (m) with ``antithetic=False`` and ``True``,
  timed interleaved (median of ``--rounds``); the variance of the map is the mean squared
  standard error over elements and examples (calibrated, over pairs for antithetic runs);
  ``efficiency = (var_plain * t_plain) / (var_anti * t_anti)``: above 1, pairs give more accuracy
  per second.

Models: the built-in digits CNN (ReLU; also retrained with SiLU and Tanh, the smooth models) and
shapes CNN (``fastmollify.models``, trained and cached on first use), and torchvision's ResNet-18
with random weights at 32x32 (ImageNet-normalised range). Targets: the predicted class.

    python -m benchmarks.bench_convergence             # results/convergence_cpu.{json,csv,png}
    python -m benchmarks.bench_convergence --quick --out /tmp/c   # seconds: the smoke test
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import RESULTS, cli, plotting, results_io, runner, timing, zoo  # noqa: E402

SCRIPT = "convergence"
TOLS = (0.1, 0.05, 0.02)
KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular")
METHODS = ("smoothgrad", *(f"mollify-{k}" for k in KERNELS), "adaptgrad", "clipgrad", "noisegrad", "fusiongrad")
WEIGHT = ("noisegrad", "fusiongrad")
FUSION_N = 4  # FusionGrad's input samples per weight draw
LADDER_START = 16
NOISE_LEVEL = zoo.NOISE_LEVEL  # sigma = 0.15 (hi - lo), as in the other benchmarks
R_SHARE = 0.3  # mollification: r = 0.3 (hi - lo), alpha = 0.95 (the Gaussian kernel's eps is then 0.153 (hi - lo))
WEIGHT_SIGMA = 0.2

LARGE = ("smoothgrad", "mollify-poisson", "adaptgrad", "noisegrad", "fusiongrad")
LARGEST = ("smoothgrad", "mollify-poisson", "mollify-hyperbolic", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad")


@dataclass(frozen=True)
class Part:
    """One model's share of a part: batch, caps (n for input noise, m for weight draws), tols, methods."""

    batch: int
    n: int
    m: int
    tols: tuple = TOLS
    methods: tuple = METHODS
    seeds: int = 0  # antithetic: also the variance of the map over this many seeds (a check of the stderr route)
    chunks: tuple = (None,)  # tol: the chunk_size of the tol runs (None: the default, checks every TOL_CHECK)


# The larger models need thousands of samples for tol <= 0.05 on a whole map (see the docs): on
# two CPU cores they get the methods and tols that fit, and capped rows report the 1/sqrt(n) estimate.
TOL_MODELS = {"digits": Part(8, 1024, 256), "shapes": Part(2, 1024, 128, (0.1, 0.05), LARGE),
              "resnet18": Part(2, 512, 32, (0.1,), ("smoothgrad", "adaptgrad"),
                               chunks=(None, 64))}  # 16-sample chunks cost ResNet-18 at B=2 about 1.3x
ANTI_MODELS = {"digits": Part(8, 64, 32, seeds=12), "digits_silu": Part(8, 64, 32, seeds=12),
               "digits_tanh": Part(8, 64, 32),
               "shapes": Part(4, 64, 16), "resnet18": Part(2, 32, 8, methods=LARGEST)}
QUICK_METHODS = ("smoothgrad", "mollify-poisson", "noisegrad", "fusiongrad")
QUICK = dict(tol_models={"digits": Part(2, 64, 16, (0.1,), QUICK_METHODS)},
             anti_models={"digits": Part(2, 16, 4, methods=QUICK_METHODS, seeds=3),
                          "digits_silu": Part(2, 16, 4, methods=QUICK_METHODS)}, rounds=1)
FIELDS = ("script", "part", "device", "torch", "model", "activation", "image", "B", "method", "kernel", "cap",
          "cap_samples", "tol", "chunk_size", "n_mean", "n_max", "units_mean", "units_max", "reached", "worst_rel_err",
          "n_est_mean", "n_est_max", "t_tol_s", "n_fixed", "worst_rel_err_fixed", "t_fixed_s", "time_saving",
          "sample_saving", "hindsight_saving", "n", "m", "var_plain", "var_anti", "t_plain_s", "t_anti_s", "var_ratio",
          "time_ratio", "efficiency", "seeds", "var_ratio_seeds", "error", "commit", "timestamp")


@dataclass
class Model:
    name: str
    activation: str
    module: torch.nn.Module
    x: torch.Tensor
    target: torch.Tensor
    lo: float
    hi: float

    @property
    def image(self) -> str:
        return "x".join(map(str, self.x.shape[1:]))


def _digits(activation: str, batch: int) -> Model:
    from fastmollify import data, models

    images, labels = data.digits()
    train_idx, test_idx = data.split(len(images), seed=0)
    if activation == "relu":
        module = models.digits_models()["normal"]
    else:  # the same architecture and training with a smooth activation
        act = {"silu": torch.nn.SiLU, "tanh": torch.nn.Tanh}[activation]
        module = models.digits_cnn()
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(module, name, act())
        recipe = models.DIGITS_TRAIN
        module = models.train(module, images[train_idx], labels[train_idx], epochs=recipe["epochs"], seed=0,
                              lr=recipe["lr"], batch_size=recipe["batch_size"],
                              data_key=f"digits(split_seed=0):normal:{activation}")
    x = images[test_idx[:batch]]
    return Model("digits" if activation == "relu" else f"digits_{activation}", activation, module, x, None, 0.0, 1.0)


def _shapes(batch: int) -> Model:
    from fastmollify import data, models

    x, _, _ = data.shapes(batch, seed=7)  # the model was trained on seed 1000
    return Model("shapes", "relu", models.shapes_model(), x, None, 0.0, 1.0)


def _resnet18(batch: int) -> Model:
    setup = zoo.Setup(zoo.SetupSpec("resnet18", batch, "cpu", image_size=32))
    return Model("resnet18", "relu", setup.model, setup.inputs[0], None, setup.lo, setup.hi)


def build(name: str, batch: int) -> Model:
    if name.startswith("digits"):
        model = _digits(name.partition("_")[2] or "relu", batch)
    elif name == "shapes":
        model = _shapes(batch)
    elif name == "resnet18":
        model = _resnet18(batch)
    else:
        raise ValueError(f"unknown model {name!r}")
    model.module.eval()
    for p in model.module.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        model.target = model.module(model.x).argmax(1)
    return model


def call(model: Model, method: str, size: int, **options):
    """``fm.<method>`` on the model's batch with ``size`` samples (n; m for NoiseGrad/FusionGrad), reduce=stats."""
    import fastmollify as fm

    span = model.hi - model.lo
    common = dict(reduce="stats", progress=False, **{"seed": 0, **options})
    sigma = NOISE_LEVEL * span
    if method == "smoothgrad":
        return fm.smoothgrad(model.module, model.x, model.target, n=size, sigma=sigma, **common)
    if method.startswith("mollify-"):
        return fm.mollify(model.module, model.x, model.target, n=size, kernel=method.partition("-")[2],
                          r=R_SHARE * span, alpha=0.95, **common)
    if method == "adaptgrad":
        return fm.adaptgrad(model.module, model.x, model.target, n=size, c=0.95, bounds=(model.lo, model.hi), **common)
    if method == "clipgrad":
        return fm.clipgrad(model.module, model.x, model.target, n=size, sigma=sigma, bounds=(model.lo, model.hi),
                           **common)
    if method == "noisegrad":
        return fm.noisegrad(model.module, model.x, model.target, m=size, weight_sigma=WEIGHT_SIGMA, **common)
    if method == "fusiongrad":
        return fm.fusiongrad(model.module, model.x, model.target, m=size, n=FUSION_N, weight_sigma=WEIGHT_SIGMA,
                             sigma=sigma, **common)
    raise ValueError(f"unknown method {method!r}")


def relative_errors(stats) -> torch.Tensor:
    """Per example: ``||stderr_b||_2 / ||mean_b||_2`` (what ``tol`` bounds)."""
    return stats.stderr.flatten(1).norm(dim=1) / stats.mean.flatten(1).norm(dim=1)


MIN_TIMED_S = 1.0  # a call shorter than this is repeated (at most MAX_CALLS times) and the median kept


def _timed(fn: Callable, max_calls: int = 5):
    """``(fn(), seconds)``: the median of repeated calls while the calls total under MIN_TIMED_S."""
    times = []
    while True:
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if sum(times) >= MIN_TIMED_S or len(times) >= max_calls:
            return out, statistics.median(times)


def _counts(stats, method: str):
    """(samples per example [B], units per example [B]) of a Stats (floats or tensors)."""
    batch = stats.mean.shape[0]
    n = stats.n if torch.is_tensor(stats.n) else torch.full((batch,), float(stats.n))
    units = stats.units.n if stats.units is not None else n
    units = units if torch.is_tensor(units) else torch.full((batch,), float(units))
    return n.double(), units.double()


def tol_rows(model: Model, method: str, cap: int, tols, budget: timing.Budget, chunks=(None,)) -> list[dict]:
    """The tol part for one (model, method): tol runs and the fixed-n ladder."""
    rows = []
    call(model, method, 2 if method in WEIGHT else LADDER_START)  # warm-up: code paths, thread pools
    ladder, n = [], LADDER_START
    while n <= cap:  # the doubling ladder, until its worst example reaches the smallest tol
        stats, seconds = _timed(lambda: call(model, method, n))
        worst = float(relative_errors(stats).max())
        ladder.append((n, worst, seconds, float(_counts(stats, method)[0][0])))
        if worst <= min(tols) or budget.left() <= 0:
            break
        n *= 2
    for chunk in chunks:
        rows += _tol_runs(model, method, cap, tols, budget, chunk, ladder)
    return rows


def _tol_runs(model: Model, method: str, cap: int, tols, budget: timing.Budget, chunk, ladder) -> list[dict]:
    """The tol runs at one chunk_size, each against the smallest ladder n that reaches the same tol."""
    rows = []
    capped = None  # a tol run whose every example ran to the cap: a smaller tol runs the same samples
    for tol in sorted(tols, reverse=True):
        row = dict(part="tol", tol=tol, cap=cap, cap_samples=cap * (FUSION_N if method == "fusiongrad" else 1),
                   chunk_size=chunk)
        if budget.left() <= 0:
            rows.append(dict(row, error="skipped: time budget"))
            continue
        stats, seconds = capped or _timed(lambda: call(model, method, cap, tol=tol, chunk_size=chunk))
        n_b, units = _counts(stats, method)
        rel = relative_errors(stats)
        if bool((units == cap).all()):
            capped = (stats, seconds)
        fixed = next(((n, w, s, per) for n, w, s, per in ladder if w <= tol), None)
        row.update(n_mean=float(n_b.mean()), n_max=float(n_b.max()), units_mean=float(units.mean()),
                   units_max=float(units.max()), reached=float((rel <= tol).double().mean()),
                   worst_rel_err=float(rel.max()), t_tol_s=seconds,
                   # the samples each example needs by the 1/sqrt(n) law (measured where it reached tol)
                   n_est_mean=float(torch.where(rel <= tol, n_b, n_b * (rel / tol) ** 2).mean()),
                   n_est_max=float(torch.where(rel <= tol, n_b, n_b * (rel / tol) ** 2).max()),
                   hindsight_saving=float(n_b.max() * len(n_b) / n_b.sum()))
        if fixed is not None:
            row.update(n_fixed=fixed[3], worst_rel_err_fixed=fixed[1], t_fixed_s=fixed[2],
                       time_saving=fixed[2] / seconds, sample_saving=float(fixed[3] * len(n_b) / n_b.sum()))
        else:
            row.update(error=f"the fixed-n ladder did not reach tol within the cap ({cap}; worst relative error "
                             f"{ladder[-1][1]:.3g} at {ladder[-1][0]})" if ladder else "no ladder run")
        rows.append(row)
    return rows


def antithetic_row(model: Model, method: str, size: int, rounds: int, seeds: int = 0) -> dict:
    """Plain against antithetic at one size, timed interleaved; variance = mean squared stderr."""
    variants = {"plain": lambda: call(model, method, size), "anti": lambda: call(model, method, size, antithetic=True)}
    for fn in variants.values():
        fn()  # warm-up
    times = {k: [] for k in variants}
    var = {}
    for r in range(rounds):
        for key, fn in variants.items():
            stats, seconds = _timed(fn)
            times[key].append(seconds)
            var[key] = float((stats.stderr.double() ** 2).mean())
    t_plain, t_anti = statistics.median(times["plain"]), statistics.median(times["anti"])
    n = {"noisegrad": None, "fusiongrad": FUSION_N}.get(method, size)
    spread = {}
    for key, anti in (("plain", False), ("anti", True)) if seeds > 1 else ():  # the variance over seeds
        means = torch.stack([call(model, method, size, antithetic=anti, seed=s).mean.double() for s in range(seeds)])
        spread[key] = float(means.var(0).mean())
    return dict(part="antithetic", n=n, m=size if method in WEIGHT else None, seeds=seeds or None,
                var_ratio_seeds=spread["plain"] / spread["anti"] if spread else None, var_plain=var["plain"],
                var_anti=var["anti"], t_plain_s=t_plain, t_anti_s=t_anti, var_ratio=var["plain"] / var["anti"],
                time_ratio=t_plain / t_anti,
                efficiency=var["plain"] * t_plain / (var["anti"] * t_anti))


def _row(model: Model, method: str, found: dict, batch: int) -> dict:
    row = dict.fromkeys(FIELDS)
    row.update(script=SCRIPT, device=runner.device_name(torch.device("cpu")), torch=torch.__version__,
               model=model.name if model else None, activation=model.activation if model else None,
               image=model.image if model else None, B=batch, method=method,
               kernel=method.partition("-")[2] if method.startswith("mollify-") else "gaussian",
               commit=runner.commit(), timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    row.update(found)
    return row


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="tol,antithetic", help="comma-separated: tol, antithetic")
    parser.add_argument("--models", default=None, help="comma-separated subset of the models of each part")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--rounds", type=int, default=3, help="antithetic: interleaved timed rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--budget", type=float, default=None, help="seconds this script may take (skips the rest)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = _run(args)
    finally:
        torch.set_num_threads(threads)
    path = results_io.write_table(rows, SCRIPT, "cpu", FIELDS, args.out)
    if not args.no_plot:
        plot(rows, path.with_suffix(".png"))
    return rows


def _run(args) -> list[dict]:
    budget = timing.Budget(args.budget)
    parts = cli.names(args.parts)
    chosen = cli.names(args.models)
    methods = cli.names(args.methods)
    rounds = QUICK["rounds"] if args.quick else args.rounds
    tol_models = QUICK["tol_models"] if args.quick else TOL_MODELS
    anti_models = QUICK["anti_models"] if args.quick else ANTI_MODELS
    plan = []  # model by model, cheapest first, so a time budget cuts the most expensive
    order = ("digits", "digits_silu", "digits_tanh", "shapes", "resnet18")
    for name in sorted(dict.fromkeys([*tol_models, *anti_models]), key=lambda m: order.index(m) if m in order else 9):
        plan += [("tol", name, tol_models[name])] if "tol" in parts and name in tol_models else []
        plan += [("antithetic", name, anti_models[name])] if "antithetic" in parts and name in anti_models else []
    rows = []
    for part, name, spec in plan:
        if chosen and name not in chosen:
            continue
        batch = spec.batch
        try:
            model = build(name, batch)
        except Exception as error:
            rows.append(_row(None, "-", dict(part=part, model=name, error=f"{type(error).__name__}: {error}"[:300]),
                             batch))
            continue
        for method in [m for m in spec.methods if not methods or m in methods]:
            size = spec.m if method in WEIGHT else spec.n
            start = time.perf_counter()
            if budget.left() <= 0:
                found = [dict(part=part, error="skipped: time budget")]
            else:
                try:
                    found = (tol_rows(model, method, size, spec.tols, budget, spec.chunks) if part == "tol"
                             else [antithetic_row(model, method, size, rounds, spec.seeds)])
                except Exception as error:
                    found = [dict(part=part, error=f"{type(error).__name__}: {error}"[:300])]
            for f in found:
                rows.append(_row(model, method, f, batch))
                if not args.quiet:
                    print(format_row(rows[-1]), flush=True)
            if not args.quiet:
                print(f"    ({time.perf_counter() - start:.1f} s)", flush=True)
    return rows


def format_row(row: dict) -> str:
    head = f"  {row['part']:<10} {row['model'] or '-':>11} B={row['B']} {row['method']:<20}"
    if row["part"] == "tol" and row.get("n_mean") is not None:
        text = (f"tol {row['tol']:<5} n mean {row['n_mean']:7.1f} max {row['n_max']:6.0f} reached "
                f"{row['reached']:.2f} {row['t_tol_s']:.2f} s")
        if row.get("n_fixed") is not None:
            text += (f" | fixed n {row['n_fixed']:.0f} {row['t_fixed_s']:.2f} s: time x{row['time_saving']:.2f}, "
                     f"samples x{row['sample_saving']:.2f}")
        return f"{head} {text}" + (f" | {row['error']}" if row["error"] else "")
    if row["part"] == "antithetic" and row.get("efficiency") is not None:
        seeds = f" (over {row['seeds']} seeds: var x{row['var_ratio_seeds']:.2f})" if row.get("seeds") else ""
        return (f"{head} var x{row['var_ratio']:.2f} time x{row['time_ratio']:.2f} -> efficiency "
                f"{row['efficiency']:.2f}{seeds}")
    return f"{head} {row['error']}"


def plot(rows, path) -> None:
    plt = plotting.plt()
    tol_rows_ = [r for r in rows if r["part"] == "tol" and r.get("n_mean") is not None]
    anti = [r for r in rows if r["part"] == "antithetic" and r.get("efficiency") is not None]
    if plt is None or not (tol_rows_ or anti):
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "-"))

    def bars(ax, chosen, value, title, ylabel):
        models = list(dict.fromkeys(r["model"] for r in chosen))
        width = 0.8 / max(len(models), 1)
        for i, name in enumerate(models):
            mine = {r["method"]: r for r in chosen if r["model"] == name}
            xs = [j + (i - (len(models) - 1) / 2) * width for j, meth in enumerate(methods) if meth in mine]
            ax.bar(xs, [value(mine[meth]) for meth in methods if meth in mine], width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(methods)), [m.replace("mollify-", "mo-") for m in methods], rotation=40, ha="right",
                      fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7)

    saved = [r for r in tol_rows_ if r.get("sample_saving")]
    if saved:  # the model with the most measured savings: samples saved (bars) and time saved (dots) per tol
        model = max(dict.fromkeys(r["model"] for r in saved), key=lambda m: sum(r["model"] == m for r in saved))
        mine = [r for r in saved if r["model"] == model and not r.get("chunk_size")]
        tols = sorted({r["tol"] for r in mine}, reverse=True)
        ax, width = axes[0], 0.8 / max(len(tols), 1)
        for i, tol in enumerate(tols):
            at = {r["method"]: r for r in mine if r["tol"] == tol}
            xs = [j + (i - (len(tols) - 1) / 2) * width for j, meth in enumerate(methods) if meth in at]
            ax.bar(xs, [at[m]["sample_saving"] for m in methods if m in at], width, label=f"tol {tol}: samples")
            ax.plot(xs, [at[m]["time_saving"] for m in methods if m in at], "k.", markersize=6)
        ax.plot([], [], "k.", label="time (fixed / tol)")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(methods)), [m.replace("mollify-", "mo-") for m in methods], rotation=40, ha="right",
                      fontsize=8)
        ax.set_title(f"tol=: fixed-n ladder / tol, {model} B={mine[0]['B']} (samples: B n_fixed / sum n_b)", fontsize=9)
        ax.set_ylabel("saving (x)", fontsize=8)
        ax.legend(fontsize=7)
    if anti:
        bars(axes[1], anti, lambda r: r["efficiency"], "antithetic: (var x time) plain / antithetic", "efficiency (x)")
    fig.suptitle(f"fastmollify convergence - {rows[0]['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
