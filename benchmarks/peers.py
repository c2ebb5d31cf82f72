"""The baselines fastmollify is measured against (Captum is used as installed).

* ``plain_smoothgrad``: the SmoothGrad loop a PyTorch user would write: per chunk, expand the
  batch, add ``sigma * torch.randn_like``, forward, backward, and sum; the mean at the end.
* ``AuthorsNoiseGrad`` / ``AuthorsNoiseGradPlusPlus``: the NoiseGrad authors' algorithm
  (github.com/understandable-machine-intelligence-lab/NoiseGrad, ``noisegrad/noisegrad.py``),
  re-written here: per weight draw, reload a saved ``state_dict``, multiply every parameter in
  place by noise drawn with ``torch.distributions.Normal(1, std).sample(shape).to(device)``,
  explain the clean batch (NoiseGrad) or ``m`` input-noised copies one at a time
  (NoiseGrad++/FusionGrad), store every explanation in a CPU tensor, and average. One fix to
  their code: the saved weights are a deep copy (their ``model.state_dict()`` aliases the live
  parameters, so reloading it would not undo the noise).
* ``saliency``: the explanation function both use, the plain input gradient of the target score.
"""
from __future__ import annotations

import copy

import torch


def plain_smoothgrad(model, x, target, n: int, chunk: int, sigma: float) -> torch.Tensor:
    """Mean input gradient over ``n`` noisy copies of ``x``, ``chunk`` copies per forward/backward."""
    batch = x.shape[0]
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    total = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, n, chunk):
        s = min(chunk, n - start)
        xs = x.unsqueeze(0).expand(s, *x.shape).reshape(s * batch, *x.shape[1:])
        noisy = xs + sigma * torch.randn_like(xs)
        if channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        noisy.requires_grad_(True)
        scores = model(noisy).gather(1, target.repeat(s).unsqueeze(1)).sum()
        (grad,) = torch.autograd.grad(scores, noisy)
        total += grad.reshape(s, *x.shape).sum(0)
    return total / n


def saliency(model, x, target) -> torch.Tensor:
    """The input gradient of each example's target score (Captum ``Saliency`` with ``abs=False``)."""
    x = x.detach().requires_grad_(True)
    scores = model(x).gather(1, target.unsqueeze(1)).sum()
    (grad,) = torch.autograd.grad(scores, x)
    return grad


class AuthorsNoiseGrad:
    """NoiseGrad as its authors wrote it: ``n`` weight draws, one explanation per draw."""

    def __init__(self, model, mean: float = 1.0, std: float = 0.2, n: int = 10):
        self.model, self.n, self.std = model, n, std
        self.weights = copy.deepcopy(model.state_dict())
        self.distribution = torch.distributions.normal.Normal(loc=mean, scale=std)

    def sample(self) -> None:
        self.model.load_state_dict(self.weights)
        if self.std == 0.0:
            return
        with torch.no_grad():
            for layer in self.model.parameters():
                layer.mul_(self.distribution.sample(layer.size()).to(layer.device))

    def enhance_explanation(self, inputs, targets, explanation_fn) -> torch.Tensor:
        explanation = torch.zeros((self.n, *inputs.shape))
        for i in range(self.n):
            self.sample()
            explanation[i] = explanation_fn(self.model, inputs, targets)
        self.model.load_state_dict(self.weights)
        return explanation.mean(axis=0)


class AuthorsNoiseGradPlusPlus(AuthorsNoiseGrad):
    """NoiseGrad++ (FusionGrad) as its authors wrote it: ``n`` weight draws x ``m`` input draws."""

    def __init__(self, model, mean: float = 1.0, std: float = 0.2, sg_mean: float = 0.0, sg_std: float = 0.4,
                 n: int = 10, m: int = 10):
        super().__init__(model, mean, std, n)
        self.m, self.sg_mean, self.sg_std = m, sg_mean, sg_std

    def enhance_explanation(self, inputs, targets, explanation_fn) -> torch.Tensor:
        explanation = torch.zeros((self.n, self.m, *inputs.shape))
        for i in range(self.n):
            self.sample()
            for j in range(self.m):
                noise = torch.randn_like(inputs) * self.sg_std + self.sg_mean
                explanation[i][j] = explanation_fn(self.model, inputs + noise, targets)
        self.model.load_state_dict(self.weights)
        return explanation.mean(axis=(0, 1))
