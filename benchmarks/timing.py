"""Timing: the cases of one configuration, warmed up, then called interleaved, with peak memory.

Timing: one warm-up call per case (the same shapes, run with one chunk's worth of samples and
one weight draw, so compilation, autotuning and allocator growth stay out), then the cases of
one configuration (the contenders at one model, precision and N) are timed interleaved: each
round calls every case once, so load from elsewhere and clock drift hit all contenders alike.
At least ``repeats`` rounds (more, up to ``MAX_REPEATS``, while the cases average under
``MIN_TIMED_S`` of timing), each round on the next of ``ROTATE`` different input batches so no
cache holds the previous call's data. On a GPU each call is bracketed by
``torch.cuda.synchronize`` and timed with CUDA events; on the CPU with ``time.perf_counter``.

Peak memory (``Measure.peak``): on a GPU ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``, minus what was allocated before the call (model and inputs), the
largest over the timed calls. On the CPU, ``memory.profiled_peak_bytes`` in one extra, untimed
call. ``Measure.peak_rss`` keeps the process's peak RSS over each timed call as well
(``memory.reset_peak_rss`` before it).
"""
from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from . import memory
from .contenders import Case, make_runner
from .zoo import ROTATE, Setup

MIN_TIMED_S = 1.0  # calls shorter than this are repeated (beyond ``repeats``) until this much is timed
MAX_REPEATS = 25


class Budget:
    """A wall-clock deadline shared by a script's cases (None: no limit)."""

    def __init__(self, seconds: Optional[float] = None, deadline: Optional[float] = None):
        limits = [t for t in (deadline, None if seconds is None else time.time() + seconds) if t is not None]
        env = os.environ.get("FASTMOLLIFY_BENCH_DEADLINE")
        if env:
            limits.append(float(env))
        self.deadline = min(limits) if limits else None

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()


@dataclass
class Measure:
    times: list = field(default_factory=list)
    peak: Optional[int] = None  # GPU: max_memory_allocated; CPU: the profiler's peak of live tensor bytes
    peak_rss: Optional[int] = None  # CPU: peak resident set size over the call (see the module notes)
    mem_method: str = ""
    error: Optional[str] = None


def measure(setup: Setup, case: Case, repeats: int, budget: Optional[Budget] = None,
            cpu_rss: Optional[bool] = None, after_warmup: Optional[Callable[[], None]] = None) -> Measure:
    """Warm up, then time ``repeats`` calls (fewer if the budget runs short) and record peak memory."""
    return measure_group(setup, [case], repeats, budget, cpu_rss, after_warmup)[0]


def _timed_call(setup: Setup, run: Callable[[int], object], k: int, cpu_rss: bool, result: Measure) -> float:
    """One timed call of ``run(k)``; updates the peak memory of ``result``; the seconds it took."""
    gc.collect()
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
        torch.cuda.reset_peak_memory_stats(setup.device)
        base = torch.cuda.memory_allocated(setup.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with setup.autocast():
            out = run(k)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
        result.peak = max(result.peak or 0, torch.cuda.max_memory_allocated(setup.device) - base)
    else:
        base = memory.reset_peak_rss() if cpu_rss else None
        t0 = time.perf_counter()
        with setup.autocast():
            out = run(k)
        seconds = time.perf_counter() - t0
        if base is not None:
            result.peak_rss = max(result.peak_rss or 0, memory.peak_rss_bytes() - base)
    del out
    result.times.append(seconds)
    return seconds


def _failed(result: Measure, error: BaseException, setup: Setup) -> None:
    result.error = f"{type(error).__name__}: {error}"[:300]
    if setup.device.type == "cuda" and isinstance(error, torch.OutOfMemoryError):
        torch.cuda.empty_cache()


def measure_group(setup: Setup, cases: Sequence[Case], repeats: int, budget: Optional[Budget] = None,
                  cpu_rss: Optional[bool] = None, after_warmup: Optional[Callable[[], None]] = None) -> list:
    """Time the cases of one configuration interleaved: each round calls every case once, in turn.

    Interleaving spreads whatever else the machine is doing (other processes, clocks) evenly over
    the contenders, so their ratios hold even when absolute times drift. Every case is warmed up
    first. At least ``repeats`` rounds, more (up to ``MAX_REPEATS``) while the cases average under
    ``MIN_TIMED_S`` of timing; a round that would overrun the budget is not started, and a case
    whose first call would not fit is skipped. Peak memory: see the module notes.
    """
    budget = budget or Budget()
    cuda = setup.device.type == "cuda"
    if cpu_rss is None:
        cpu_rss = not cuda and memory.cpu_peak_reset_works()
    results = [Measure(mem_method="torch.cuda.max_memory_allocated" if cuda else memory.CPU_MEM_METHOD) for _ in cases]
    runs: list = [None] * len(cases)
    estimates = [0.0] * len(cases)
    gc.collect()
    gc.freeze()  # what is alive now (modules, models, earlier rows) is never scanned again: a collect is cheap
    for i, case in enumerate(cases):
        if budget.left() <= 0:
            results[i].error = "skipped: time budget"
            continue
        try:
            warm = make_runner(setup, case.warmup())
            t0 = time.perf_counter()
            with setup.autocast():
                warm(0)
            setup.sync()
            del warm
            # the warm-up ran ~1/scale of the work: estimate a full call to stay inside the budget
            scale = max(case.samples / max(case.warmup().samples, 1), 1.0)
            estimates[i] = (time.perf_counter() - t0) * scale
            runs[i] = make_runner(setup, case)
        except Exception as error:  # a failed case is a row with its error, not a failed benchmark
            _failed(results[i], error, setup)
    if after_warmup is not None:
        after_warmup()
    active = [i for i in range(len(cases)) if runs[i] is not None]
    for r in range(MAX_REPEATS):
        if not active:
            break
        round_s = sum(estimates[i] for i in active)
        timed = sum(sum(results[i].times) for i in active)
        if r >= repeats and (timed >= MIN_TIMED_S * len(active) or budget.left() < 1.2 * round_s):
            break
        if r and budget.left() < 1.2 * round_s:
            break
        for i in list(active):
            if r == 0 and budget.left() < 0.5 * estimates[i]:
                results[i].error = f"skipped: time budget (a call would take ~{estimates[i]:.1f} s)"
                active.remove(i)
                continue
            try:
                estimates[i] = _timed_call(setup, runs[i], (r + 1) % ROTATE, cpu_rss, results[i])
            except Exception as error:
                _failed(results[i], error, setup)
                results[i].times = []
                active.remove(i)
    if not cuda:  # profiling slows a call: one extra, untimed call per case
        for i in active:
            if budget.left() > 3 * estimates[i]:
                try:
                    gc.collect()
                    with setup.autocast():
                        results[i].peak = memory.profiled_peak_bytes(lambda: runs[i](0))
                except Exception as error:
                    _failed(results[i], error, setup)
    return results
