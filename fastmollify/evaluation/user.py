"""The tables a user's model allows: a torchvision architecture with user weights on an image folder.

No masks and no random-label or shifted models: sparseness, insertion / deletion AUC and SIC / AIC
for paper 2's methods and paper 1's kernels, under either protocol.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import data, models
from . import specs, tables
from .config import FULL, PROTOCOLS, Config
from .measure import maps, targets
from .. import metrics

__all__ = ["run_user"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def run_user(out, *, arch: str, weights, folder, images: int = 32, size: int = 224, protocol: str = "default",
             config: Config | None = None, log=print) -> dict:
    """Paper 2's and paper 1's rows on ``images`` images of an ImageFolder, ImageNet-normalised, with bounds
    (-2.117904, 2.64) as the AdaptGrad paper; writes ``user_<arch>.md`` and ``user_<arch>.json`` to ``out``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    cfg = config or FULL
    proto = PROTOCOLS[protocol]
    model = models.torchvision_model(arch, weights=weights)
    x, y = data.imagefolder(folder, size=size, limit=images, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    lo, hi = -2.117904, 2.64
    ctx = specs.Ctx(bounds=(lo, hi), adaptive_bounds=(lo, hi), ig_bounds=(lo, hi))
    t_all = targets(model, x, y, proto)
    rows = {**specs.paper2(cfg, proto), **{k: v for k, v in specs.paper1(cfg, proto).items() if k != "Grad"}}
    res, seconds = {}, {}
    for name, spec in rows.items():
        start = time.perf_counter()
        mp = maps(spec, model, x, t_all, ctx)
        fd = metrics.insertion_deletion(model, x, mp, t_all, steps=cfg.faith_steps, insertion_baseline=lo,
                                        deletion_baseline=lo)
        pc = metrics.pic(model, x, mp, t_all, bounds=(lo, hi), seed=cfg.seed)
        res[name] = {"sparseness": metrics.sparseness(mp).double().numpy(),
                     "insertion AUC": fd["insertion"].double().numpy(), "deletion AUC": fd["deletion"].double().numpy(),
                     "SIC AUC": pc["sic"].double().numpy(), "AIC AUC": pc["aic"].double().numpy()}
        seconds[name] = time.perf_counter() - start
        log(f"  {arch} {name}: {seconds[name]:.1f} s")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    body = (f"### {arch} ({weights}) on {len(x)} images of {folder}, {protocol} protocol\n\n"
            + tables.table(res, ["sparseness", "insertion AUC", "deletion AUC", "SIC AUC", "AIC AUC"], seconds))
    (out / f"user_{arch}.md").write_text(body)
    summary = {k: {m: dict(zip(("mean", "se", "images"), tables.mean_se(v))) for m, v in r.items()} for k, r in res.items()}
    (out / f"user_{arch}.json").write_text(json.dumps(dict(arch=arch, weights=str(weights), folder=str(folder),
                                                           protocol=protocol, images=len(x), results=summary), indent=1))
    log(f"written to {out / f'user_{arch}.md'}")
    return summary
