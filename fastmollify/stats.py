"""Running per-element statistics of the sample gradients, and the reductions over them."""
from __future__ import annotations

from dataclasses import dataclass

import torch

REDUCTIONS = ("mean", "sq", "var", "stats")


@dataclass
class Stats:
    """Per-element statistics of N sample gradients (float32, the input's shape).

    ``n`` is the total sample weight (the sample count when unweighted). ``m2`` is the sum of
    squared deviations from the mean (Welford/Chan), so no variance is ever formed as
    ``E[g^2] - E[g]^2``.
    """

    mean: torch.Tensor
    m2: torch.Tensor
    n: float
    backend: str = "reference"
    seed: int = 0

    @property
    def var(self) -> torch.Tensor:
        """Unbiased sample variance of the sample gradients (``m2 / (n - 1)``); NaN (undefined) for n = 1."""
        return self.m2 / (self.n - 1) if self.n > 1 else torch.full_like(self.m2, float("nan"))

    @property
    def stderr(self) -> torch.Tensor:
        """Monte Carlo standard error of the mean, ``sqrt(var / n)``: how converged the map is (NaN for n = 1)."""
        return torch.sqrt(self.var / self.n)

    @property
    def vargrad(self) -> torch.Tensor:
        """VarGrad: the population variance ``m2 / n`` (Captum's NoiseTunnel 'vargrad')."""
        return self.m2 / self.n

    @property
    def smoothgrad_sq(self) -> torch.Tensor:
        """SmoothGrad-squared: the mean of the squared sample gradients."""
        return self.m2 / self.n + self.mean**2

    def reduce(self, reduce: str, dtype: torch.dtype) -> torch.Tensor:
        """The map for ``reduce`` ('mean', 'sq' or 'var') in ``dtype``."""
        value = {"mean": lambda: self.mean, "sq": lambda: self.smoothgrad_sq, "var": lambda: self.vargrad}[reduce]
        return value().to(dtype)

    def __repr__(self) -> str:
        return (f"Stats(shape={tuple(self.mean.shape)}, n={self.n:g}, backend={self.backend!r}, seed={self.seed}, "
                f"mean |map|={self.mean.abs().mean():.4g}, mean stderr={self.stderr.mean():.4g})")
