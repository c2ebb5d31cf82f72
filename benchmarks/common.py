"""The one setup factory every benchmark shares: models, inputs, contenders, timing, memory, rows.

A benchmark is a list of ``Case`` s run on a ``Setup`` (one model on one device at one batch,
image size and precision). ``run_cases`` times the cases of one configuration, interleaved, measures
their peak memory and returns one result row each (a flat dict, the same fields in every script); ``attach_ratios`` adds each row's
ratio to its floor; ``write_rows`` writes ``results/<script>_<cpu|gpu>.json`` and ``.csv``.

Contenders (``Case.impl``):

* ``floor``: ``fastmollify.engine.floor``, the model's own forward + backward (input gradient
  only) on the same B*N images in the same chunks, with no noise and no reduction. Method
  ``floor`` serves the input-noise methods (N samples in chunks), ``floor-noisegrad`` NoiseGrad
  (m clean batches, one at a time) and ``floor-fusiongrad`` FusionGrad (m x n samples in the same
  chunks); ``weight_writes`` times the m perturbed-weight writes alone, into a weights-sized buffer
  obtained for the call (the rest of "floor plus weight writes": any weight-noise method holds a
  second copy of the weights, and pays for its memory's first touch on the CPU).
* ``fastmollify``: the public functions with ``backend=`` each available backend.
* ``captum``: ``NoiseTunnel(Saliency(model)).attribute(nt_type="smoothgrad", abs=False,
  nt_samples=N, nt_samples_batch_size=chunk)``.
* ``plain``: the loop a user would write (``benchmarks.peers.plain_smoothgrad``).
* ``authors``: the NoiseGrad authors' algorithm (``benchmarks.peers.AuthorsNoiseGrad``).

All contenders see the same model with its parameters frozen (``requires_grad=False``), so no
one pays for weight gradients, and the same absolute noise scale.

Timing: one warm-up call per case (the same shapes, run with one chunk's worth of samples and
one weight draw, so compilation, autotuning and allocator growth stay out), then the cases of
one configuration (the contenders at one model, precision and N) are timed interleaved: each
round calls every case once, so load from elsewhere and clock drift hit all contenders alike.
At least ``repeats`` rounds (more, up to ``MAX_REPEATS``, while the cases average under
``MIN_TIMED_S`` of timing), each round on the next of ``ROTATE`` different input batches so no
cache holds the previous call's data. On a GPU each
call is bracketed by ``torch.cuda.synchronize`` and timed with CUDA events; on the CPU with
``time.perf_counter``. The row keeps the median, quartiles, min and max.

Peak memory (``peak_mem_bytes``): on a GPU ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``, minus what was allocated before the call (model and inputs), the
largest over the timed calls. On the CPU, the torch profiler's memory events
(``profile_memory=True``: every allocation and free of the CPU allocator, with its size) in one
extra, untimed call: the peak of their running sum is the most tensor memory the call held on
top of what was live before it, a tracemalloc for tensors. It is exact and repeatable, unlike the
resident set size, which glibc's heap reuse and trimming move by tens of MB from one call to the
next. The process's peak RSS is kept as well (``peak_rss_bytes``): ``ru_maxrss`` minus the RSS
before each timed call, the kernel's high-water mark having been reset to the current RSS
(``gc.collect()``, ``malloc_trim(0)``, then ``5`` written to ``/proc/self/clear_refs``, Linux >=
4.0). With ``--fresh-process`` every case runs in its own subprocess and ``peak_rss_bytes`` is that
process's ``ru_maxrss`` minus its RSS after set-up and the warm-up call.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import gc
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular")
INPUT_METHODS = ("smoothgrad", "adaptgrad", "clipgrad") + tuple(f"mollify-{k}" for k in KERNELS)
WEIGHT_METHODS = ("noisegrad", "fusiongrad")
FLOOR_METHODS = ("floor", "floor-noisegrad", "floor-fusiongrad")
ROTATE = 3  # input batches cycled through the timed calls
MIN_TIMED_S = 1.0  # calls shorter than this are repeated (beyond ``repeats``) until this much is timed
MAX_REPEATS = 25
WEIGHT_SIGMA = 0.2  # NoiseGrad's multiplicative weight noise
NOISE_LEVEL = 0.15  # input noise sigma as a share of the input range (absolute sigma passed to all)
ROW_FIELDS = (
    "script", "device", "device_type", "torch", "label", "impl", "backend", "method", "model", "dtype",
    "channels_last", "image", "B", "N", "n", "m", "chunk", "median_s", "p25_s", "p75_s", "min_s", "max_s",
    "spread", "repeats", "throughput", "peak_mem_bytes", "mem_method", "peak_rss_bytes", "floor_s", "ratio_to_floor",
    "ratio_kind", "ratio_of_mins", "group", "floor_mem_bytes", "mem_ratio_to_floor", "weights_bytes", "error", "commit",
    "timestamp")


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
class MLP(torch.nn.Sequential):
    """The AdaptGrad paper's MNIST MLP: 784-200-10 with a ReLU, on [B, 1, 28, 28] images."""

    def __init__(self):
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10))


def resnet18_cifar(num_classes: int = 10) -> torch.nn.Module:
    """ResNet-18 for 32x32 images (3x3 stride-1 stem, no max-pool), from torchvision's blocks."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None)
    return build


def _demo_cnn() -> torch.nn.Module:
    from fastmollify import models  # imported lazily: written alongside the benchmarks

    return models.demo_cnn(in_channels=3, num_classes=4)


@dataclass(frozen=True)
class ModelInfo:
    build: Callable[[], torch.nn.Module]
    channels: int
    size: int  # default image side
    classes: int
    bounds: tuple[float, float]  # the inputs' value range (ImageNet-normalised or [0, 1])


IMAGENET_BOUNDS = (-2.117904, 2.64)  # the AdaptGrad paper's bounds for ImageNet-normalised inputs
MODELS = {
    "mlp": ModelInfo(MLP, 1, 28, 10, (0.0, 1.0)),
    "demo_cnn": ModelInfo(_demo_cnn, 3, 64, 4, (0.0, 1.0)),
    "resnet18_cifar": ModelInfo(resnet18_cifar, 3, 32, 10, IMAGENET_BOUNDS),
    "resnet50": ModelInfo(_torchvision("resnet50"), 3, 224, 1000, IMAGENET_BOUNDS),
    "vgg16": ModelInfo(_torchvision("vgg16"), 3, 224, 1000, IMAGENET_BOUNDS),
}


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetupSpec:
    model: str
    batch: int
    device: str = "cpu"
    dtype: str = "fp32"  # or "bf16" (autocast)
    channels_last: bool = False
    image_size: Optional[int] = None  # None: the model's own
    seed: int = 0


class Setup:
    """One model (eval mode, parameters frozen) and ``ROTATE`` input batches with targets."""

    def __init__(self, spec: SetupSpec):
        if spec.model not in MODELS:
            raise ValueError(f"unknown model {spec.model!r}; choose from {', '.join(MODELS)}")
        if spec.dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16', got {spec.dtype!r}")
        self.spec = spec
        info = MODELS[spec.model]
        self.device = torch.device(spec.device)
        size = spec.image_size or info.size
        self.shape = (spec.batch, info.channels, size, size)
        self.image = f"{info.channels}x{size}x{size}"
        torch.manual_seed(spec.seed)
        model = info.build().to(self.device).eval()
        memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
        if spec.channels_last:
            model = model.to(memory_format=memory_format)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.lo, self.hi = info.bounds
        self.sigma = NOISE_LEVEL * (self.hi - self.lo)
        generator = torch.Generator().manual_seed(spec.seed + 1)
        self.inputs, self.targets = [], []
        for _ in range(ROTATE):
            x = self.lo + (self.hi - self.lo) * torch.rand(self.shape, generator=generator)
            x = x.to(self.device).contiguous(memory_format=memory_format)
            self.inputs.append(x)
            self.targets.append(torch.randint(0, info.classes, (spec.batch,), generator=generator).to(self.device))
        self.sync()

    def autocast(self):
        if self.spec.dtype == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def objective(self, k: int):
        from fastmollify import engine

        return engine.Objective(self.model, self.targets[k], "logit", (), self.spec.batch)


# ----------------------------------------------------------------------------------------------
# Cases and their runners
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    impl: str  # floor | fastmollify | captum | plain | authors
    method: str  # an INPUT_METHOD, noisegrad, fusiongrad, floor, floor-noisegrad, floor-fusiongrad, weight_writes
    n: int = 1  # input samples per example (per weight draw for fusiongrad)
    m: int = 0  # weight draws (noisegrad, fusiongrad)
    chunk: int = 1  # samples per forward/backward
    backend: str = "auto"  # fastmollify's backend (and the weight writes')

    @property
    def samples(self) -> int:
        """Gradients per example: N."""
        if self.method in ("noisegrad", "floor-noisegrad", "weight_writes"):
            return self.m
        if self.method in ("fusiongrad", "floor-fusiongrad"):
            return self.m * self.n
        return self.n

    def warmup(self) -> "Case":
        """The same shapes at a fraction of the cost: one chunk of samples, one weight draw."""
        return replace(self, n=min(self.n, self.chunk), m=min(self.m, 1))


def resolve_backend(name: str, device, dtype=torch.float32) -> str:
    from fastmollify.ops import dispatch

    return dispatch.select(name, torch.device(device), dtype).name


def available_backends(device, include_reference: bool = True) -> list[str]:
    """The fastmollify backends ``dispatch.availability`` says can serve float32 on ``device``.

    Triton on the CPU (``TRITON_INTERPRET=1``, as the tests set it) is a test tool, not a backend
    to time, and is left out.
    """
    from fastmollify.ops import dispatch

    device = torch.device(device)
    names = [name for name, why in dispatch.availability(device, torch.float32).items()
             if why is None and not (name == "triton" and device.type != "cuda")]
    if not include_reference and len(names) > 1:
        names = [name for name in names if name != "reference"]
    return names


def make_runner(setup: Setup, case: Case) -> Callable[[int], object]:
    """A callable ``run(k)`` that runs ``case`` once on input batch ``k``."""
    model, sigma = setup.model, setup.sigma
    if case.impl == "floor":
        from fastmollify import engine

        if case.method == "floor":
            return lambda k: engine.floor(setup.objective(k), [setup.inputs[k]], case.n, case.chunk)
        if case.method == "floor-noisegrad":
            return lambda k: engine.floor(setup.objective(k), [setup.inputs[k]], case.m, 1)
        if case.method == "floor-fusiongrad":
            if case.n % min(case.chunk, case.n) == 0:
                return lambda k: engine.floor(setup.objective(k), [setup.inputs[k]], case.m * case.n, case.chunk)

            def per_draw(k):
                for _ in range(case.m):
                    engine.floor(setup.objective(k), [setup.inputs[k]], case.n, case.chunk)
            return per_draw
        raise ValueError(f"unknown floor method {case.method!r}")
    if case.impl == "fastmollify":
        return _fastmollify_runner(setup, case)
    if case.impl == "captum":
        from captum.attr import NoiseTunnel, Saliency

        tunnel = NoiseTunnel(Saliency(model))
        return lambda k: tunnel.attribute(setup.inputs[k], nt_type="smoothgrad", nt_samples=case.n,
                                          nt_samples_batch_size=case.chunk, stdevs=sigma, target=setup.targets[k],
                                          abs=False)
    if case.impl == "plain":
        from .peers import plain_smoothgrad

        return lambda k: plain_smoothgrad(model, setup.inputs[k], setup.targets[k], case.n, case.chunk, sigma)
    if case.impl == "authors":
        from .peers import AuthorsNoiseGrad, AuthorsNoiseGradPlusPlus, saliency

        if case.method not in WEIGHT_METHODS:
            raise ValueError(f"the authors' algorithm is noisegrad or fusiongrad, not {case.method!r}")

        def authors(k):  # built per call: saving the clean weights is part of the method (fastmollify's too)
            if case.method == "noisegrad":
                explainer = AuthorsNoiseGrad(model, std=WEIGHT_SIGMA, n=case.m)
            else:
                explainer = AuthorsNoiseGradPlusPlus(model, std=WEIGHT_SIGMA, sg_std=sigma, n=case.m, m=case.n)
            return explainer.enhance_explanation(setup.inputs[k], setup.targets[k], saliency)
        return authors
    raise ValueError(f"unknown impl {case.impl!r}")


def _fastmollify_runner(setup: Setup, case: Case):
    import fastmollify as fm

    model, bounds, sigma = setup.model, (setup.lo, setup.hi), setup.sigma
    if case.method == "weight_writes":
        from fastmollify.ops import dispatch

        clean = [p.detach() for p in model.parameters() if p.is_floating_point()]
        backends = [dispatch.select(case.backend, c.device, c.dtype) for c in clean]

        def writes(k):  # a second copy of the weights exists per call in any weight-noise method: its buffer
            noisy = [torch.empty_like(c) for c in clean]  # is part of the unavoidable cost (first-touch pages)
            for draw in range(case.m):
                for index, (c, out, backend) in enumerate(zip(clean, noisy, backends)):
                    backend.perturb_weights(c, out, seed=k, draw=draw, index=index, sigma=WEIGHT_SIGMA)
            return noisy
        return writes
    common = dict(chunk_size=case.chunk, backend=case.backend, progress=False)
    method = case.method
    if method == "smoothgrad":
        return lambda k: fm.smoothgrad(model, setup.inputs[k], setup.targets[k], n=case.n, sigma=sigma, seed=k,
                                       **common)
    if method == "adaptgrad":
        return lambda k: fm.adaptgrad(model, setup.inputs[k], setup.targets[k], n=case.n, bounds=bounds, seed=k,
                                      **common)
    if method == "clipgrad":
        return lambda k: fm.clipgrad(model, setup.inputs[k], setup.targets[k], n=case.n, sigma=sigma,
                                     bounds=bounds, seed=k, **common)
    if method.startswith("mollify-"):
        kernel = method.split("-", 1)[1]
        return lambda k: fm.mollify(model, setup.inputs[k], setup.targets[k], kernel=kernel, eps=sigma, n=case.n,
                                    seed=k, **common)
    if method == "noisegrad":
        return lambda k: fm.noisegrad(model, setup.inputs[k], setup.targets[k], m=case.m, weight_sigma=WEIGHT_SIGMA,
                                      seed=k, **common)
    if method == "fusiongrad":
        return lambda k: fm.fusiongrad(model, setup.inputs[k], setup.targets[k], m=case.m, n=case.n, sigma=sigma,
                                       weight_sigma=WEIGHT_SIGMA, seed=k, **common)
    raise ValueError(f"unknown fastmollify method {method!r}")


def label(case: Case, backend: str) -> str:
    if case.impl == "fastmollify":
        return f"fastmollify[{backend}]" if case.method != "weight_writes" else f"weight writes[{backend}]"
    return {"floor": "floor", "captum": "Captum NoiseTunnel", "plain": "plain PyTorch loop",
            "authors": "NoiseGrad authors"}[case.impl]


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    return _LIBC


def _rss_kib() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _reset_peak_rss() -> Optional[int]:
    """Reset the kernel's peak-RSS mark to the current RSS; the current RSS in bytes, or None."""
    gc.collect()
    libc = _libc()
    if libc and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    rss = _rss_kib()
    return None if rss is None else rss * 1024


def cpu_peak_reset_works() -> bool:
    base = _reset_peak_rss()
    return base is not None and _maxrss_bytes() <= base + (8 << 20)


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


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (Kineto prints a line or two on every profiler start and stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profiled_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of the running sum of CPU tensor allocations during ``fn()``, from the torch profiler.

    ``profile_memory=True`` makes every allocation and free of the CPU allocator a ``[memory]``
    event with its signed byte count; the peak of their running sum in time order is the most
    tensor memory the call held on top of what was live before it (tracemalloc for tensors).
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
            del out
        events = [e for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak


CPU_MEM_METHOD = "torch.profiler peak of live CPU tensor bytes (one extra call)"


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
        base = _reset_peak_rss() if cpu_rss else None
        t0 = time.perf_counter()
        with setup.autocast():
            out = run(k)
        seconds = time.perf_counter() - t0
        if base is not None:
            result.peak_rss = max(result.peak_rss or 0, _maxrss_bytes() - base)
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
        cpu_rss = not cuda and cpu_peak_reset_works()
    results = [Measure(mem_method="torch.cuda.max_memory_allocated" if cuda else CPU_MEM_METHOD) for _ in cases]
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
                        results[i].peak = profiled_peak_bytes(lambda: runs[i](0))
                except Exception as error:
                    _failed(results[i], error, setup)
    return results


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


def run_case(script: str, setup: Setup, case: Case, repeats: int, budget: Optional[Budget] = None,
             fresh_process: bool = False, verbose: bool = True) -> dict:
    """Measure one case on ``setup`` and return its result row."""
    return run_cases(script, setup, [case], repeats, budget, fresh_process, verbose)[0]


def measure_in_subprocess(spec: SetupSpec, case: Case, repeats: int, budget: Optional[Budget] = None) -> Measure:
    """Run one case in a fresh Python process; peak memory is its ru_maxrss minus the RSS after warm-up."""
    payload = json.dumps({"spec": asdict(spec), "case": asdict(case), "repeats": repeats,
                          "left": None if budget is None or budget.deadline is None else budget.left()})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.common", "--case", payload], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return Measure(error=f"subprocess failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return Measure(**json.loads(lines[-1]))


def _subprocess_main(payload: str) -> None:
    data = json.loads(payload)
    setup = Setup(SetupSpec(**data["spec"]))
    case = Case(**data["case"])
    base = []

    def after_warmup():  # code pages, thread pools and caches the first call brings in are not the case's
        gc.collect()
        base.append(_rss_kib())

    budget = Budget(seconds=data["left"]) if data["left"] is not None else None
    result = measure(setup, case, data["repeats"], budget, cpu_rss=False, after_warmup=after_warmup)
    if setup.device.type == "cpu" and base and base[0] is not None:
        result.peak_rss = _maxrss_bytes() - base[0] * 1024
    print(json.dumps(asdict(result)))


# ----------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------
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


def _config_key(row: dict) -> tuple:
    return (row["script"], row["device"], row["model"], row["dtype"], row["channels_last"], row["image"], row["B"])


def paired_ratio(row: dict, parts: Sequence[dict]) -> tuple[float, str]:
    """``row``'s time over the summed time of ``parts``, and how it was formed.

    ``"paired"``: rows timed interleaved (one group, one call each per round) give the median over
    rounds of ``t_row[r] / sum(t_part[r])``; calls made side by side see the same machine load, so
    this ratio holds where absolute times drift (a shared CPU). Otherwise ``"medians"``: the ratio
    of the medians.
    """
    rounds = round_ratios(row, parts)
    if rounds:
        return statistics.median(rounds), "paired"
    return row["median_s"] / sum(p["median_s"] for p in parts), "medians"


def round_ratios(row: dict, parts: Sequence[dict]) -> list:
    """``t_row[r] / sum(t_part[r])`` for every round r, where the rows were timed interleaved; else []."""
    series = [row.get("times_s") or []] + [p.get("times_s") or [] for p in parts]
    if row.get("group") is None or any(p.get("group") != row["group"] for p in parts) \
            or not series[0] or len({len(s) for s in series}) != 1:
        return []
    return [t / sum(rest) for t, *rest in zip(*series)]


def attach_ratios(rows: Sequence[dict]) -> None:
    """Fill each row's floor time, ratio to the floor (``paired_ratio``), and memory ratio, in place.

    Input-noise methods and the peers: the floor of the same N and chunk, preferably from the
    row's own interleaved group. NoiseGrad and FusionGrad (ours and the authors'): the floor of
    the same draws (and chunks) plus the weight writes of the row's backend (the authors' rows:
    the first compiled backend's writes); their memory floor adds one copy of the model's weights
    (clean and noisy weights must both exist). ``ratio_of_mins`` is the same ratio from each
    row's fastest call, the least disturbed one.
    """
    floors, writes = {}, {}
    for row in rows:
        if row["median_s"] is None:
            continue
        if row["impl"] == "floor":
            floors.setdefault((_config_key(row), row["method"], row["n"], row["m"]), []).append(row)
        elif row["method"] == "weight_writes":
            writes.setdefault((_config_key(row), row["m"]), []).append(row)

    def closest(candidates, row):  # same group first, then same chunk
        return min(candidates, key=lambda c: (c.get("group") != row.get("group"), c["chunk"] != row["chunk"]),
                   default=None)

    for row in rows:
        if row["median_s"] is None or row["impl"] == "floor" or row["method"] == "weight_writes":
            continue
        key = _config_key(row)
        parts = []
        if row["method"] in WEIGHT_METHODS:
            n = row["n"] if row["method"] == "fusiongrad" else 1
            floor = closest(floors.get((key, f"floor-{row['method']}", n, row["m"]), []), row)
            by_backend = writes.get((key, row["m"]), [])
            mine = [w for w in by_backend if w["backend"] == row["backend"]] or [
                w for b in ("cuda", "cpu", "triton", "reference") for w in by_backend if w["backend"] == b]
            write = closest(mine, row)
            parts = [floor, write] if write else [floor]
        else:
            floor = closest(floors.get((key, "floor", row["n"], 0), []), row)
            parts = [floor]
        if floor is None:
            continue
        row["floor_s"] = sum(p["median_s"] for p in parts)
        row["ratio_to_floor"], row["ratio_kind"] = paired_ratio(row, parts)
        row["ratio_of_mins"] = row["min_s"] / sum(p["min_s"] for p in parts)
        if floor["peak_mem_bytes"] and row["peak_mem_bytes"] is not None:
            # weight noise holds a second copy of the weights (our noisy buffer; the authors' saved state_dict)
            copy = row.get("weights_bytes") or 0 if row["method"] in WEIGHT_METHODS else 0
            row["floor_mem_bytes"] = floor["peak_mem_bytes"] + copy
            row["mem_ratio_to_floor"] = row["peak_mem_bytes"] / row["floor_mem_bytes"]


def without_repeated_floors(rows: Sequence[dict]) -> list:
    """The rows with each floor (and weight-write timing) once: later passes re-time them only to pair."""
    seen, kept = set(), []
    for row in rows:
        if row["impl"] == "floor" or row["method"] == "weight_writes":
            key = (_config_key(row), row["method"], row["n"], row["m"], row["chunk"], row["backend"])
            if key in seen:
                continue
            seen.add(key)
        kept.append(row)
    return kept


def device_tag(device) -> str:
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


def finish(rows: list, script: str, device, args, plot: Callable) -> list:
    """Write a script's rows (and, unless ``--no-plot``, its PNG next to them); returns the rows."""
    path = write_rows(rows, script, device, args.out)
    if not args.no_plot:
        plot(rows, path.with_suffix(".png"))
    return rows


def write_rows(rows: Sequence[dict], script: str, device, out: Optional[Path] = None) -> Path:
    """Write ``<out>/<script>_<cpu|gpu>.json`` and ``.csv``; returns the JSON path."""
    out = Path(out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    attach_ratios(rows)
    path = out / f"{script}_{device_tag(device)}.json"
    path.write_text(json.dumps(list(rows), indent=1) + "\n")
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(path) -> list[dict]:
    return json.loads(Path(path).read_text())


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


# ----------------------------------------------------------------------------------------------
# Command-line helpers
# ----------------------------------------------------------------------------------------------
def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (median reported)")
    parser.add_argument("--budget", type=float, default=None, help="seconds this script may take (skips the rest)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated fastmollify backends (default: every available one)")
    parser.add_argument("--fresh-process", action="store_true",
                        help="run every case in a fresh subprocess (CPU peak memory by plain ru_maxrss)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def start(args) -> str:
    """Apply the common options; the device to run on."""
    global MIN_TIMED_S
    if args.tiny:
        MIN_TIMED_S = 0.0
    if args.threads:
        torch.set_num_threads(args.threads)
    return args.device or default_device()


def ints(text: Optional[str]) -> Optional[list[int]]:
    return None if text is None else [int(v) for v in text.split(",") if v]


def names(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def select_backends(args, device, include_reference: bool = True) -> list[str]:
    chosen = names(args.backends)
    if chosen:
        return chosen
    return available_backends(device, include_reference)


def plt():
    """matplotlib's pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except Exception:
        return None
    return pyplot


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        _subprocess_main(sys.argv[2])
    else:
        sys.exit("usage: python -m benchmarks.common --case JSON (internal: one case in a fresh process)")
