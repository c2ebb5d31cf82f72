"""Smooth Grad-CAM: Grad-CAM whose channel weights come from smoothed gradients at the layer.

>>> cam = gradcam(model, x, target, layer="layer4", method="smoothgrad", n=50, noise_level=0.2)

Grad-CAM (Selvaraju et al. 2017): ``cam = ReLU(sum_c w_c A_c)`` with ``A`` the layer's
activation ``[B, C, h, w]`` and ``w_c`` the spatial mean of the gradient of the score with
respect to ``A_c``. Here that gradient is any method's, with the noise on the layer's output
(``layer=``; or on the input with ``noise_at="input"``): SmoothGrad's, a kernel's, AdaptGrad's
(bounds: the activation's range)...; ``method="gradient"`` is plain Grad-CAM. The map is upsampled (bilinear) to the input's size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import layers, methods

__all__ = ["gradcam"]

INPUT_NOISE_METHODS = ("gradient", "smoothgrad", "mollify", "adaptgrad", "clipgrad")


def gradcam(model, inputs, target=None, *, layer, method: str = "smoothgrad", noise_at: str = "layer",
            relu: bool = True, upsample: bool = True, layer_output=None, additional_forward_args=None,
            **options) -> torch.Tensor:
    """The (smooth) Grad-CAM map ``[B, H, W]`` (``upsample=False``: at the layer's resolution).

    ``layer``: a convolutional stage whose output is ``[B, C, h, w]`` (a submodule or its name).
    ``method``: 'gradient' (plain Grad-CAM), 'smoothgrad', 'mollify', 'adaptgrad' or 'clipgrad',
    with its options (``n``, ``sigma``, ``kernel``...). ``noise_at``: 'layer' (the noise on the
    activation) or 'input' (on the image, the gradient taken at the layer; bounds and sigma then
    refer to the input). ``relu=False`` keeps negative evidence.
    """
    if method not in INPUT_NOISE_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, INPUT_NOISE_METHODS))} (noise at the layer; "
                         f"weight noise is not offered), got {method!r}")
    if options.pop("reduce", "mean") != "mean":
        raise ValueError("gradcam weighs channels by the mean gradient: it takes no reduce (drop it or pass 'mean')")
    extra = additional_forward_args
    extra = () if extra is None else tuple(extra) if isinstance(extra, (tuple, list)) else (extra,)
    (activation,), _, name = layers.site(model, inputs, extra, layer, layer_output)
    if activation.dim() != 4:
        raise ValueError(f"layer {name!r} outputs shape {tuple(activation.shape)}; Grad-CAM needs a feature map "
                         f"[B, C, h, w]: pick a convolutional stage")
    grads = getattr(methods, method)(model, inputs, target, layer=layer, layer_output=layer_output, noise_at=noise_at,
                                     additional_forward_args=additional_forward_args, **options)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    cam = (weights * activation.float()).sum(1)
    if relu:
        cam = cam.clamp(min=0)
    if upsample:
        first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        if first.dim() != 4:
            raise ValueError(f"upsample=True needs image inputs [B, C, H, W], got shape {tuple(first.shape)}; pass "
                             f"upsample=False for the map at the layer's resolution")
        cam = F.interpolate(cam[:, None], size=first.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    return cam

