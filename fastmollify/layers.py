"""Smoothing inside the network: noise on a layer's output, the gradient with respect to it.

With ``layer=`` (a submodule, or its dotted name in ``model.named_modules()``) the inputs go to
the model as they are (token ids, masks, anything with a batch dimension first), tiled over
the samples; a forward hook replaces the layer's output by its noisy copies, and the
attribution is the smoothed gradient with respect to that output, ``[B, *layer output]``.
With ``noise_at="input"`` the (floating) inputs get the noise as usual and the gradient is
taken at the layer's output instead (weight noise is then allowed too).

The layer's clean output is taken from one forward pass of the clean batch first (the probe):
it sets the default bounds (its observed range) and is what the noise is added to, so the
noise stream's guarantees hold as for inputs. The layer must run exactly once per forward and
give a floating tensor (or a tuple whose ``layer_output`` element is one).
"""
from __future__ import annotations

import difflib
import functools
import numbers
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch

from .guard import guard_model
from .objective import Objective

__all__ = ["resolve", "probe", "site", "LayerObjective", "CaptureObjective", "token_scores"]


def resolve(model, layer) -> tuple[str, torch.nn.Module]:
    """``(name, module)`` for ``layer``: a submodule of ``model`` or its dotted name."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"layer= needs the model as an nn.Module (its submodules are the layers), got "
                        f"{type(model).__name__}")
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in modules:
            close = difflib.get_close_matches(layer, [n for n in modules if n], n=4)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
                " (names are those of model.named_modules())"
            raise ValueError(f"layer {layer!r} is not a submodule of the model{hint}")
        return layer, modules[layer]
    if isinstance(layer, torch.nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model: pass one of its modules "
                         f"or a name from model.named_modules()")
    raise TypeError(f"layer must be a submodule or its dotted name, got {type(layer).__name__}")


def _pick(output, index: Optional[int], name: str) -> torch.Tensor:
    if torch.is_tensor(output):
        if index is not None:
            raise ValueError(f"layer_output={index} indexes a tuple, but layer {name!r} returns one tensor: drop it")
        return output
    if isinstance(output, (tuple, list)) and output:
        position = 0 if index is None else index
        if not -len(output) <= position < len(output):
            raise ValueError(f"layer_output={index} is out of range: layer {name!r} returns {len(output)} items")
        if torch.is_tensor(output[position]):
            return output[position]
    raise ValueError(f"layer {name!r} returns {type(output).__name__}; it must return a tensor, or a tuple whose "
                     f"first item (or item layer_output=i) is one")


def _replace(output, index: Optional[int], value: torch.Tensor):
    if torch.is_tensor(output):
        return value
    items = list(output)
    items[0 if index is None else index] = value
    return type(output)(items) if isinstance(output, tuple) else items


def probe(model, inputs: Sequence, extra: tuple, module: torch.nn.Module, name: str,
          index: Optional[int]) -> torch.Tensor:
    """The layer's clean output for the batch (one forward pass without gradients), checked."""
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(_pick(out, index, name).detach()))
    try:
        with torch.no_grad():
            model(*inputs, *extra)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise ValueError(f"layer {name!r} ran {len(seen)} times in one forward pass; layer= needs a module that runs "
                         f"exactly once (a shared module has no single output to perturb: pick a module used once)")
    out = seen[0]
    batch = inputs[0].shape[0]
    if not out.is_floating_point():
        raise ValueError(f"layer {name!r} outputs {out.dtype}; noise needs a floating output: pick a later layer "
                         f"(e.g. the embedding rather than the token ids)")
    if out.dim() == 0 or out.shape[0] != batch:
        raise ValueError(f"layer {name!r} output has shape {tuple(out.shape)}; it must have the batch B = {batch} "
                         f"first")
    return out.clone()


def site(model, inputs, extra: tuple, layer, layer_output, noise_at: str = "layer"):
    """``(perturbed tensors, objective factory, layer name)`` for a run explaining ``layer``'s output.

    ``noise_at="layer"``: the perturbed tensor is the layer's clean output. ``"input"``: the
    inputs (floating) are perturbed, and the gradient is taken at the layer's output."""
    name, module = resolve(model, layer)
    if layer_output is not None and (isinstance(layer_output, bool) or not isinstance(layer_output, numbers.Integral)):
        raise TypeError(f"layer_output must be an integer index into the layer's tuple output, got {layer_output!r}")
    tensors = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if not tensors or not all(torch.is_tensor(t) and t.dim() > 0 for t in tensors):
        raise TypeError("with layer= the inputs are whatever the model takes, as tensors with the batch first "
                        "(e.g. input_ids [B, T]), or a tuple of them")
    if any(t.shape[0] != tensors[0].shape[0] for t in tensors):
        raise ValueError("all inputs must share the batch size (dimension 0)")
    with guard_model(model):  # the probe changes nothing on the model either
        clean = probe(model, tensors, extra, module, name, layer_output)
    if noise_at == "input":
        return tensors, functools.partial(CaptureObjective, module=module, name=name, index=layer_output,
                                          explained=(clean,)), name
    return (clean,), functools.partial(LayerObjective, inputs=tensors, module=module, name=name,
                                       index=layer_output), name


@dataclass
class LayerObjective(Objective):
    """The objective when the noise sits at ``layer``: ``scores(views)`` runs the model on the user's
    inputs tiled over the samples and hands the layer's noisy copies (``views``) to the rest of it."""

    inputs: tuple = ()
    module: Optional[torch.nn.Module] = None
    name: str = ""
    index: Optional[int] = None

    def subset(self, rows: torch.Tensor) -> "LayerObjective":
        return replace(super().subset(rows), inputs=tuple(x[rows.to(x.device)] for x in self.inputs))

    def scores(self, views: Sequence[torch.Tensor], repeats: int) -> torch.Tensor:
        calls = []

        def swap(module, args, output):
            calls.append(1)
            return _replace(output, self.index, views[0])

        handle = self.module.register_forward_hook(swap)
        try:
            tiled = Objective(self.model, self.target, self.output, tuple(self.inputs) + tuple(self.extra_args),
                              self.batch, self.checked)  # the inputs are tiled like per-example arguments
            scores = tiled.scores((), repeats)
        finally:
            handle.remove()
        self.checked = True
        if len(calls) != 1:
            raise ValueError(f"layer {self.name!r} ran {len(calls)} times in one forward pass (it ran once in the "
                             f"probe): layer= needs a module that runs exactly once")
        return scores


@dataclass
class CaptureObjective(Objective):
    """The objective when the noise sits at the inputs and the gradient is taken at ``layer``'s
    output (``noise_at="input"``): each forward records that output."""

    module: Optional[torch.nn.Module] = None
    name: str = ""
    index: Optional[int] = None
    captured: list = field(default_factory=list)

    def subset(self, rows: torch.Tensor) -> "CaptureObjective":
        return replace(super().subset(rows), captured=[])

    def scores(self, views: Sequence[torch.Tensor], repeats: int) -> torch.Tensor:
        self.captured.clear()
        handle = self.module.register_forward_hook(
            lambda module, args, output: self.captured.append(_pick(output, self.index, self.name)))
        try:
            scores = super().scores(views, repeats)
        finally:
            handle.remove()
        if len(self.captured) != 1:
            raise ValueError(f"layer {self.name!r} ran {len(self.captured)} times in one forward pass: layer= needs "
                             f"a module that runs exactly once")
        return scores

    def targets(self, views: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        return self.captured


def token_scores(attributions: torch.Tensor, reduce: str = "sum", mask=None) -> torch.Tensor:
    """Per-token scores ``[B, T]`` from attributions ``[B, T, H]`` at an embedding layer.

    ``reduce``: 'sum' (signed, the attribution's total per token) or 'l2' (its norm). ``mask``
    (e.g. the attention mask, ``[B, T]``): tokens where it is 0 (padding) score 0.
    """
    if not torch.is_tensor(attributions) or attributions.dim() != 3:
        shape = tuple(attributions.shape) if torch.is_tensor(attributions) else type(attributions).__name__
        raise ValueError(f"attributions must be [B, T, H] (an embedding layer's map), got {shape}")
    if reduce == "sum":
        scores = attributions.sum(-1)
    elif reduce == "l2":
        scores = attributions.norm(dim=-1)
    else:
        raise ValueError(f"reduce must be 'sum' or 'l2', got {reduce!r}")
    if mask is not None:
        mask = torch.as_tensor(mask, device=scores.device)
        if mask.shape != scores.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be [B, T] = {tuple(scores.shape)}")
        scores = scores * (mask != 0).to(scores.dtype)
    return scores
