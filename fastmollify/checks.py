"""Argument checks: every refusal names the argument and the fix, before anything runs."""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch


def inputs_tuple(inputs, model=None) -> tuple[tuple[torch.Tensor, ...], bool]:
    """The inputs as a tuple of tensors, and whether the caller passed a tuple."""
    is_tuple = isinstance(inputs, (tuple, list))
    tensors = tuple(inputs) if is_tuple else (inputs,)
    if not tensors:
        raise ValueError("inputs is empty: pass a tensor [B, ...] or a tuple of tensors")
    batch = None
    for k, x in enumerate(tensors):
        name = f"inputs[{k}]" if is_tuple else "inputs"
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor [B, ...], got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} has dtype {x.dtype}; gradients need a floating dtype: pass x.float()")
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"{name} must have a non-empty batch dimension first, got shape {tuple(x.shape)}")
        same_device(model, x)
        if x.numel() and not _all_finite(x):
            raise ValueError(f"{name} contains NaN or Inf; clean the data (e.g. torch.nan_to_num) first")
        if batch is not None and x.shape[0] != batch:
            raise ValueError(f"all inputs must share the batch size: {name} has {x.shape[0]}, inputs[0] has {batch}")
        if x.device != tensors[0].device:
            raise ValueError(f"{name} is on {x.device} but inputs[0] is on {tensors[0].device}: move them together")
        batch = x.shape[0]
    return tensors, is_tuple


def _all_finite(x: torch.Tensor) -> bool:
    """Whether x has no NaN or Inf: a finite sum is proof (one cheap pass); only a non-finite sum
    (a NaN/Inf, or huge finite values overflowing it) needs the exact, slower test."""
    total = x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(x).all())


def positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive(name: str, value, allow_zero: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def open_unit(name: str, value, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1){hint}, got {value!r}")
    return float(value)


def choice(name: str, value, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {value!r}")
    return int(value)


def target(value, batch: int, device: torch.device):
    """The target as int64 ``[B]`` on ``device`` (or None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("target must be an int, a sequence of B ints, a tensor [B], or None; got a bool")
    if isinstance(value, numbers.Integral):
        t = torch.full((batch,), int(value), dtype=torch.int64, device=device)
    else:
        t = torch.as_tensor(value, device=device)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
        t = t.to(torch.int64).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise ValueError(f"target has {t.numel()} entries for a batch of {batch}: pass one per example or an int")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"target must be >= 0, got {int(t.min())}")
    return t.contiguous()


def same_device(model, x: torch.Tensor) -> None:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            if p.device != x.device:
                raise ValueError(f"inputs are on {x.device} but the model's parameters are on {p.device}: "
                                 f"move one of them, e.g. model.to(inputs.device)")
            return


def model(value) -> None:
    if not callable(value):
        raise TypeError(f"model must be a callable (an nn.Module or a function), got {type(value).__name__}")
