"""``quantus_explain_func``: any fastmollify method as Quantus's ``explain_func``.

>>> import quantus, fastmollify as fm
>>> metric = quantus.Sparseness()
>>> scores = metric(model=model, x_batch=x, y_batch=y, explain_func=fm.quantus_explain_func,
...                 explain_func_kwargs={"method": "adaptgrad", "c": 0.95, "bounds": (0, 1), "n": 50})

Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with
NumPy arrays (and ``device`` when it was given one); the result is a NumPy array, summed over
the channel axis by default (``reduce_axes=(1,)``, ``keepdims=True``, as Quantus's own
Captum explanations are) so it fits every Quantus metric.
"""
from __future__ import annotations

import numpy as np
import torch

from . import checks, compose, methods

__all__ = ["quantus_explain_func", "METHODS"]

METHODS = {name: getattr(methods, name) for name in
           ("gradient", "smoothgrad", "mollify", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad")}
METHODS.update(integrated_gradients=compose.integrated_gradients, gradient_x_input=compose.gradient_x_input)


def quantus_explain_func(model, inputs, targets, *, method="smoothgrad", reduce_axes=(1,), keepdims: bool = True,
                         device=None, **options) -> np.ndarray:
    """Explain ``inputs`` (NumPy ``[B, C, ...]`` or a tensor) for ``targets`` with a fastmollify method.

    ``method``: a name ('gradient', 'smoothgrad', 'mollify', 'adaptgrad', 'clipgrad',
    'noisegrad', 'fusiongrad', 'integrated_gradients', 'gradient_x_input') or a callable with
    a method's signature; ``options`` go to it (e.g. ``n``, ``seed``, ``c``, ``bounds``,
    ``inner``). ``reduce_axes``: axes summed in the result (``()`` keeps the input's shape).
    """
    if callable(method):
        explain = method
    elif method in METHODS:
        explain = METHODS[method]
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)} or pass a callable")
    dev = checks.model_device(model, device)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs,
                        dtype=torch.float32).to(dev)
    target = None if targets is None else torch.as_tensor(np.asarray(targets) if not isinstance(
        targets, torch.Tensor) else targets).to(dev).long().reshape(-1)
    result = explain(model, x, target, **options)
    a = result.detach().float().cpu().numpy()
    axes = tuple(reduce_axes or ())
    if 0 in axes:
        raise ValueError("reduce_axes must not include the batch axis 0")
    return a.sum(axis=axes, keepdims=keepdims) if axes else a
