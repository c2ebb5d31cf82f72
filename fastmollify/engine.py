"""The engine: the chunked sample loop that every method runs.

Per chunk of S samples: ``perturb`` writes the noisy copies of the B examples into one
buffer, one forward and one backward of the model on that buffer give the input gradients,
and ``accumulate`` folds them into float32 running statistics. Peak memory is set by the
chunk, never by N. Weight noise (NoiseGrad, FusionGrad) wraps the loop: each draw writes
perturbed weights from the clean ones into a buffer the parameters point at for the call; the
clean tensors are never written, and the parameters point back at them whatever happens. The
noise of sample s of example b depends only on (seed, s, b), so the result does not depend on
the chunk size, the batch split or the backend.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import kernels, noise
from .ops import FIXED, dispatch
from .stats import Stats

_CPU_CHUNK_ELEMENTS = 1 << 23  # noisy input elements per chunk on the CPU (32 MB in float32)
_GPU_MEMORY_SHARE = 0.5  # share of free GPU memory a chunk may take, from a measured first chunk


@dataclass
class InputNoise:
    """The noise on one input: ``x + sigma * z``, ``z`` from ``kernel`` (ops.perturb)."""

    kernel: kernels.Kernel
    scale: float
    sigma_mode: int = FIXED
    lo: Optional[torch.Tensor] = None  # float32, 1 or D elements
    hi: Optional[torch.Tensor] = None
    clip: bool = False


@dataclass
class Plan:
    """What to compute: the sample loop's settings (built and validated by ``methods``)."""

    noises: Optional[Sequence[InputNoise]]  # one per input; None: clean inputs (NoiseGrad)
    n: int = 1  # input samples per weight draw
    seed: int = 0
    weight_draws: int = 0  # 0: no weight noise
    weight_sigma: float = 0.0
    weight_params: Optional[Sequence[int]] = None  # indices into the model's parameters; None: all
    include_clean: bool = False  # add the clean gradient as one more sample (per weight draw)
    abs: bool = False  # accumulate |gradient| (Captum's Saliency default)
    chunk_size: Optional[int] = None
    backend: str = "auto"
    example_offset: int = 0
    progress: Optional[bool] = None
    floor: bool = False  # benchmark floor: same chunks, no noise, no reduction


@dataclass
class Objective:
    """The scalar per example whose input gradient is explained."""

    model: Callable
    target: Optional[torch.Tensor] = None  # [B] int64, or None for [B] / [B, 1] outputs
    output: str = "logit"  # or "softmax"
    extra_args: tuple = ()
    batch: int = 1

    checked: bool = False  # the target range is checked once, on the first output (one host sync)

    def scores(self, inputs: Sequence[torch.Tensor], repeats: int) -> torch.Tensor:
        extra = tuple(_repeat(a, repeats, self.batch) for a in self.extra_args)
        out = self.model(*inputs, *extra)
        target = None if self.target is None else self.target.repeat(repeats)
        scores = select_scores(out, target, self.output, repeats * self.batch, check_range=not self.checked)
        self.checked = True
        return scores


def _repeat(arg, repeats: int, batch: int):
    """Tile a per-example forward argument for ``repeats`` samples (sample-major)."""
    if torch.is_tensor(arg) and arg.dim() > 0 and arg.shape[0] == batch and repeats > 1:
        return arg.repeat(repeats, *([1] * (arg.dim() - 1)))
    return arg


def select_scores(out, target, output: str, rows: int, check_range: bool = True) -> torch.Tensor:
    """The explained score per row of a model output ``[rows, K]`` or ``[rows]``."""
    if not torch.is_tensor(out):
        raise TypeError(f"the model must return a tensor of shape [B, K] or [B], got {type(out).__name__}")
    if out.dim() == 0 or out.shape[0] != rows or out.dim() > 2:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for a batch of {rows}; "
                         f"it must return [B, K] class scores or [B] scalars")
    if out.dim() == 2 and output == "softmax":
        out = torch.softmax(out, dim=1)
    elif output == "softmax":
        raise ValueError("output='softmax' needs [B, K] logits; the model returned one score per example")
    if target is None:
        if out.dim() == 2 and out.shape[1] != 1:
            raise ValueError(f"the model returns {out.shape[1]} classes: pass target= (an int, or one per example)")
        return out.reshape(rows)
    if out.dim() == 1:
        raise ValueError("the model returns one score per example: pass target=None")
    if check_range and int(target.max()) >= out.shape[1]:
        raise ValueError(f"target {int(target.max())} is out of range for a model with {out.shape[1]} classes")
    return out.gather(1, target.reshape(-1, 1)).reshape(rows)


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _has_random_or_batch_layers(module: torch.nn.Module) -> bool:
    kinds = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._NormBase)
    return any(isinstance(m, kinds) for m in module.modules())


@dataclass
class NoisyWeight:
    """One parameter under weight noise: its clean tensor, kept aside, and the buffer it points to."""

    index: int  # position in model.parameters(): the weight stream's index
    param: torch.nn.Parameter
    clean: torch.Tensor  # the parameter's own tensor; never written
    noisy: torch.Tensor  # the parameter's data during the call; each draw rewrites it from ``clean``


@contextlib.contextmanager
def guard_model(model, weight_indices: Sequence[int] = ()):
    """Switch parameters' requires_grad off for the call and put everything back after.

    Yields a ``NoisyWeight`` for each parameter named by ``weight_indices``: for the call, the
    parameter points at a fresh buffer (``param.data = noisy``) while its clean tensor waits
    untouched, so putting it back costs no copy and is exact by construction. On exit, even on
    an exception or KeyboardInterrupt, the parameters point at their clean tensors again (checked),
    buffers are restored when the model ran in train mode, and requires_grad flags return.
    """
    module = model if isinstance(model, torch.nn.Module) else None
    params = list(module.parameters()) if module is not None else []
    flags = [p.requires_grad for p in params]
    buffers = []
    if module is not None and module.training:
        if _has_random_or_batch_layers(module):
            warnings.warn("the model is in train mode and has dropout or batch-norm layers: its maps are random "
                          "and batch-dependent; call model.eval() first unless you mean it", stacklevel=4)
        buffers = [(b, b.detach().clone()) for b in module.buffers()]
    noisy = []
    try:
        for p in params:
            p.requires_grad_(False)
        for index in weight_indices:
            p = params[index]
            noisy.append(NoisyWeight(index, p, p.data, torch.empty_like(p.data)))
            p.data = noisy[-1].noisy
        yield noisy
    finally:
        for weight in noisy:
            weight.param.data = weight.clean
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for weight in noisy:
            if weight.param.data_ptr() != weight.clean.data_ptr():
                raise RuntimeError(f"parameter {weight.index} could not be restored to its clean tensor")


class _Run:
    """One engine run over a batch: buffers, backends and running statistics."""

    def __init__(self, objective: Objective, inputs: Sequence[torch.Tensor], plan: Plan):
        self.objective, self.plan = objective, plan
        self.shapes = [x.shape for x in inputs]
        self.channels_last = [x.dim() == 4 and not x.is_contiguous() and
                              x.is_contiguous(memory_format=torch.channels_last) for x in inputs]
        self.batch = inputs[0].shape[0]
        self.flat = [x.detach().reshape(self.batch, -1).contiguous() for x in inputs]
        kernel = next((nz.kernel for nz in plan.noises or () if nz is not None), kernels.get("gaussian"))
        self.backends = [dispatch.select(plan.backend, x.device, x.dtype, kernel) for x in self.flat]
        self.mean = [torch.zeros(x.shape, dtype=torch.float32, device=x.device) for x in self.flat]
        self.m2 = [torch.zeros_like(m) for m in self.mean]
        self.count = 0.0
        self.buffers: list[torch.Tensor] = []

    def allocate(self, chunk: int) -> None:
        self.buffers = []  # free the old buffers before allocating new ones
        self.buffers = [torch.empty((chunk, *x.shape), dtype=x.dtype, device=x.device) for x in self.flat]
        if self.plan.floor:
            for buffer, x in zip(self.buffers, self.flat):
                buffer.copy_(x.expand_as(buffer))

    def model_inputs(self, samples: int, sample_start: int, clean: bool) -> list[torch.Tensor]:
        views = []
        for k, x in enumerate(self.flat):
            if clean:
                view = x.reshape(self.shapes[k])
            else:
                out = self.buffers[k][:samples]
                noise_k = self.plan.noises[k]
                if not self.plan.floor:
                    self.backends[k].perturb(
                        x, out, noise_k.lo, noise_k.hi, seed=self.plan.seed, stream=noise.input_stream(k),
                        sample_start=sample_start, example_offset=self.plan.example_offset,
                        kernel=noise_k.kernel.id, scale=noise_k.scale, sigma_mode=noise_k.sigma_mode,
                        clip=noise_k.clip)
                view = out.view(samples * self.batch, *self.shapes[k][1:])
            if self.channels_last[k]:
                view = view.contiguous(memory_format=torch.channels_last)
            views.append(view.detach().requires_grad_(True))
        return views

    def gradients(self, samples: int, sample_start: int, clean: bool = False) -> list[torch.Tensor]:
        views = self.model_inputs(samples, sample_start, clean)
        with torch.enable_grad():
            scores = self.objective.scores(views, samples)
            grads = torch.autograd.grad(scores.sum(), views, allow_unused=True)
        return [torch.zeros_like(v) if g is None else g for v, g in zip(views, grads)]

    def accumulate(self, grads: Sequence[torch.Tensor], samples: int) -> None:
        if self.plan.floor:
            return
        for k, g in enumerate(grads):
            g = g.reshape(samples, self.batch, -1)
            if self.plan.abs:
                g = g.abs()
            self.backends[k].accumulate(self.mean[k], self.m2[k], g.contiguous(), None, self.count)
        self.count += samples

    def stats(self) -> list[Stats]:
        return [Stats(mean.reshape(shape), m2.reshape(shape), self.count, backend.name, self.plan.seed)
                for mean, m2, shape, backend in zip(self.mean, self.m2, self.shapes, self.backends)]


def _first_chunk(run: _Run, plan: Plan) -> int:
    """The chunk size to start with: given, a CPU budget, or 1 to measure a GPU's need."""
    if plan.chunk_size is not None:
        return min(plan.chunk_size, plan.n)
    if run.flat[0].device.type == "cuda":
        return 1
    elements = sum(x.numel() for x in run.flat)
    return max(1, min(plan.n, _CPU_CHUNK_ELEMENTS // max(elements, 1)))


def _measured_chunk(run: _Run, plan: Plan, peak_bytes: int) -> int:
    """On a GPU, the chunk that fits the free memory, from the first chunk's measured peak."""
    free, _ = torch.cuda.mem_get_info(run.flat[0].device)
    per_sample = max(peak_bytes, 1)
    return max(1, min(plan.n, int(_GPU_MEMORY_SHARE * free / per_sample)))


def run(objective: Objective, inputs: Sequence[torch.Tensor], plan: Plan, model=None) -> list[Stats]:
    """Run the sample loop of ``plan`` and return one ``Stats`` per input."""
    model = objective.model if model is None else model
    state = _Run(objective, inputs, plan)
    draws = max(plan.weight_draws, 1)
    total = draws * (plan.n + plan.include_clean)
    measure = plan.chunk_size is None and state.flat[0].device.type == "cuda"
    chunk = _first_chunk(state, plan)
    weight_indices = list(plan.weight_params) if plan.weight_draws else []
    bar = tqdm(total=total, disable=None if plan.progress is None else not plan.progress, delay=2.0,
               unit="sample", leave=False, desc="fastmollify")
    try:
        with guard_model(model, weight_indices) as noisy_weights:
            weight_backends = [dispatch.select(plan.backend, w.clean.device, w.clean.dtype) for w in noisy_weights]
            for draw in range(draws):
                for weight, backend in zip(noisy_weights, weight_backends):
                    backend.perturb_weights(weight.clean, weight.noisy, seed=plan.seed, draw=draw, index=weight.index,
                                            sigma=plan.weight_sigma)
                if plan.include_clean or plan.noises is None:
                    state.accumulate(state.gradients(1, 0, clean=True), 1)
                    bar.update(1)
                    if plan.noises is None:
                        continue
                done = 0
                while done < plan.n:
                    samples = min(chunk, plan.n - done)
                    try:
                        if not state.buffers or state.buffers[0].shape[0] < samples:
                            state.allocate(chunk)
                        if measure:
                            torch.cuda.reset_peak_memory_stats(state.flat[0].device)
                            base = torch.cuda.memory_allocated(state.flat[0].device)
                        grads = state.gradients(samples, draw * plan.n + done)
                    except Exception as error:  # back off on out-of-memory: halve the chunk and retry
                        if not _is_oom(error) or chunk == 1:
                            raise
                        del error
                        chunk = max(1, chunk // 2)
                        state.buffers = []
                        _empty_cache(state.flat[0].device)
                        continue
                    state.accumulate(grads, samples)
                    del grads
                    done += samples
                    bar.update(samples)
                    if measure:
                        peak = torch.cuda.max_memory_allocated(state.flat[0].device) - base
                        chunk, measure = _measured_chunk(state, plan, peak // samples), False
    finally:
        bar.close()
    return state.stats()


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def floor(objective: Objective, inputs: Sequence[torch.Tensor], n: int, chunk_size: Optional[int] = None,
          model=None) -> None:
    """The benchmark floor: the model's forward+backward on the same B*n images in the same
    chunks as a smoothing run, with no noise and no reduction."""
    plan = Plan(noises=[None] * len(inputs), n=n, chunk_size=chunk_size, floor=True, progress=False)
    run(objective, inputs, plan, model=model)
