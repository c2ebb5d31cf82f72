"""Results I/O: ``results/<script>_<cpu|gpu>.json`` and ``.csv`` (timing rows with their ratios attached)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from . import RESULTS
from .ratios import attach_ratios
from .runner import ROW_FIELDS


def device_tag(device) -> str:
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


def finish(rows: list, script: str, device, args, plot: Callable) -> list:
    """Write a script's rows (and, unless ``--no-plot``, its PNG next to them); returns the rows."""
    path = write_rows(rows, script, device, args.out)
    if not args.no_plot:
        plot(rows, path.with_suffix(".png"))
    return rows


def write_rows(rows: Sequence[dict], script: str, device, out: Optional[Path] = None) -> Path:
    """Write a timing script's rows, ratios attached, to ``<out>/<script>_<cpu|gpu>.json`` and ``.csv``."""
    attach_ratios(rows)
    return write_table(rows, script, device, ROW_FIELDS, out)


def write_table(rows: Sequence[dict], script: str, device, fields: Sequence[str], out: Optional[Path] = None) -> Path:
    """Write ``<out>/<script>_<cpu|gpu>.json`` (every key) and ``.csv`` (``fields``); returns the JSON path."""
    out = Path(out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{script}_{device_tag(device)}.json"
    path.write_text(json.dumps(list(rows), indent=1) + "\n")
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(path) -> list[dict]:
    return json.loads(Path(path).read_text())
