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

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import kernels, noise
from .chunking import ChunkPolicy
from .guard import guard_model
from .objective import NOT_DIFFERENTIABLE, Objective
from .ops import FIXED, dispatch
from .stats import Stats

__all__ = ["InputNoise", "Plan", "Objective", "run", "floor", "composed_units", "MIN_UNITS", "TOL_CHECK"]


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
    tol: Optional[float] = None  # stop sampling an example once its relative standard error is <= tol
    antithetic: bool = False  # samples (and weight draws) in pairs z, -z
    floor: bool = False  # benchmark floor: same chunks, no noise, no reduction


MIN_UNITS = 10  # tol: independent units (samples, pairs or weight draws) an example gets before its first check
TOL_CHECK = 16  # tol without chunk_size: input samples between checks (the measured chunk is capped at this)

_COMPOSE: ContextVar[Optional[Callable]] = ContextVar("fastmollify_compose", default=None)


@contextlib.contextmanager
def composed_units(transform: Callable[[torch.Tensor], torch.Tensor]):
    """While active, runs also keep the statistics of ``transform(unit means [U, B, ...])``.

    A composition that is linear in the map (integrated_gradients) gets its standard error from
    these: each independent unit (sample, antithetic pair or weight draw) gives one composed map.
    """
    token = _COMPOSE.set(transform)
    try:
        yield
    finally:
        _COMPOSE.reset(token)


class _Moments:
    """Running per-element mean and m2 of ``[rows, D]`` float32 (Welford/Chan, a backend's op).

    Every row still sampling has the same count, so a subset of rows merges with one count.
    """

    def __init__(self, backend, rows: int, width: int, device):
        self.backend = backend
        self.mean = torch.zeros((rows, width), dtype=torch.float32, device=device)
        self.m2 = torch.zeros_like(self.mean)
        self.count = torch.zeros(rows, dtype=torch.float64)

    def add(self, values: torch.Tensor, rows: Optional[torch.Tensor]) -> None:
        """Merge ``values [S, len(rows), D]`` into ``rows`` (None: all rows)."""
        if rows is None:
            self.backend.accumulate(self.mean, self.m2, values.contiguous(), None, float(self.count[0]))
            self.count += values.shape[0]
            return
        index = rows.to(self.mean.device)
        mean, m2 = self.mean[index], self.m2[index]
        self.backend.accumulate(mean, m2, values.contiguous(), None, float(self.count[rows[0]]))
        self.mean[index], self.m2[index] = mean, m2
        self.count[rows] += values.shape[0]

    def stats(self, shape, name: str, seed: int, per_example: bool) -> Stats:
        n = self.count.clone() if per_example else float(self.count[0])
        return Stats(self.mean.reshape(shape), self.m2.reshape(shape), n, name, seed)


class _Run:
    """One engine run over a batch: buffers, backends, the rows still sampling, running statistics.

    Statistics at two levels: ``total`` over every gradient (the map and its variance) and
    ``units`` over independent units when they are not the samples: antithetic pairs, or weight
    draws (the input samples of one draw share its weights). The standard error comes from the
    units.
    """

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
        self.unit_backend = dispatch.select(plan.backend, self.flat[0].device, torch.float32)
        # what the statistics are of: the inputs, or what the objective explains instead (a layer's output)
        self.explained = list(objective.explained or inputs)
        self.out_shapes = [t.shape for t in self.explained]
        out_backends = self.backends if objective.explained is None else [
            dispatch.select(plan.backend, t.device, t.dtype) for t in self.explained]
        self.total = [self._moments(k, backend) for k, backend in enumerate(out_backends)]
        self.units = [self._moments(k) for k in range(len(self.explained))] \
            if plan.weight_draws or plan.antithetic else None
        self.draw: Optional[list[_Moments]] = None
        self.compose = _COMPOSE.get()
        self.composed: Optional[_Moments] = None
        self.rows: Optional[torch.Tensor] = None  # rows still sampling (tol); None: all
        self.buffers: list[torch.Tensor] = []

    def _moments(self, k: int, backend=None) -> _Moments:
        t = self.explained[k]
        return _Moments(backend or self.unit_backend, self.batch, t[0].numel(), t.device)

    # --- the rows still sampling -------------------------------------------------------------------

    @property
    def active(self) -> int:
        return self.batch if self.rows is None else len(self.rows)

    def _runs(self):
        """(first row, row count, position in the active batch) of each run of consecutive active rows."""
        if self.rows is None:
            return [(0, self.batch, 0)]
        rows, runs = self.rows.tolist(), []
        for i, row in enumerate(rows):
            if i and row == rows[i - 1] + 1:
                runs[-1][1] += 1
            else:
                runs.append([row, 1, i])
        return runs

    def drop_converged(self) -> bool:
        """tol: stop sampling the rows whose relative standard error is <= tol; False when none is left."""
        moments = self.units or self.total
        rows = torch.arange(self.batch) if self.rows is None else self.rows
        units = moments[0].count[rows]
        se2 = sum((m.m2[rows] / (units - 1).clamp(min=1).to(m.m2).unsqueeze(1) / units.to(m.m2).unsqueeze(1)).sum(1)
                  for m in moments)
        mean2 = sum((t.mean[rows] ** 2).sum(1) for t in self.total)
        done = (units >= MIN_UNITS).to(se2.device) & (se2 <= self.plan.tol**2 * mean2)
        if bool(done.any()):
            keep = rows[~done.cpu()]
            self.rows = keep if len(keep) < self.batch else None
            return len(keep) > 0
        return True

    # --- one chunk ---------------------------------------------------------------------------------

    def allocate(self, chunk: int) -> None:
        self.buffers = []  # free the old buffers before allocating new ones
        self.buffers = [torch.empty((chunk, *x.shape), dtype=x.dtype, device=x.device) for x in self.flat]
        if self.plan.floor:
            for buffer, x in zip(self.buffers, self.flat):
                buffer.copy_(x.expand_as(buffer))

    def _perturb(self, k: int, out: torch.Tensor, draws: int, noise_start: int) -> None:
        """Noisy copies of the active rows of input k into ``out [samples, active, D]``."""
        x, noise_k, plan = self.flat[k], self.plan.noises[k], self.plan
        clip = noise_k.clip and not plan.antithetic  # antithetic: mirror the unclipped sample, then clip both
        for first, count, pos in self._runs():
            target = out[:draws] if count == self.active else torch.empty(
                (draws, count, x.shape[1]), dtype=x.dtype, device=x.device)
            self.backends[k].perturb(
                x[first:first + count], target, noise_k.lo, noise_k.hi, seed=plan.seed, stream=noise.input_stream(k),
                sample_start=noise_start, example_offset=plan.example_offset + first, kernel=noise_k.kernel.id,
                scale=noise_k.scale, sigma_mode=noise_k.sigma_mode, clip=clip)
            if target.data_ptr() != out.data_ptr():
                out[:draws, pos:pos + count] = target
        if plan.antithetic:  # x - sigma z = 2 x - (x + sigma z), in float32 at least
            xs = x if self.rows is None else x[self.rows]
            acc = torch.promote_types(x.dtype, torch.float32)
            out[draws:2 * draws] = (2 * xs.to(acc) - out[:draws].to(acc)).to(x.dtype)
            if noise_k.clip:
                torch.clamp(out, noise_k.lo.to(x.dtype).reshape(-1), noise_k.hi.to(x.dtype).reshape(-1), out=out)

    def model_inputs(self, samples: int, noise_start: int, clean: bool) -> list[torch.Tensor]:
        views = []
        for k, x in enumerate(self.flat):
            if clean:
                view = (x if self.rows is None else x[self.rows]).reshape(self.active, *self.shapes[k][1:])
            else:
                width = x.shape[1]  # a contiguous [samples, active, D] at the buffer's start
                out = self.buffers[k].view(-1)[:samples * self.active * width].view(samples, self.active, width)
                if not self.plan.floor:
                    self._perturb(k, out, samples // 2 if self.plan.antithetic else samples, noise_start)
                view = out.reshape(samples * self.active, *self.shapes[k][1:])
            if self.channels_last[k]:
                view = view.contiguous(memory_format=torch.channels_last)
            views.append(view.detach().requires_grad_(True))
        return views

    def gradients(self, samples: int, noise_start: int, clean: bool = False) -> list[torch.Tensor]:
        views = self.model_inputs(samples, noise_start, clean)
        objective = self.objective if self.rows is None else self.objective.subset(self.rows)
        with torch.enable_grad():
            scores = objective.scores(views, samples)
            targets = objective.targets(views)
            grads = torch.autograd.grad(scores.sum(), targets, allow_unused=True)
        if all(g is None for g in grads):
            raise ValueError(NOT_DIFFERENTIABLE)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]

    # --- statistics --------------------------------------------------------------------------------

    def start_draw(self) -> None:
        self.draw = [self._moments(k) for k in range(len(self.explained))]

    def accumulate(self, grads: Sequence[torch.Tensor], samples: int) -> None:
        """Fold one chunk's gradients into the statistics (antithetic: the pairs' means are the units)."""
        if self.plan.floor:
            return
        values = []
        for k, g in enumerate(grads):
            g = g.reshape(samples, self.active, -1)
            if self.plan.abs:
                g = g.abs()
            self.total[k].add(g, self.rows)
            values.append(g)
        if self.draw is not None:
            for moments, g in zip(self.draw, values):
                moments.add(g.float(), self.rows)
        elif self.plan.antithetic:
            half = samples // 2
            self.add_units([(g[:half].float() + g[half:].float()) / 2 for g in values])
        elif self.compose is not None:
            self.add_units([g.float() for g in values])

    def end_draw(self, pair_first: Optional[list[torch.Tensor]]) -> Optional[list[torch.Tensor]]:
        """Close a weight draw: its mean is a unit (antithetic draws: the mean of a pair of draws).
        Returns the first draw's means of an open pair."""
        means = [d.mean if self.rows is None else d.mean[self.rows] for d in self.draw]
        self.draw = None
        if self.plan.antithetic and pair_first is None:
            return means
        if pair_first is not None:
            means = [(a + b) / 2 for a, b in zip(pair_first, means)]
        self.add_units([m.unsqueeze(0) for m in means])
        return None

    def add_units(self, values: list[torch.Tensor]) -> None:
        if self.units is not None:
            for moments, v in zip(self.units, values):
                moments.add(v, self.rows)
        if self.compose is not None:
            composed = self.compose(values[0].reshape(values[0].shape[0], self.active, *self.out_shapes[0][1:]))
            composed = composed.reshape(composed.shape[0], composed.shape[1], -1)
            if self.composed is None:
                self.composed = _Moments(self.unit_backend, composed.shape[1], composed.shape[2], composed.device)
            self.composed.add(composed, None)

    def stats(self) -> list[Stats]:
        per_example = self.plan.tol is not None
        out = []
        for k, (total, shape) in enumerate(zip(self.total, self.out_shapes)):
            backend = self.backends[min(k, len(self.backends) - 1)]  # the backend that made the noise
            stats = total.stats(shape, backend.name, self.plan.seed, per_example)
            stats.dtype = self.explained[k].dtype
            if self.units is not None:
                stats.units = self.units[k].stats(shape, backend.name, self.plan.seed, per_example)
            out.append(stats)
        if self.composed is not None:
            out[0].composed = self.composed.stats((self.composed.mean.shape[0], -1), self.backends[0].name,
                                                  self.plan.seed, False)
        return out


def run(objective: Objective, inputs: Sequence[torch.Tensor], plan: Plan, model=None) -> list[Stats]:
    """Run the sample loop of ``plan`` and return one ``Stats`` per input."""
    model = objective.model if model is None else model
    state = _Run(objective, inputs, plan)
    checks_input = plan.tol is not None and not plan.weight_draws
    policy = ChunkPolicy(plan.n, plan.chunk_size, state.flat[0].device,
                         sum(x.numel() * x.element_size() for x in state.flat), multiple=2 if plan.antithetic else 1,
                         cap=TOL_CHECK if checks_input and plan.chunk_size is None else None)
    weight_indices = list(plan.weight_params) if plan.weight_draws else []
    bar = tqdm(total=max(plan.weight_draws, 1) * (plan.n + plan.include_clean) * state.batch,
               disable=None if plan.progress is None else not plan.progress, delay=2.0, unit="gradient",
               unit_scale=True, leave=False, desc="fastmollify")
    try:
        with guard_model(model, weight_indices) as noisy_weights:
            if plan.weight_draws:
                _weight_loop(state, policy, noisy_weights, bar)
            else:
                if plan.include_clean or plan.noises is None:
                    state.accumulate(state.gradients(1, 0, clean=True), 1)
                    bar.update(state.batch)
                if plan.noises is not None:
                    # tol: checks every chunk_size (default TOL_CHECK) samples, whatever chunk memory allows
                    every = (TOL_CHECK if plan.chunk_size is None else policy.chunk) if checks_input else None
                    _sample_loop(state, policy, 0, bar, check_every=every)
    finally:
        bar.close()
    return state.stats()


def _weight_loop(state: _Run, policy: ChunkPolicy, noisy_weights, bar) -> None:
    """Weight draws (NoiseGrad, FusionGrad): each draw's gradients, then its mean as a unit."""
    plan = state.plan
    groups: dict = {}  # one multi-tensor op call per (device, dtype)
    for weight in noisy_weights:
        groups.setdefault((weight.clean.device, weight.clean.dtype), []).append(weight)
    backends = {key: dispatch.select(plan.backend, *key) for key in groups}
    pair_first = None
    for draw in range(plan.weight_draws):
        if plan.antithetic and draw % 2 == 1:  # w (1 - sigma z) = 2 w - w (1 + sigma z): the pair's second draw
            for weight in noisy_weights:
                torch.sub(2 * weight.clean, weight.noisy, out=weight.noisy)
        else:
            for key, weights in groups.items():
                backends[key].perturb_weights_many([w.clean for w in weights], [w.noisy for w in weights],
                                                   seed=plan.seed, draw=draw // 2 if plan.antithetic else draw,
                                                   indices=[w.index for w in weights], sigma=plan.weight_sigma)
        state.start_draw()
        if plan.include_clean or plan.noises is None:
            state.accumulate(state.gradients(1, 0, clean=True), 1)
            bar.update(state.active)
        if plan.noises is not None:
            per_draw = plan.n // 2 if plan.antithetic else plan.n
            _sample_loop(state, policy, draw * per_draw, bar, check_every=None)
        pair_first = state.end_draw(pair_first)
        if plan.tol is not None and pair_first is None and not state.drop_converged():
            return


def _sample_loop(state: _Run, policy: ChunkPolicy, noise_start: int, bar, check_every: Optional[int]) -> None:
    """The n input samples (of one weight draw), chunk by chunk; an out-of-memory chunk is retried
    smaller. ``check_every``: at every multiple of it, stop sampling the rows that reached tol (chunks
    never cross a multiple, so where an example stops does not depend on the chunk memory allowed)."""
    n, done = state.plan.n, 0
    pairs = state.plan.antithetic
    while done < n:
        samples = min(policy.chunk, n - done)
        if check_every:
            samples = min(samples, check_every - done % check_every)
        try:
            if not state.buffers or state.buffers[0].shape[0] < samples:
                state.allocate(policy.chunk)
            with policy.measure(samples):
                grads = state.gradients(samples, noise_start + (done // 2 if pairs else done))
        except Exception as error:
            state.buffers = []  # free the chunk's memory before retrying
            if not policy.shrink(error):
                raise
            continue
        state.accumulate(grads, samples)
        del grads
        done += samples
        bar.update(samples * state.active)
        if check_every and done % check_every == 0 and done < n and not state.drop_converged():
            return


def floor(objective: Objective, inputs: Sequence[torch.Tensor], n: int, chunk_size: Optional[int] = None,
          model=None) -> None:
    """The benchmark floor: the model's forward+backward on the same B*n images in the same
    chunks as a smoothing run, with no noise and no reduction."""
    plan = Plan(noises=[None] * len(inputs), n=n, chunk_size=chunk_size, floor=True, progress=False)
    run(objective, inputs, plan, model=model)
