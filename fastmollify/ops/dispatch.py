"""Backend selection: which backend serves a call, and why the others cannot.

``auto`` picks cuda > triton > reference for CUDA tensors and cpu > reference for CPU
tensors. A backend asked for by name that cannot serve raises its reason.
"""
from __future__ import annotations

import importlib

import torch

from .. import kernels

NAMES = ("reference", "cpu", "cuda", "triton")
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
_MODULES = {"reference": ("reference", None), "cpu": ("extension", "CPU"), "cuda": ("extension", "CUDA"),
            "triton": ("triton", None)}


def load(name: str):
    """The backend object called ``name`` (a module or object with the three ops)."""
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose 'auto' or one of {', '.join(NAMES)}")
    module_name, attribute = _MODULES[name]
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, attribute) if attribute else module


def why_not(name: str, device: torch.device, dtype: torch.dtype, kernel="gaussian"):
    """None if backend ``name`` can serve these inputs, else the reason it cannot."""
    try:
        backend = load(name)
    except ImportError as error:  # a backend module that cannot even import
        return f"its module failed to import ({error})"
    return backend.unavailable(torch.device(device), dtype, kernels.get(kernel))


def select(name: str, device: torch.device, dtype: torch.dtype, kernel="gaussian"):
    """The backend that serves a call: ``name`` itself, or the first able one for 'auto'."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string ('auto' or one of {', '.join(NAMES)}), got {name!r}")
    device = torch.device(device)
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ("reference",)):
            if why_not(candidate, device, dtype, kernel) is None:
                return load(candidate)
        return load("reference")
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose 'auto' or one of {', '.join(NAMES)}")
    reason = why_not(name, device, dtype, kernel)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} cannot serve {dtype} tensors on {device} with kernel "
                           f"{kernels.get(kernel).name!r}: {reason}. Use backend='auto' to fall back.")
    return load(name)


def availability(device="cpu", dtype=torch.float32) -> dict[str, str | None]:
    """Each backend's reason for not serving ``device``/``dtype`` (None: available)."""
    return {name: why_not(name, torch.device(device), dtype) for name in NAMES}
