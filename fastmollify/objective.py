"""The objective: the scalar per example whose gradient is explained, and its checks.

The engine sends ``repeats`` noisy copies of the user's ``B`` examples through the model as
one batch of ``repeats * B`` rows (sample-major); every message here speaks of the user's B.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import torch

__all__ = ["Objective", "select_scores", "NOT_DIFFERENTIABLE"]

NOT_DIFFERENTIABLE = ("the model's output does not depend on inputs through autograd: it detaches them, ignores "
                      "them, or runs under torch.no_grad()/torch.inference_mode(); explain a model whose score is "
                      "differentiable in its inputs")


@dataclass
class Objective:
    """The model, the target class per example and how the score is read from the output."""

    model: Callable
    target: Optional[torch.Tensor] = None  # [B] int64, or None for [B] / [B, 1] outputs
    output: str = "logit"  # or "softmax"
    extra_args: tuple = ()
    batch: int = 1

    checked: bool = False  # the target range is checked once, on the first output (one host sync)
    explained: Optional[Sequence[torch.Tensor]] = None  # clean tensors of what is explained, if not the inputs

    def targets(self, views: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """What the gradient of the scores is taken with respect to: the (noisy) inputs."""
        return views

    def subset(self, rows: torch.Tensor) -> "Objective":
        """The objective of the examples ``rows`` only (per-example targets and arguments sliced)."""
        extra = tuple(a[rows.to(a.device)] if torch.is_tensor(a) and a.dim() > 0 and a.shape[0] == self.batch else a
                      for a in self.extra_args)
        target = None if self.target is None else self.target[rows.to(self.target.device)]
        return replace(self, target=target, extra_args=extra, batch=len(rows))

    def scores(self, inputs: Sequence[torch.Tensor], repeats: int) -> torch.Tensor:
        """The explained score of each of the ``repeats * batch`` rows of ``inputs``."""
        extra = tuple(_repeat(a, repeats, self.batch) for a in self.extra_args)
        out = self.model(*inputs, *extra)
        target = None if self.target is None else self.target.repeat(repeats)
        scores = select_scores(out, target, self.output, self.batch, repeats, check_range=not self.checked)
        self.checked = True
        if not scores.requires_grad:
            raise ValueError(NOT_DIFFERENTIABLE)
        return scores


def _repeat(arg, repeats: int, batch: int):
    """Tile a per-example forward argument for ``repeats`` samples (sample-major)."""
    if torch.is_tensor(arg) and arg.dim() > 0 and arg.shape[0] == batch and repeats > 1:
        return arg.repeat(repeats, *([1] * (arg.dim() - 1)))
    return arg


def select_scores(out, target, output: str, batch: int, repeats: int = 1, check_range: bool = True) -> torch.Tensor:
    """The explained score per row of a model output ``[repeats * batch, K]`` or ``[repeats * batch]``
    (or an object with such ``logits``, as Hugging Face models return)."""
    rows = repeats * batch
    if not torch.is_tensor(out) and torch.is_tensor(getattr(out, "logits", None)):
        out = out.logits  # a Hugging Face model output
    if not torch.is_tensor(out):
        raise TypeError(f"the model must return a tensor of shape [B, K] or [B], got {type(out).__name__}")
    if out.dim() == 0 or out.shape[0] != rows or out.dim() > 2:
        stacked = "" if repeats == 1 else f" ({repeats} noisy copies of it stacked along dim 0)"
        raise ValueError(f"the model returned shape {tuple(out.shape)} for a batch of B = {batch}{stacked}; it must "
                         f"return one row per input row: [B, K] class scores or [B] scalars")
    if output == "softmax":
        if out.dim() == 1 or out.shape[1] == 1:
            raise ValueError("output='softmax' needs [B, K] logits with K >= 2: the model returns one score per "
                             "example, whose softmax is constant (the map would be all zeros); use output='logit'")
        out = torch.softmax(out, dim=1)
    if target is None:
        if out.dim() == 2 and out.shape[1] != 1:
            raise ValueError(f"the model returns {out.shape[1]} classes: pass target= (an int, or one per example)")
        return out.reshape(rows)
    if out.dim() == 1:
        raise ValueError("the model returns one score per example: pass target=None")
    if check_range and int(target.max()) >= out.shape[1]:
        raise ValueError(f"target {int(target.max())} is out of range for a model with {out.shape[1]} classes")
    return out.gather(1, target.reshape(-1, 1)).reshape(rows)
