"""``evaluate --verify``: rerun a representative subset from scratch and compare with a ``results.json``."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .. import models
from . import specs
from .config import PROTOCOLS, Config
from .measure import evaluate_method, setup

__all__ = ["verify"]


def _config(saved: dict) -> Config:
    fields = Config.__dataclass_fields__
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields})


def _mean_se(values):
    v = np.array([np.nan if x is None else x for x in values], float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0)


def verify(results_path, *, images: int | None = None, rows=None, log=print) -> list:
    """Rerun the rows of ``results['verify']`` on their first ``images`` images in a fresh cache; return the
    differences (empty: everything agrees). Exact: the shipped weights' SHA-256 and the models' test
    accuracies; within the committed standard error over those images: every metric mean. ``rows``:
    names like 'default/paper2/Grad' to rerun only those."""
    path = Path(results_path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist (run `python -m fastmollify evaluate` first)")
    saved = json.loads(path.read_text())
    if "verify" not in saved or "config" not in saved:
        raise ValueError(f"{path} has no 'verify' section: it was written by an older evaluation; regenerate it")
    cfg = _config(saved["config"])
    k = int(images or cfg.verify_images)
    if not 1 <= k <= cfg.verify_images:
        raise ValueError(f"images must be between 1 and {cfg.verify_images} (the images kept in {path.name}), got {k}")
    differences = []
    for name, digest in saved.get("weights", {}).items():
        actual = models.sha256(models.WEIGHTS_DIR / f"{name}.pt")
        if actual != digest:
            differences.append(f"weights {name}: SHA-256 {actual[:16]}... vs committed {digest[:16]}...")
    old_cache = os.environ.get("FASTMOLLIFY_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FASTMOLLIFY_CACHE"] = cache  # fresh: nothing trained or cached earlier is used
        try:
            env = setup(cfg, lambda s: None, retrain=bool(saved.get("retrained")))
            for key, value in saved["accuracy"].items():
                if env["acc"].get(key) != value:
                    differences.append(f"accuracy {key}: {env['acc'].get(key)} vs committed {value} (exact)")
            wanted = None if rows is None else set(rows)
            for proto_name, committed_rows in saved["verify"].items():
                proto = PROTOCOLS[proto_name]
                for key, committed in committed_rows.items():
                    table, row = key.split("/", 1)
                    if wanted is not None and f"{proto_name}/{key}" not in wanted:
                        continue
                    spec = (specs.paper1 if table == "paper1" else specs.paper2)(cfg, proto)[row]
                    new = evaluate_method(spec, env, cfg, proto, shapes_images=k, digits_images=k,
                                          faithfulness=table == "paper2", pic=table == "paper2")
                    for metric, values in committed.items():
                        m_old, se = _mean_se(values[:k])
                        m_new, _ = _mean_se(new[metric][:k].tolist())
                        if math.isnan(m_old) and math.isnan(m_new):
                            continue
                        ok = abs(m_new - m_old) <= se + 1e-6
                        line = f"{proto_name} {key} {metric}: {m_new:.6f} vs committed {m_old:.6f} ± {se:.6f}"
                        log(("  ok   " if ok else "  DIFF ") + line)
                        if not ok:
                            differences.append(line)
        finally:
            if old_cache is None:
                os.environ.pop("FASTMOLLIFY_CACHE", None)
            else:
                os.environ["FASTMOLLIFY_CACHE"] = old_cache
    return differences
