"""Running per-element statistics of the sample gradients, and the reductions over them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

REDUCTIONS = ("mean", "sq", "var", "stats")


@dataclass
class Stats:
    """Per-element statistics of N sample gradients (float32, the input's shape).

    ``n`` is the sample count: a number, or a tensor ``[B]`` of per-example counts when ``tol``
    let examples stop early. ``m2`` is the sum of squared deviations from the mean (Welford/Chan),
    so no variance is ever formed as ``E[g^2] - E[g]^2``.

    ``units``: when the samples are not independent, the statistics of the independent units'
    means (weight draws of NoiseGrad/FusionGrad: the input samples of one draw share its weights;
    antithetic pairs). The standard error comes from them. ``composed``: for compositions such as
    integrated_gradients, the statistics of the composed map per unit.
    """

    mean: torch.Tensor
    m2: torch.Tensor
    n: Union[float, torch.Tensor]
    backend: str = "reference"
    seed: int = 0
    units: Optional["Stats"] = None
    composed: Optional["Stats"] = None
    dtype: Optional[torch.dtype] = None  # of the explained tensor: maps are returned in it

    def counts(self) -> Union[float, torch.Tensor]:
        """``n`` broadcastable against the maps."""
        if torch.is_tensor(self.n):
            return self.n.to(device=self.mean.device, dtype=torch.float32).reshape(-1, *[1] * (self.mean.dim() - 1))
        return float(self.n)

    @property
    def var(self) -> torch.Tensor:
        """Unbiased sample variance of the sample gradients (``m2 / (n - 1)``); NaN (undefined) for n = 1."""
        n = self.counts()
        if torch.is_tensor(n):
            return torch.where(n > 1, self.m2 / (n - 1).clamp(min=1), float("nan"))
        return self.m2 / (n - 1) if n > 1 else torch.full_like(self.m2, float("nan"))

    @property
    def stderr(self) -> torch.Tensor:
        """Monte Carlo standard error of the mean: ``sqrt(var / n)`` over the independent units
        (the samples, or ``units``); NaN with a single unit."""
        if self.units is not None:
            return self.units.stderr
        return torch.sqrt(self.var / self.counts())

    @property
    def vargrad(self) -> torch.Tensor:
        """VarGrad: the population variance ``m2 / n`` (Captum's NoiseTunnel 'vargrad')."""
        return self.m2 / self.counts()

    @property
    def smoothgrad_sq(self) -> torch.Tensor:
        """SmoothGrad-squared: the mean of the squared sample gradients."""
        return self.m2 / self.counts() + self.mean**2

    def reduce(self, reduce: str, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The map for ``reduce`` ('mean', 'sq' or 'var') in ``dtype`` (default: the explained tensor's)."""
        value = {"mean": lambda: self.mean, "sq": lambda: self.smoothgrad_sq, "var": lambda: self.vargrad}[reduce]
        return value().to(dtype or self.dtype or torch.float32)

    def __repr__(self) -> str:
        n = f"{self.n:g}" if not torch.is_tensor(self.n) else f"{int(self.n.min())}..{int(self.n.max())}"
        return (f"Stats(shape={tuple(self.mean.shape)}, n={n}, backend={self.backend!r}, seed={self.seed}, "
                f"mean |map|={self.mean.abs().mean():.4g}, mean stderr={self.stderr.nanmean():.4g})")
