"""The contenders: what a benchmark times, as ``Case`` s, and the callable that runs each.

``Case.impl`` says whose code runs:

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
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from .zoo import Setup

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular")
INPUT_METHODS = ("smoothgrad", "adaptgrad", "clipgrad") + tuple(f"mollify-{k}" for k in KERNELS)
WEIGHT_METHODS = ("noisegrad", "fusiongrad")
WEIGHT_SIGMA = 0.2  # NoiseGrad's multiplicative weight noise


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
    options = dict(chunk_size=case.chunk, backend=case.backend, progress=False)
    method = case.method
    if method == "smoothgrad":
        return lambda k: fm.smoothgrad(model, setup.inputs[k], setup.targets[k], n=case.n, sigma=sigma, seed=k,
                                       **options)
    if method == "adaptgrad":
        return lambda k: fm.adaptgrad(model, setup.inputs[k], setup.targets[k], n=case.n, bounds=bounds, seed=k,
                                      **options)
    if method == "clipgrad":
        return lambda k: fm.clipgrad(model, setup.inputs[k], setup.targets[k], n=case.n, sigma=sigma,
                                     bounds=bounds, seed=k, **options)
    if method.startswith("mollify-"):
        kernel = method.split("-", 1)[1]
        return lambda k: fm.mollify(model, setup.inputs[k], setup.targets[k], kernel=kernel, eps=sigma, n=case.n,
                                    seed=k, **options)
    if method == "noisegrad":
        return lambda k: fm.noisegrad(model, setup.inputs[k], setup.targets[k], m=case.m, weight_sigma=WEIGHT_SIGMA,
                                      seed=k, **options)
    if method == "fusiongrad":
        return lambda k: fm.fusiongrad(model, setup.inputs[k], setup.targets[k], m=case.m, n=case.n, sigma=sigma,
                                       weight_sigma=WEIGHT_SIGMA, seed=k, **options)
    raise ValueError(f"unknown fastmollify method {method!r}")


def label(case: Case, backend: str) -> str:
    if case.impl == "fastmollify":
        return f"fastmollify[{backend}]" if case.method != "weight_writes" else f"weight writes[{backend}]"
    return {"floor": "floor", "captum": "Captum NoiseTunnel", "plain": "plain PyTorch loop",
            "authors": "NoiseGrad authors"}[case.impl]
