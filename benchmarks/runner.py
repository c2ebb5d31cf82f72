"""Running a configuration's cases into result rows: one flat dict per case, the same fields in every script.

``run_cases`` measures the cases of one ``Setup`` (interleaved, ``timing.measure_group``, or each
in a fresh process, ``fresh_process``) and returns one row each (``ROW_FIELDS``, plus the calls
in round order, ``times_s``); ``ratios.attach_ratios`` later adds each row's ratio to its floor.
"""
from __future__ import annotations

import itertools
import os
import platform
import statistics
import subprocess
import time
from typing import Optional, Sequence

import torch

from . import ROOT
from .contenders import Case, label, resolve_backend
from .fresh_process import measure_in_subprocess
from .timing import Budget, Measure, measure_group
from .zoo import Setup

ROW_FIELDS = (
    "script", "device", "device_type", "torch", "label", "impl", "backend", "method", "model", "dtype",
    "channels_last", "image", "B", "N", "n", "m", "chunk", "median_s", "p25_s", "p75_s", "min_s", "max_s",
    "spread", "repeats", "throughput", "peak_mem_bytes", "mem_method", "peak_rss_bytes", "floor_s", "ratio_to_floor",
    "ratio_kind", "ratio_of_mins", "group", "floor_mem_bytes", "mem_ratio_to_floor", "weights_bytes", "error", "commit",
    "timestamp")


def _backend_of(setup: Setup, case: Case):
    """(backend name, None) or (the asked name, why it cannot serve)."""
    if case.impl != "fastmollify":
        return case.impl, None
    try:
        return resolve_backend(case.backend, setup.device), None
    except Exception as error:
        return case.backend, f"{type(error).__name__}: {error}"[:300]


_GROUPS = itertools.count()


def run_cases(script: str, setup: Setup, cases: Sequence[Case], repeats: int, budget: Optional[Budget] = None,
              fresh_process: bool = False, verbose: bool = True) -> list:
    """Measure ``cases`` on ``setup`` (interleaved, or each in a fresh process) and return their rows.

    Interleaved rows share a ``group`` id: their ``times_s`` are in round order, call r of one
    case next to call r of the others, which is what makes paired ratios (``attach_ratios``) possible.
    """
    group = None if fresh_process else f"{os.getpid()}-{next(_GROUPS)}"
    backends = [_backend_of(setup, case) for case in cases]
    results: list = [Measure(error=why) if why else None for _, why in backends]
    todo = [i for i, r in enumerate(results) if r is None]
    if fresh_process:
        for i in todo:
            results[i] = measure_in_subprocess(setup.spec, cases[i], repeats, budget)
    else:
        for i, result in zip(todo, measure_group(setup, [cases[i] for i in todo], repeats, budget)):
            results[i] = result
    rows = [make_row(script, setup, case, backend, result, group)
            for case, (backend, _), result in zip(cases, backends, results)]
    if verbose:
        for row in rows:
            print(format_row(row), flush=True)
    return rows


_DEVICE_NAMES: dict = {}


def device_name(device: torch.device) -> str:
    device = torch.device(device)
    key = str(device)
    if key not in _DEVICE_NAMES:
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
        else:
            name = platform.processor() or platform.machine()
            try:
                with open("/proc/cpuinfo") as f:
                    name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            except (OSError, StopIteration):
                pass
            name = f"{name} ({torch.get_num_threads()} threads)"
        _DEVICE_NAMES[key] = name
    return _DEVICE_NAMES[key]


_COMMIT = None


def commit() -> str:
    global _COMMIT
    if _COMMIT is None:
        try:
            _COMMIT = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT, timeout=10).stdout.strip()
        except Exception:
            _COMMIT = ""
    return _COMMIT


def make_row(script: str, setup: Setup, case: Case, backend: str, result: Measure,
             group: Optional[str] = None) -> dict:
    times = sorted(result.times)
    median = statistics.median(times) if times else None
    quartiles = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [median] * 3
    samples = case.samples
    return {
        "script": script, "device": device_name(setup.device), "device_type": setup.device.type,
        "torch": torch.__version__, "label": label(case, backend), "impl": case.impl, "backend": backend,
        "method": case.method, "model": setup.spec.model, "dtype": setup.spec.dtype,
        "channels_last": setup.spec.channels_last, "image": setup.image, "B": setup.spec.batch, "N": samples,
        "n": case.n, "m": case.m, "chunk": case.chunk, "median_s": median,
        "p25_s": quartiles[0] if times else None, "p75_s": quartiles[2] if times else None,
        "min_s": times[0] if times else None, "max_s": times[-1] if times else None,
        "times_s": list(result.times), "group": group,
        "spread": (quartiles[2] - quartiles[0]) / median if times and median else None,
        "repeats": len(times),
        "throughput": setup.spec.batch * samples / median if median else None,
        "peak_mem_bytes": result.peak, "mem_method": result.mem_method, "peak_rss_bytes": result.peak_rss,
        "floor_s": None, "ratio_to_floor": None, "ratio_kind": None, "ratio_of_mins": None,
        "floor_mem_bytes": None, "mem_ratio_to_floor": None,
        "weights_bytes": sum(p.numel() * p.element_size() for p in setup.model.parameters()),
        "error": result.error, "commit": commit(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def format_bytes(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024


def format_row(row: dict) -> str:
    if row["median_s"] is None:
        what = row["error"] or "no timing"
    else:
        what = (f"{row['median_s'] * 1e3:9.2f} ms (+-{(row['spread'] or 0) * 50:4.1f}%) "
                f"{row['throughput']:10.0f} img/s  mem {format_bytes(row['peak_mem_bytes'])}")
    return (f"  {row['model']:>14} {row['dtype']}{'+cl' if row['channels_last'] else ''} B={row['B']:<4} "
            f"N={row['N']:<4} chunk={row['chunk']:<3} {row['method']:<20} {row['label']:<24} {what}")
