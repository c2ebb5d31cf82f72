"""The engine: the chunked sample loop that every method runs.

Per chunk of S samples: ``perturb`` writes the noisy copies of the B examples into one
buffer, one forward and one backward of the model on that buffer give the input gradients,
and ``accumulate`` folds them into float32 running statistics. The chunk comes from
``chunking.ChunkPolicy`` (memory bounded whatever N is; halved on out-of-memory) and the
model is held by ``guard.guard_model`` (nothing on it changes; threads may share it). Weight
noise (NoiseGrad, FusionGrad) wraps the loop: each draw writes perturbed weights from the
clean ones into buffers the parameters point at for the call. The noise of sample s of
example b depends only on (seed, s, b), so the result does not depend on the chunk size, the
batch split or the backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import kernels, noise
from .chunking import ChunkPolicy
from .guard import guard_model
from .objective import NOT_DIFFERENTIABLE, Objective
from .ops import FIXED, dispatch
from .stats import Stats

__all__ = ["InputNoise", "Plan", "Objective", "run", "floor"]


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


class _Run:
    """One engine run over a batch: buffers, backends and running statistics."""

    def __init__(self, objective: Objective, inputs: Sequence[torch.Tensor], plan: Plan):
        self.objective, self.plan = objective, plan
        self.shapes = [x.shape for x in inputs]
        self.channels_last = [x.dim() == 4 and not x.is_contiguous() and
                              x.is_contiguous(memory_format=torch.channels_last) for x in inputs]
        self.batch = inputs[0].shape[0]
        self.flat = [(x.clone() if x.is_inference() else x).detach().reshape(self.batch, -1).contiguous()
                     for x in inputs]  # an inference tensor (made under inference_mode) cannot take gradients
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
        if all(g is None for g in grads):
            raise ValueError(NOT_DIFFERENTIABLE)
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


def run(objective: Objective, inputs: Sequence[torch.Tensor], plan: Plan, model=None) -> list[Stats]:
    """Run the sample loop of ``plan`` and return one ``Stats`` per input."""
    model = objective.model if model is None else model
    state = _Run(objective, inputs, plan)
    policy = ChunkPolicy(plan.n, plan.chunk_size, state.flat[0].device,
                         sum(x.numel() * x.element_size() for x in state.flat))
    draws = max(plan.weight_draws, 1)
    weight_indices = list(plan.weight_params) if plan.weight_draws else []
    bar = tqdm(total=draws * (plan.n + plan.include_clean), disable=None if plan.progress is None else not plan.progress,
               delay=2.0, unit="sample", leave=False, desc="fastmollify")
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
                if plan.noises is not None:
                    _sample_loop(state, policy, draw * plan.n, bar)
    finally:
        bar.close()
    return state.stats()


def _sample_loop(state: _Run, policy: ChunkPolicy, first_sample: int, bar) -> None:
    """The n input samples of one weight draw, chunk by chunk; an out-of-memory chunk is retried smaller."""
    n, done = state.plan.n, 0
    while done < n:
        samples = min(policy.chunk, n - done)
        try:
            if not state.buffers or state.buffers[0].shape[0] < samples:
                state.allocate(policy.chunk)
            with policy.measure(samples):
                grads = state.gradients(samples, first_sample + done)
        except Exception as error:
            state.buffers = []  # free the chunk's memory before retrying
            if not policy.shrink(error):
                raise
            continue
        state.accumulate(grads, samples)
        del grads
        done += samples
        bar.update(samples)


def floor(objective: Objective, inputs: Sequence[torch.Tensor], n: int, chunk_size: Optional[int] = None,
          model=None) -> None:
    """The benchmark floor: the model's forward+backward on the same B*n images in the same
    chunks as a smoothing run, with no noise and no reduction."""
    plan = Plan(noises=[None] * len(inputs), n=n, chunk_size=chunk_size, floor=True, progress=False)
    run(objective, inputs, plan, model=model)
