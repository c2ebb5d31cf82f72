"""Evaluation of smoothing inside the network (``layer=``): text, tabular, Smooth Grad-CAM.

``run(out, quick=False)`` writes to ``out`` (default ``docs/evaluation``):

* ``layers.md``: three tables and paper 1's kernel question across architectures:
  - **Transformer, text** (``fastmollify.text``): noise at the token embeddings of the tiny
    transformer (``layer="embed"``, the attention mask as an extra argument); token scores by
    ``fm.token_scores`` of gradient × embedding (signed sum) and of the gradient's norm (l2),
    padding masked; localisation (positive score mass on the planted tokens), pointing game and
    precision at k (k = the number planted) against the planted tokens;
  - **MLP, tabular** (``fastmollify.tabular``): noise at the input; share of |map| on the 30 real
    features (the other 30 are permuted decoys) and deletion AUC (features set to their training
    mean in order of |map|; softmax of the target; lower is better);
  - **CNN, Smooth Grad-CAM** (shapes, ``fm.gradcam``): mass of the map inside the shape's mask and
    pointing game, plain Grad-CAM against noise at the layer for every method, and SmoothGrad's
    noise at the input (``fm.gradcam(..., noise_at="input")``).
* ``layers.json``: every number and setting; ``layers_text.png``, ``layers_gradcam.png``: maps.

Every method of a table gets the same noise scale: sigma (and each kernel's r) a share of the
range R of the perturbed values (the embedding table's range, the features' mean range, the
feature map's range over the test images); AdaptGrad and ClipGrad get those values' bounds.
Values are means over examples ± their standard error; "Δ vs Grad" is the paired difference.

``python -m fastmollify.evaluation.inside [--quick] [--out DIR]``; ``--quick`` runs at toy size
in seconds (for tests).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import data, layers, methods, metrics, models, tabular, text, viz
from ..gradcam import gradcam as smooth_gradcam

__all__ = ["Config", "FULL", "QUICK", "run", "text_table", "tabular_table", "gradcam_table", "main"]

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular")


@dataclass
class Config:
    """Sizes and settings; ``FULL`` runs in about two minutes on 2 shared CPU cores."""
    text_sequences: int = 128  # text.planted(k, seed=TEXT_TEST_SEED)
    tabular_rows: int = 0  # 0: the whole held-out quarter of breast_cancer (143 rows)
    shapes_images: int = 100  # data.shapes(k, seed=SHAPES_TEST_SEED)
    n: int = 32  # samples per example
    noise_level: float = 0.2  # sigma = noise_level * R
    kernel_r: tuple = (0.1, 0.4)  # each kernel's eps from (r * R, alpha)
    alpha: float = 0.95
    c: float = 0.95  # AdaptGrad's coverage
    deletion_steps: int = 20
    cam_layer: str = "6"  # demo_cnn's last convolution (before its ReLU)
    cam_linear_layer: str = "7"  # its ReLU: only pooling and the linear head follow
    examples: int = 4  # examples drawn in the figures
    seed: int = 0
    quick: bool = False  # toy models for the shapes (trained in a second), for tests


FULL = Config()
QUICK = Config(text_sequences=8, tabular_rows=8, shapes_images=4, n=4, kernel_r=(0.4,), deletion_steps=4, examples=2,
               quick=True)
SHAPES_TEST_SEED = 7


def _specs(cfg: Config, scale: float, bounds) -> dict:
    """label -> (method, options): every method that takes ``layer=``, noise a share of the range ``scale``."""
    sigma = cfg.noise_level * scale
    specs = {
        "Grad": ("gradient", {}),
        "SmoothGrad": ("smoothgrad", dict(n=cfg.n, sigma=sigma)),
        "ClipGrad": ("clipgrad", dict(n=cfg.n, sigma=sigma, bounds=bounds)),
        f"AdaptGrad (c={cfg.c:g})": ("adaptgrad", dict(n=cfg.n, c=cfg.c, bounds=bounds)),
    }
    for r in cfg.kernel_r:
        for kernel in KERNELS:
            specs[f"{kernel} (r={r:g})"] = ("mollify", dict(n=cfg.n, kernel=kernel, r=r * scale, alpha=cfg.alpha))
    return specs


def _summary(values: torch.Tensor) -> dict:
    """mean ± standard error over the finite values, and their count."""
    v = values.double().cpu()
    v = v[torch.isfinite(v)]
    k = int(v.numel())
    if k == 0:
        return dict(mean=math.nan, se=math.nan, count=0)
    return dict(mean=float(v.mean()), se=float(v.std() / math.sqrt(k)) if k > 1 else math.nan, count=k)


def _paired(values: torch.Tensor, reference: torch.Tensor) -> dict:
    """The mean paired difference ``values - reference`` ± its standard error."""
    return _summary(values.double() - reference.double())


def _per_method(specs: dict, call, measure, log) -> tuple[dict, dict]:
    """Run each spec: ``call(method, options)`` gives a map, ``measure(map)`` a dict of per-example tensors.
    Returns (label -> metric -> per-example values, label -> seconds)."""
    values, seconds = {}, {}
    for label, (method, options) in specs.items():
        start = time.perf_counter()
        result = call(method, options)
        seconds[label] = time.perf_counter() - start
        values[label] = measure(result)
        log(f"  {label}: {seconds[label]:.1f} s")
    return values, seconds


def _table(values: dict, seconds: dict, columns: dict, main: str) -> dict:
    """Summaries per method and metric, plus the paired difference of ``main`` against Grad."""
    rows = {}
    for label, per in values.items():
        row = {name: _summary(per[name]) for name in columns}
        row["delta_vs_grad"] = _paired(per[main], values["Grad"][main])
        row["seconds"] = round(seconds[label], 2)
        rows[label] = row
    return rows


# --- the three tasks ----------------------------------------------------------------------------------

TEXT_COLUMNS = {"loc_gxe": "localisation g×e ↑", "point_gxe": "pointing g×e ↑", "prec_gxe": "precision@k g×e ↑",
                "loc_l2": "localisation ‖g‖ ↑", "point_l2": "pointing ‖g‖ ↑", "prec_l2": "precision@k ‖g‖ ↑"}


def text_table(cfg: Config = FULL, log=print) -> dict:
    """Token localisation on the planted-token task for every method at ``layer="embed"``."""
    model = text.text_model()
    ids, mask, labels, planted = text.planted(cfg.text_sequences, seed=text.TEXT_TEST_SEED)
    weight = model.embed.weight.detach()
    lo, hi = float(weight.min()), float(weight.max())  # every embedding value lies in the table's range
    embedded = model.embed(ids).detach()
    specs = _specs(cfg, hi - lo, (lo, hi))

    def call(method, options):
        return getattr(methods, method)(model, ids, labels, layer="embed", additional_forward_args=(mask,),
                                        seed=cfg.seed, **options)

    def measure(attr):
        out, kept = {}, {}
        for name, scores in (("gxe", layers.token_scores(attr * embedded, "sum", mask=mask)),
                             ("l2", layers.token_scores(attr, "l2", mask=mask)),
                             ("sum", layers.token_scores(attr, "sum", mask=mask))):
            out[f"loc_{name}"] = text.token_localisation(scores, planted, mask)
            out[f"point_{name}"] = text.token_pointing(scores, planted, mask)
            out[f"prec_{name}"] = text.token_precision_at_k(scores, planted, mask)
            kept[name] = scores[:cfg.examples]
        out["_scores"] = kept
        return out

    log(f"text: {len(ids)} sequences, tiny transformer at layer 'embed', N = {cfg.n}")
    values, seconds = _per_method(specs, call, measure, log)
    columns = dict(TEXT_COLUMNS, loc_sum="localisation Σg ↑", point_sum="pointing Σg ↑", prec_sum="precision@k Σg ↑")
    return dict(rows=_table(values, seconds, columns, "loc_gxe"), columns=TEXT_COLUMNS, main="loc_gxe",
                accuracy=text.text_accuracy(model, len(ids)) if len(ids) else math.nan,
                chance=_summary(text.chance_share(planted, mask)), range=[lo, hi],
                parameters=sum(p.numel() for p in model.parameters()),
                examples=dict(ids=ids[:cfg.examples].tolist(), mask=mask[:cfg.examples].tolist(),
                              planted=planted[:cfg.examples].tolist(),
                              scores={k: v["_scores"]["gxe"].tolist() for k, v in values.items()}))


TABULAR_COLUMNS = {"relevant": "share on real features ↑", "deletion": "deletion AUC ↓"}


def tabular_table(cfg: Config = FULL, log=print) -> dict:
    """Share of |map| on the real features (vs permuted decoys) and deletion AUC, noise at the input."""
    task = tabular.breast_cancer()
    model = tabular.tabular_model()
    rows = task["test_idx"] if not cfg.tabular_rows else task["test_idx"][:cfg.tabular_rows]
    x, y = task["x"][rows], task["y"][rows]
    lo, hi = task["x"].min(0).values, task["x"].max(0).values
    scale = float((hi - lo)[task["relevant"]].mean())  # standardised features: R = their mean range
    specs = _specs(cfg, scale, (lo, hi))
    flat = torch.nn.Sequential(torch.nn.Flatten(), model).eval()  # metrics' curves take [B, C, ...]

    def call(method, options):
        return getattr(methods, method)(model, x, y, seed=cfg.seed, **options)

    def measure(attr):
        curve = metrics.deletion_curve(flat, x[:, None], attr[:, None], y, steps=cfg.deletion_steps,
                                       baseline="zeros")  # zero = the training mean
        return dict(relevant=tabular.relevant_share(attr, task["relevant"]), deletion=metrics.auc(curve))

    log(f"tabular: {len(x)} rows, MLP, noise at the input, N = {cfg.n}")
    values, seconds = _per_method(specs, call, measure, log)
    return dict(rows=_table(values, seconds, TABULAR_COLUMNS, "relevant"), columns=TABULAR_COLUMNS, main="relevant",
                accuracy=models.accuracy(model, x, y), chance=dict(mean=0.5, se=0.0, count=len(x)), range=scale,
                parameters=sum(p.numel() for p in model.parameters()))


def _shapes_cnn(cfg: Config):
    if cfg.quick:  # a toy model: the quick run checks the plumbing, not the numbers
        images, labels, _ = data.shapes(200, seed=1000)
        return models.train(models.demo_cnn(), images, labels, epochs=1, seed=0, data_key="shapes(n=200,seed=1000)")
    try:
        return models.shapes_model()
    except FileNotFoundError:  # a copy without shipped weights
        return models.shapes_model(retrain=True)


def _activation(model, x, layer: str) -> torch.Tensor:
    name, module = layers.resolve(model, layer)
    return layers.probe(model, (x,), (), module, name, None)


GRADCAM_COLUMNS = {"localisation": "mass in mask ↑", "pointing": "pointing game ↑"}


def gradcam_table(cfg: Config = FULL, log=print) -> dict:
    """Grad-CAM vs Smooth Grad-CAM (noise at the layer, every method; SmoothGrad noise at the input) on shapes."""
    model = _shapes_cnn(cfg)
    x, y, masks = data.shapes(cfg.shapes_images, seed=SHAPES_TEST_SEED)
    activation = _activation(model, x, cfg.cam_layer)
    lo, hi = float(activation.min()), float(activation.max())
    specs = _specs(cfg, hi - lo, (lo, hi))
    specs[f"SmoothGrad, input noise (σ={cfg.noise_level:g})"] = ("input", dict(n=cfg.n, sigma=cfg.noise_level))
    cams = {}

    def call(method, options):
        if method == "input":  # Omeiza et al.'s Smooth Grad-CAM: SmoothGrad noise on the image
            return smooth_gradcam(model, x, y, layer=cfg.cam_layer, method="smoothgrad", noise_at="input",
                                  seed=cfg.seed, **options)
        return smooth_gradcam(model, x, y, layer=cfg.cam_layer, method=method, seed=cfg.seed, **options)

    def measure(cam):
        cams[len(cams)] = cam[:cfg.examples]
        return dict(localisation=metrics.attribution_localisation(cam[:, None], masks),
                    pointing=metrics.pointing_game(cam[:, None], masks))

    log(f"Grad-CAM: {len(x)} shapes images, layer {cfg.cam_layer!r} (range {lo:.3g} .. {hi:.3g}), N = {cfg.n}")
    values, seconds = _per_method(specs, call, measure, log)
    # at the last ReLU only average pooling and a linear layer follow: the gradient there is constant,
    # so noise at that layer (or anywhere) leaves Grad-CAM unchanged
    plain = smooth_gradcam(model, x, y, layer=cfg.cam_linear_layer, method="gradient")
    linear_act = _activation(model, x, cfg.cam_linear_layer)
    smooth = smooth_gradcam(model, x, y, layer=cfg.cam_linear_layer, method="smoothgrad", n=cfg.n,
                                    sigma=cfg.noise_level * float(linear_act.max() - linear_act.min()), seed=cfg.seed)
    difference = float((smooth - plain).abs().max() / plain.abs().max().clamp_min(1e-12))
    return dict(rows=_table(values, seconds, GRADCAM_COLUMNS, "localisation"), columns=GRADCAM_COLUMNS,
                main="localisation", accuracy=models.accuracy(model, x, y), range=[lo, hi],
                chance=_summary(masks.flatten(1).double().mean(1)),
                linear_layer=dict(layer=cfg.cam_linear_layer, max_relative_difference=difference),
                maps={label: cams[i] for i, label in enumerate(specs)}, images=x[:cfg.examples],
                labels=y[:cfg.examples].tolist())


# --- writing ------------------------------------------------------------------------------------------

def _fmt(s: dict, digits: int = 3) -> str:
    if s["count"] == 0 or s["mean"] != s["mean"]:
        return "—"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['se']:.{digits}f}" if s["se"] == s["se"] else "")


def _markdown_table(table: dict, higher_better: dict) -> list[str]:
    columns = table["columns"]
    lines = ["| method | " + " | ".join(columns.values()) + " | Δ vs Grad (" + columns[table["main"]].split(" ")[0]
             + ") | seconds |", "|---" * (len(columns) + 3) + "|"]
    best = {}
    for name in columns:
        means = [row[name]["mean"] for row in table["rows"].values() if row[name]["mean"] == row[name]["mean"]]
        if means:
            best[name] = max(means) if higher_better.get(name, True) else min(means)
    for label, row in table["rows"].items():
        cells = []
        for name in columns:
            text_ = _fmt(row[name])
            cells.append(f"**{text_}**" if best.get(name) is not None and row[name]["mean"] == best[name] else text_)
        d = row["delta_vs_grad"]
        delta = "—" if label == "Grad" else (f"{d['mean']:+.3f} ± {d['se']:.3f}" if d["se"] == d["se"]
                                             else f"{d['mean']:+.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {delta} | {row['seconds']:.1f} |")
    return lines


def _kernel_question(results: dict, cfg: Config) -> list[str]:
    """Paper 1's kernel question: one row per architecture and r, the five kernels and Grad, main metric."""
    parts = [("Transformer, text: localisation g×e ↑", results["text"]),
             ("MLP, tabular: share on real features ↑", results["tabular"]),
             ("CNN, Smooth Grad-CAM: mass in mask ↑", results["gradcam"])]
    lines = ["| architecture, metric | r | Grad | " + " | ".join(KERNELS) + " |", "|---" * (len(KERNELS) + 3) + "|"]
    for title, table in parts:
        main = table["main"]
        for r in cfg.kernel_r:
            values = {"Grad": table["rows"]["Grad"][main]}
            values.update({k: table["rows"][f"{k} (r={r:g})"][main] for k in KERNELS})
            top = max(v["mean"] for v in values.values())
            cells = [f"**{_fmt(v)}**" if v["mean"] == top else _fmt(v) for v in values.values()]
            lines.append(f"| {title} | {r:g} | " + " | ".join(cells) + " |")
    return lines


def _text_figure(table: dict, path: Path, labels=None) -> Path:
    """Token scores (g×e, each row scaled by its largest |score|) per method, planted tokens boxed."""
    plt = viz._plt()
    ex = table["examples"]
    names = labels or list(ex["scores"])
    count = len(ex["ids"])
    fig, axes = plt.subplots(count, 1, figsize=(0.36 * len(ex["ids"][0]) + 2.6, 0.3 * len(names) * count + 0.9),
                             squeeze=False)
    for i in range(count):
        ax = axes[i, 0]
        length = int(sum(ex["mask"][i]))
        grid = np.array([ex["scores"][name][i][:length] for name in names], dtype=np.float64)
        grid = grid / np.maximum(np.abs(grid).max(1, keepdims=True), 1e-12)
        ax.imshow(grid, cmap=viz.SIGNED_CMAP, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        for t in range(length):
            if ex["planted"][i][t]:
                ax.add_patch(plt.Rectangle((t - 0.5, -0.5), 1, len(names), fill=False, edgecolor="black", lw=1.6))
        ax.set_xticks(range(length))
        ax.set_xticklabels([str(v) for v in ex["ids"][i][:length]], fontsize=6)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_title(f"sequence {i}: token ids; planted tokens boxed", fontsize=8)
    fig.suptitle("Token scores (gradient × embedding) of the true class: red +, blue −", fontsize=9)
    return viz._save(fig, path)


def _sum_sentence(table: dict) -> str:
    """What layers.json's third token score (the plain signed sum of the gradient) shows, from the numbers."""
    rows = table["rows"].values()
    worse = all(r["loc_sum"]["mean"] < min(r["loc_gxe"]["mean"], r["loc_l2"]["mean"]) for r in rows)
    low, high = min(r["loc_sum"]["mean"] for r in rows), max(r["loc_sum"]["mean"] for r in rows)
    return (f"The plain signed sum of the gradient over the hidden units (Σg: `fm.token_scores(attr, \"sum\")`, "
            f"without the embedding) localises {low:.3f} to {high:.3f} across the methods"
            + (", below both scores above for every method" if worse else "") + "; it is in layers.json.")


def _write_markdown(results: dict, cfg: Config, path: Path) -> Path:
    t, tab, cam = results["text"], results["tabular"], results["gradcam"]
    down = {"deletion": False}
    lines = [
        "# Smoothing inside the network: text, tabular, Smooth Grad-CAM",
        "",
        f"Generated by `python -m fastmollify.evaluation.inside{' --quick' if cfg.quick else ''}` "
        f"({results['seconds']:.0f} s). N = {cfg.n} samples per example; every method gets sigma = "
        f"{cfg.noise_level:g} R and each kernel its eps from (r R, alpha = {cfg.alpha:g}), R the range of the "
        f"perturbed values; AdaptGrad (c = {cfg.c:g}) and ClipGrad get their bounds. Mean ± standard error over "
        "examples; best in bold; Δ vs Grad: the paired per-example difference of the first metric.",
        "",
        "## Paper 1's kernel question across architectures",
        "",
        *_kernel_question(results, cfg),
        "",
        "The CNN row with noise at the input (input-gradient maps on the same shapes) is in "
        "[paper1_kernels.md](paper1_kernels.md).",
        "",
        "## Transformer, text: token localisation (noise at the token embeddings)",
        "",
        f"`fastmollify.text`: {cfg.text_sequences} test sequences of "
        f"`planted(k, seed={text.TEXT_TEST_SEED})` (length {text.MIN_LENGTH}-{text.LENGTH}, padded; 1-{text.MAX_PLANTED} "
        f"class tokens planted among uniform filler; only they depend on the label). Tiny transformer "
        f"({t['parameters']} parameters, 2 encoder layers), test accuracy {t['accuracy']:.3f}. Attributions at "
        f"`layer=\"embed\"` with the attention mask as an extra argument; R = the embedding table's range "
        f"[{t['range'][0]:.2f}, {t['range'][1]:.2f}]. Token scores: `fm.token_scores(attr * embedding, \"sum\", "
        f"mask)` (g×e, signed; localisation counts its positive mass) and `fm.token_scores(attr, \"l2\", mask)` "
        f"(‖g‖). A uniform map's localisation (the planted share of the tokens): {_fmt(t['chance'])}.",
        "",
        *_markdown_table(t, {}),
        "",
        _sum_sentence(t),
        "",
        "## MLP, tabular: real features against permuted decoys (noise at the input)",
        "",
        f"`fastmollify.tabular`: scikit-learn's breast-cancer data (standardised), 30 real features + 30 decoys "
        f"(each a real feature with its rows permuted: same distribution, independent of the label). MLP "
        f"60-64-64-2 ({tab['parameters']} parameters), test accuracy {tab['accuracy']:.3f} on "
        f"{tab['rows']['Grad']['relevant']['count']} held-out rows. R = the features' mean range "
        f"({tab['range']:.2f} standard deviations); AdaptGrad/ClipGrad bounds per feature. A uniform map puts "
        f"0.5 on the real features. Deletion: features set to their training mean in order of |map|, the "
        f"target's softmax, {cfg.deletion_steps} steps.",
        "",
        *_markdown_table(tab, down),
        "",
        "## CNN, Smooth Grad-CAM on shapes",
        "",
        f"`fm.gradcam` on the shapes CNN ({'a toy model trained for one epoch (--quick)' if cfg.quick else '`models.shapes_model()`'}, accuracy {cam['accuracy']:.3f} on these "
        f"images), {cfg.shapes_images} test images of `data.shapes(k, seed={SHAPES_TEST_SEED})`, layer "
        f"`{cfg.cam_layer!r}` (the last convolution, before its ReLU), noise at the layer, R = its range over the "
        f"images [{cam['range'][0]:.1f}, {cam['range'][1]:.1f}]. The last row puts SmoothGrad's noise on the "
        f"input instead (σ = {cfg.noise_level:g} of the [0, 1] pixel range; a reference loop in this module). "
        f"Mass in mask: the share of the map inside the shape (a uniform map: {_fmt(cam['chance'])}).",
        "",
        *_markdown_table(cam, {}),
        "",
        f"At layer `{cam['linear_layer']['layer']!r}` (the ReLU after that convolution) only average pooling and "
        f"the linear head follow, so the gradient there does not depend on the activation: Smooth Grad-CAM equals "
        f"Grad-CAM whatever the noise (measured: largest relative difference "
        f"{cam['linear_layer']['max_relative_difference']:.1e}). The same holds at the last stage of any "
        f"network with a global-pooling + linear head (ResNets, ...): smooth a layer with a nonlinearity after it.",
        "",
        "Figures: [layers_text.png](layers_text.png) (token scores), [layers_gradcam.png](layers_gradcam.png) "
        "(Grad-CAM maps). Numbers and settings: [layers.json](layers.json).",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(out="docs/evaluation", quick: bool = False, config: Config | None = None, log=print,
        threads: int | None = 1) -> dict:
    """Run the three evaluations and write ``layers.md``, ``layers.json`` and the figures to ``out``.

    Returns the results (as written to ``layers.json``). ``quick``: ``QUICK`` sizes (seconds).
    ``threads``: torch threads meanwhile (default 1: these batches are small, and on shared cores
    more threads spin against other processes, measured 5x slower; None keeps torch's setting).
    """
    cfg = config if config is not None else (QUICK if quick else FULL)
    if not isinstance(cfg, Config):
        raise TypeError(f"config must be a fastmollify.evaluation.inside.Config, got {type(cfg).__name__}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        results = dict(text=text_table(cfg, log), tabular=tabular_table(cfg, log), gradcam=gradcam_table(cfg, log))
    finally:
        torch.set_num_threads(before)
    results["seconds"] = time.perf_counter() - start
    cam = results["gradcam"]
    last = f"r={cfg.kernel_r[-1]:g}"
    names = [n for n in cam["maps"] if n in ("Grad", "SmoothGrad", f"AdaptGrad (c={cfg.c:g})", f"poisson ({last})",
                                               f"rectangular ({last})") or "input noise" in n]
    labels = [data.SHAPE_CLASSES[c] for c in cam.pop("labels")]
    titles = {"Grad": "Grad-CAM", f"SmoothGrad, input noise (σ={cfg.noise_level:g})": "input noise"}
    viz.grid(cam.pop("images"), {titles.get(n, n): cam["maps"][n] for n in names}, out / "layers_gradcam.png",
             row_labels=labels,
             title=f"Grad-CAM at layer {cfg.cam_layer!r}: plain and smoothed")
    cam.pop("maps")
    shown = ["Grad", "SmoothGrad", f"AdaptGrad (c={cfg.c:g})"] + [f"{k} (r={cfg.kernel_r[-1]:g})" for k in KERNELS]
    _text_figure(results["text"], out / "layers_text.png", shown)
    results["config"] = asdict(cfg)
    (out / "layers.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    _write_markdown(results, cfg, out / "layers.md")
    log(f"wrote {out / 'layers.md'} ({results['seconds']:.0f} s)")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmollify.evaluation.inside", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/evaluation", help="output folder (default docs/evaluation)")
    parser.add_argument("--quick", action="store_true", help="toy sizes, seconds (checks the plumbing)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    run(args.out, quick=args.quick, threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
