"""The built-in models and data (``setup``), and one method's per-image metric values (``evaluate_method``)."""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import data, metrics, models
from .config import Config, Protocol
from .specs import Ctx

__all__ = ["setup", "maps", "targets", "evaluate_method", "SHAPES", "DIGITS", "DIGITS_SHIFTED"]

SHAPES = Ctx(bounds=(0.0, 1.0), adaptive_bounds=(0.0, 1.0), ig_bounds=(0.0, 1.0))
DIGITS = SHAPES


def DIGITS_SHIFTED(proto: Protocol) -> Ctx:
    """The +1-shifted digits model, explained at x + 1 in [1, 2]."""
    # inside the authors' IG the path runs from the baseline (0 or 1) to x + 1: bounds (0, 2) contain it
    return Ctx(bounds=(1.0, 2.0), adaptive_bounds=proto.shifted_adaptive_bounds, ig_bounds=(0.0, 2.0))


def setup(cfg: Config, log, retrain: bool = False) -> dict:
    """Models (shipped weights, or trained with ``retrain``), test data and test accuracies."""
    t = time.perf_counter()
    n_test = max(cfg.shapes_images, cfg.faith_images, cfg.pic_images, cfg.nsweep_images, cfg.zoo_shapes_images,
                 cfg.sweep_shapes_images, cfg.bias_images, cfg.noise_images, cfg.tol_images, cfg.antithetic_images)
    sx, sy, smask = data.shapes(n_test, seed=models.SHAPES_TEST_SEED)
    env = dict(shapes=models.shapes_model(retrain=retrain), resnet=models.shapes_model(arch="resnet", retrain=retrain),
               sx=sx, sy=sy, smask=smask)
    dx, dy = data.digits()
    for arch in ("cnn", "mlp"):
        d = models.digits_models(arch=arch, retrain=retrain)
        env[f"digits_{arch}"] = d
    idx = env["digits_cnn"]["test_idx"]
    env["dx"], env["dy"] = dx[idx], dy[idx]
    acc = {"shapes CNN": models.accuracy(env["shapes"], sx, sy), "shapes ResNet": models.accuracy(env["resnet"], sx, sy)}
    for arch in ("cnn", "mlp"):
        d = env[f"digits_{arch}"]
        acc[f"digits {arch.upper()} normal"] = models.accuracy(d["normal"], env["dx"], env["dy"])
        acc[f"digits {arch.upper()} random labels"] = models.accuracy(d["random"], env["dx"], env["dy"])
        acc[f"digits {arch.upper()} shifted +1 (on x+1)"] = models.accuracy(d["shifted"], env["dx"] + 1, env["dy"])
    env["acc"] = acc
    log(f"models ready in {time.perf_counter() - t:.1f} s ({len(sx)} shapes test images, {len(idx)} digits); "
        "test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return env


@torch.no_grad()
def targets(model, x, y, proto: Protocol) -> torch.Tensor:
    """The explained class: the label, or the model's prediction (the authors' protocol)."""
    return y if proto.target == "label" else model(x).argmax(1)


def maps(spec, model, x, t, ctx: Ctx, batch: int = 16) -> torch.Tensor:
    """The spec's maps for x, ``batch`` images per call (the example offset keeps each image's noise)."""
    return torch.cat([spec(model, x[i:i + batch], t[i:i + batch], ctx, i) for i in range(0, len(x), batch)])


def _rank_options(proto: Protocol) -> dict:
    return dict(abs=True) if proto.rank == "abs" else dict(scale="diverging")


def evaluate_method(spec, env, cfg: Config, proto: Protocol, *, shapes_model="shapes", digits_arch="cnn",
                    shapes_images=None, digits_images=None, faithfulness=True, pic=True) -> dict:
    """Per-image metric values (float64 NumPy arrays) of one method, on one shapes and one digits model."""
    res = {}
    k = shapes_images or cfg.shapes_images
    if k:
        sm = env[shapes_model]
        sx, sy, smask = env["sx"][:k], env["sy"][:k], env["smask"][:k]
        t = targets(sm, sx, sy, proto)
        mp = maps(spec, sm, sx, t, SHAPES)
        res["sparseness"] = metrics.sparseness(mp)
        res["localisation"] = metrics.attribution_localisation(mp, smask)
        res["pointing game"] = metrics.pointing_game(mp, smask)
        if faithfulness:
            f = min(cfg.faith_images, k)
            fd = metrics.insertion_deletion(sm, sx[:f], mp[:f], t[:f], steps=cfg.faith_steps, insertion_baseline=0.0,
                                            deletion_baseline=0.0)
            res["insertion AUC"], res["deletion AUC"] = fd["insertion"], fd["deletion"]
        if pic:
            p = min(cfg.pic_images, k)
            pc = metrics.pic(sm, sx[:p], mp[:p], t[:p], seed=cfg.seed)
            res["SIC AUC"], res["AIC AUC"] = pc["sic"], pc["aic"]
    kd = digits_images or cfg.digits_images
    if kd:
        d = env[f"digits_{digits_arch}"]
        dx, dy = env["dx"][:kd], env["dy"][:kd]
        normal = maps(spec, d["normal"], dx, targets(d["normal"], dx, dy, proto), DIGITS)
        random = maps(spec, d["random"], dx, targets(d["random"], dx, dy, proto), DIGITS)
        shifted = maps(spec, d["shifted"], dx + 1.0, targets(d["shifted"], dx + 1.0, dy, proto), DIGITS_SHIFTED(proto))
        res["consistency"] = metrics.consistency(normal, random, **_rank_options(proto))
        res["invariance"] = metrics.invariance(normal, shifted, **_rank_options(proto))
    return {name: v.cpu().numpy().astype(np.float64) for name, v in res.items()}
