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
        same_dtype(model, x, name)
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


STREAM_INDICES = 2**32  # sample and example indices of the noise stream are 32-bit counter words


def scalar(value):
    """A 0-d tensor or array as the Python number it holds; anything else as it is."""
    if (torch.is_tensor(value) or type(value).__module__ == "numpy") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def positive_int(name: str, value, minimum: int = 1) -> int:
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive(name: str, value, allow_zero: bool = False) -> float:
    value = scalar(value)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def open_unit(name: str, value, hint: str = "") -> float:
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1){hint}, got {value!r}")
    return float(value)


def boolean(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    value = scalar(value)
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be True or False{' (or None)' if allow_none else ''}, got {value!r}")
    return bool(value)


def stream_index(name: str, first, count: int, hint: str = "") -> int:
    """``first`` such that indices ``first .. first + count - 1`` fit the noise stream's 32-bit words."""
    first = positive_int(name, first, 0)
    if first + count > STREAM_INDICES:
        raise ValueError(f"{name}={first} with {count} indices after it passes the noise stream's limit of 2**32 "
                         f"indices{hint}; use a smaller {name}")
    return first


def choice(name: str, value, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def seed(value) -> int:
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {value!r}")
    return int(value)


def target(value, batch: int, device: torch.device):
    """The target as int64 ``[B]`` on ``device`` (or None)."""
    if value is None:
        return None
    value = scalar(value)
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"target must be an int, a sequence of B ints, a tensor [B], or None; got {value!r}")
    if isinstance(value, numbers.Integral):
        t = torch.full((batch,), int(value), dtype=torch.int64, device=device)
    else:
        try:
            t = torch.as_tensor(value, device=device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"target must be an int, a sequence of B ints, a tensor [B], or None; got {value!r}") \
                from None
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


def model_device(model, device=None) -> torch.device:
    """``device`` if given, else where the model's parameters live (the CPU for a function)."""
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def same_dtype(model, x: torch.Tensor, name: str) -> None:
    """Refuse inputs whose dtype no floating parameter of the model has (unless autocast is on)."""
    if not isinstance(model, torch.nn.Module) or torch.is_autocast_enabled(x.device.type):
        return
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes and x.dtype not in dtypes:
        want = sorted(str(d) for d in dtypes)[0]
        raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {', '.join(sorted(map(str, dtypes)))}:"
                        f" cast the inputs (inputs.to({want})) or the model (model.to({x.dtype}))")


def model(value) -> None:
    if not callable(value):
        raise TypeError(f"model must be a callable (an nn.Module or a function), got {type(value).__name__}")
