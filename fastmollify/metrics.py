"""Attribution metrics, batched in torch (they run wherever the maps are, GPU included).

Every metric takes maps shaped like the inputs, ``[B, C, *spatial]``, and returns one value
per example (a ``[B]`` tensor; average it yourself). ``channel_dim=1`` (the default) sums the
map over its channels first, as the papers do; ``channel_dim=None`` uses the maps as given.

* ``sparseness``: the Gini index of docs/methods.md, section 4 (higher: sparser).
* ``complexity``: the entropy of the normalised absolute map (lower: simpler; Quantus's
  Complexity).
* ``spearman``: Spearman's rank correlation per example (ties get their average rank).
  ``consistency`` (lower is better: the map depends on what the model learned) and
  ``invariance`` (higher is better: Kindermans et al.'s input invariance) take its absolute
  value between two models' maps; ``scale='diverging'`` ranks the AdaptGrad authors' scaled map
  (``diverging``: signed, channel-summed, divided by twice its 99th percentile, clipped to ±1).
* ``attribution_localisation``: the share of absolute attribution mass inside the mask;
  ``pointing_game``: whether the largest absolute attribution lies inside the mask.
* ``deletion_curve``/``insertion_curve`` and ``insertion_deletion``: the class score as the
  most attributed pixels are deleted from the image / inserted into a baseline; AUC on a
  [0, 1] fraction axis (trapezoid rule). Many perturbed images go through one forward pass.
* ``pic``: the Performance Information Curves (SIC, AIC) of Kapishnikov et al. (XRAI) as the
  AdaptGrad authors ran them: pixels revealed into a blurred (interpolated) image, x-axis the
  normalised lossless-WebP size, y-axis the normalised softmax (SIC) or correctness (AIC).

Cross-checked in tests/test_metrics.py against Quantus (Sparseness, Complexity, PointingGame,
AttributionLocalisation, PixelFlipping) and against hand-computed cases.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import checks

__all__ = ["sparseness", "gini", "complexity", "spearman", "rank", "consistency", "invariance", "diverging",
           "attribution_localisation", "pointing_game", "deletion_curve", "insertion_curve", "auc",
           "insertion_deletion", "blur", "pic", "pic_auc", "DIRECTIONS"]

# higher (+1) or lower (-1) is better, for every per-example metric here
DIRECTIONS = {"sparseness": 1, "complexity": -1, "consistency": -1, "invariance": 1, "attribution_localisation": 1,
              "pointing_game": 1, "insertion": 1, "deletion": -1, "sic": 1, "aic": 1}


def _flat(maps: torch.Tensor, channel_dim: Optional[int]) -> torch.Tensor:
    """``[B, F]`` float: the map summed over ``channel_dim`` (if any), flattened per example."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor, got {type(maps).__name__}")
    if maps.dim() < 2:
        raise ValueError(f"maps must be batched, [B, ...], got shape {tuple(maps.shape)}")
    m = maps.detach()
    if not m.is_floating_point():
        m = m.float()
    if channel_dim is not None:
        if maps.dim() < 3:
            raise ValueError(f"maps of shape {tuple(maps.shape)} have no channel dimension to sum; "
                             f"pass channel_dim=None")
        m = m.sum(channel_dim)
    return m.reshape(m.shape[0], -1)


def _masks(masks: torch.Tensor, flat_maps: torch.Tensor) -> torch.Tensor:
    """Masks flattened to ``[B, F]`` bool, matching the channel-summed maps."""
    s = torch.as_tensor(masks, device=flat_maps.device)
    s = s.reshape(s.shape[0], -1) if s.dim() > 1 else s
    if s.shape != flat_maps.shape:
        raise ValueError(f"masks have {tuple(s.shape)} elements per batch after flattening, the channel-summed "
                         f"maps {tuple(flat_maps.shape)}; give one mask per example, shaped like one map channel")
    return s.bool()


def gini(values: torch.Tensor) -> torch.Tensor:
    """The Gini index of each row of ``values`` ``[B, n]`` (non-negative), exactly methods.md's formula.

    ``a = sort(values + 1e-7)`` ascending, ``sum_i (2i - n - 1) a_i / (n sum_i a_i)``, i = 1..n.
    """
    a = torch.sort(values.double() + 1e-7, dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))


def sparseness(maps: torch.Tensor, channel_dim: Optional[int] = 1) -> torch.Tensor:
    """Gini index of ``|map summed over channels|`` per example (higher: sparser). methods.md, section 4."""
    return gini(_flat(maps, channel_dim).abs()).float()


def complexity(maps: torch.Tensor, channel_dim: Optional[int] = 1) -> torch.Tensor:
    """Entropy ``-sum p log(p + 1e-12)`` of ``p = |s| / sum |s|`` per example (lower: simpler)."""
    a = _flat(maps, channel_dim).abs().double()
    p = a / a.sum(1, keepdim=True)
    return (-(p * torch.log(p + 1e-12)).sum(1)).float()


def rank(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks along dim 1 of ``[B, n]`` (float64); tied values share their average rank."""
    v = values.double()
    b, n = v.shape
    sorted_v, order = torch.sort(v, dim=1, stable=True)
    new_group = torch.ones_like(sorted_v, dtype=torch.bool)
    new_group[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = torch.cumsum(new_group.long(), 1) - 1 + torch.arange(b, device=v.device)[:, None] * n  # global ids
    position = torch.arange(1, n + 1, dtype=v.dtype, device=v.device).expand(b, n).reshape(-1)
    total = torch.zeros(b * n, dtype=v.dtype, device=v.device).index_add_(0, group.reshape(-1), position)
    count = torch.zeros(b * n, dtype=v.dtype, device=v.device).index_add_(0, group.reshape(-1),
                                                                         torch.ones_like(position))
    average = (total / count.clamp_min(1))[group.reshape(-1)].reshape(b, n)
    return torch.empty_like(average).scatter_(1, order, average)


def diverging(maps: torch.Tensor, channel_dim: Optional[int] = 1, percentile: float = 99.0) -> torch.Tensor:
    """The AdaptGrad authors' scaled map (their ``noabsscale``), ``[B, F]``: the signed channel sum ``s``,
    ``clip(s / (2 |P(s)|), -1, 1)`` with ``P`` the ``percentile`` of ``s`` (linear interpolation, as
    NumPy). Values beyond twice the percentile tie at ±1. A map whose percentile is 0 gives NaN."""
    s = _flat(maps, channel_dim).double()
    span = torch.quantile(s, percentile / 100.0, dim=1, keepdim=True).abs()
    scaled = (s / (2 * span)).clamp(-1, 1)
    return torch.where(span > 0, scaled, torch.full_like(scaled, math.nan))


def _ranked(maps, channel_dim, abs, scale):
    if scale is None:
        f = _flat(maps, channel_dim)
        return f.abs() if abs else f
    if scale != "diverging":
        raise ValueError(f"scale must be None or 'diverging', got {scale!r}")
    if abs:
        raise ValueError("scale='diverging' ranks the signed map: drop abs=True")
    return diverging(maps, channel_dim)


def spearman(a: torch.Tensor, b: torch.Tensor, channel_dim: Optional[int] = 1, abs: bool = False,
             scale: Optional[str] = None) -> torch.Tensor:
    """Spearman's rho between ``a[i]`` and ``b[i]`` for every example i (Pearson of average ranks).

    ``abs=True`` ranks the absolute maps; ``scale='diverging'`` ranks ``diverging(map)``. A
    constant map has no ranking: rho is NaN there.
    """
    fa, fb = _ranked(a, channel_dim, abs, scale), _ranked(b, channel_dim, abs, scale).to(a.device)
    if fa.shape != fb.shape:
        raise ValueError(f"the two maps differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    bad = torch.isnan(fa).any(1) | torch.isnan(fb).any(1)
    ra, rb = rank(torch.nan_to_num(fa)), rank(torch.nan_to_num(fb))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    rho = ((ra * rb).sum(1) / torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))).float()
    return torch.where(bad, torch.full_like(rho, math.nan), rho)


def consistency(maps: torch.Tensor, maps_random: torch.Tensor, channel_dim: Optional[int] = 1,
                abs: bool = False, scale: Optional[str] = None) -> torch.Tensor:
    """``|Spearman rho|`` per example between a normal model's maps and a random-label model's maps.

    Lower is better: a method whose map barely changes when the model learned nothing does not
    explain the model (Adebayo et al.'s data-randomisation test).
    """
    return spearman(maps, maps_random, channel_dim, abs, scale).abs()


def invariance(maps: torch.Tensor, maps_shifted: torch.Tensor, channel_dim: Optional[int] = 1,
               abs: bool = False, scale: Optional[str] = None) -> torch.Tensor:
    """``|Spearman rho|`` per example between a normal model's maps at x and those of a model trained on
    inputs shifted by +1, explained at ``x + 1``. Higher is better (Kindermans et al.'s input
    invariance: the two models compute the same function of the content, so a map should not change).
    """
    return spearman(maps, maps_shifted, channel_dim, abs, scale).abs()


def attribution_localisation(maps: torch.Tensor, masks: torch.Tensor, channel_dim: Optional[int] = 1,
                             abs: bool = True) -> torch.Tensor:
    """Share of the attribution mass inside the mask: ``sum_mask |s| / sum |s|`` (NaN for empty masks).

    ``abs=False`` keeps only the positive attributions (Quantus's ``positive_attributions``).
    """
    a = _flat(maps, channel_dim).double()
    a = a.abs() if abs else a.clamp_min(0)
    s = _masks(masks, a)
    share = (a * s).sum(1) / (a.sum(1) + 1e-9)
    return torch.where(s.any(1), share, torch.full_like(share, math.nan)).float()


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, channel_dim: Optional[int] = 1,
                  abs: bool = True) -> torch.Tensor:
    """1.0 where a largest (absolute, with ``abs``) attribution lies inside the mask, else 0.0 (NaN: empty mask).

    With ties for the maximum, any maximum inside the mask is a hit (as Quantus does).
    """
    a = _flat(maps, channel_dim)
    a = a.abs() if abs else a
    s = _masks(masks, a)
    top = a == a.max(1, keepdim=True).values
    hit = (top & s).any(1).float()
    return torch.where(s.any(1), hit, torch.full_like(hit, math.nan))


def blur(images: torch.Tensor, sigma: float = 5.0, size: int = 11) -> torch.Tensor:
    """A separable Gaussian blur of ``[B, C, H, W]`` images (edge padding): RISE's insertion baseline."""
    radius = size // 2
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    x = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = torch.nn.functional.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _baseline(images: torch.Tensor, baseline) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "zeros":
            return torch.zeros_like(images)
        if baseline == "black":
            return images.amin(dim=tuple(range(1, images.dim())), keepdim=True).expand_as(images)
        if baseline == "mean":
            return images.mean(dim=tuple(range(2, images.dim())), keepdim=True).expand_as(images)
        if baseline == "blur":
            return blur(images)
        raise ValueError(f"unknown baseline {baseline!r}; use 'zeros', 'black' (each image's minimum), 'mean' "
                         f"(per-channel mean), 'blur', a number or a tensor")
    return torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images)


def _score(model, batch: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    out = model(batch)
    if out.dim() == 1:
        return out
    if output == "softmax":
        out = torch.softmax(out, dim=1)
    elif output != "logit":
        raise ValueError(f"output must be 'logit' or 'softmax', got {output!r}")
    return out.gather(1, target[:, None])[:, 0]


@torch.no_grad()
def _curve(model, images, maps, target, steps, start, fill, output, batch_size, channel_dim, abs):
    """Scores of ``where(pixel among the top k_t attributed, fill, start)`` for t = 0..steps: ``[B, steps+1]``."""
    if images.dim() < 3:
        raise ValueError(f"images must be [B, C, ...], got shape {tuple(images.shape)}")
    b = images.shape[0]
    steps = checks.positive_int("steps", int(steps))
    a = _flat(maps, channel_dim).to(images.device)
    if channel_dim is None:
        pixel_shape = images.shape[1:]
    else:
        pixel_shape = images.shape[2:]
    if a.shape[1] != math.prod(pixel_shape):
        raise ValueError(f"maps {tuple(maps.shape)} do not match images {tuple(images.shape)}")
    a = a.abs() if abs else a
    pixels = a.shape[1]
    order = torch.argsort(a, dim=1, descending=True, stable=True)
    position = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=a.device).expand(b, -1))
    counts = torch.round(torch.arange(steps + 1, device=a.device, dtype=torch.float64) * pixels / steps).long()
    target = torch.as_tensor(target, device=images.device).reshape(-1).expand(b).long()
    scores = torch.empty(b * (steps + 1), device=images.device)
    pairs = torch.arange(b * (steps + 1), device=images.device)
    per_pass = max(1, int(batch_size))
    for i in range(0, len(pairs), per_pass):
        idx = pairs[i:i + per_pass]
        ex, step = idx // (steps + 1), idx % (steps + 1)
        chosen = position[ex] < counts[step][:, None]  # [P, pixels]
        chosen = chosen.reshape(len(idx), *(pixel_shape if channel_dim is None else (1, *pixel_shape)))
        batch = torch.where(chosen, fill[ex], start[ex])
        scores[i:i + per_pass] = _score(model, batch, target[ex], output).float()
    return scores.reshape(b, steps + 1)


def deletion_curve(model, images: torch.Tensor, maps: torch.Tensor, target, *, steps: int = 32,
                   baseline="zeros", output: str = "softmax", batch_size: int = 256,
                   channel_dim: Optional[int] = 1, abs: bool = True) -> torch.Tensor:
    """``[B, steps+1]``: the target score as the top ``t/steps`` share of pixels is set to ``baseline``.

    Pixels are ranked by ``|map summed over channels|`` (``abs=False``: the signed sum),
    largest first; a pixel's channels go together. ``baseline``: 'zeros', 'black' (each image's
    minimum), 'mean', 'blur', a number or a tensor. ``batch_size`` perturbed images per forward.
    """
    return _curve(model, images, maps, target, steps, images, _baseline(images, baseline), output, batch_size,
                  channel_dim, abs)


def insertion_curve(model, images: torch.Tensor, maps: torch.Tensor, target, *, steps: int = 32,
                    baseline="zeros", output: str = "softmax", batch_size: int = 256,
                    channel_dim: Optional[int] = 1, abs: bool = True) -> torch.Tensor:
    """``[B, steps+1]``: the target score as the top ``t/steps`` share of pixels is copied from the image into
    ``baseline`` (default: a blank, all-zero image, as methods.md says; RISE used 'blur')."""
    return _curve(model, images, maps, target, steps, _baseline(images, baseline), images, output, batch_size,
                  channel_dim, abs)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid-rule area under ``[B, T+1]`` curves sampled evenly on [0, 1]."""
    c = curve.double()
    t = c.shape[1] - 1
    if t < 1:
        raise ValueError("a curve needs at least two points")
    return ((c[:, 1:] + c[:, :-1]).sum(1) / (2 * t)).float()


def insertion_deletion(model, images: torch.Tensor, maps: torch.Tensor, target, *, steps: int = 32,
                       insertion_baseline="zeros", deletion_baseline="zeros", output: str = "softmax",
                       batch_size: int = 256, channel_dim: Optional[int] = 1, abs: bool = True) -> dict:
    """``{"insertion": AUC [B] (higher: better), "deletion": AUC [B] (lower: better)}``."""
    common = dict(steps=steps, output=output, batch_size=batch_size, channel_dim=channel_dim, abs=abs)
    return {"insertion": auc(insertion_curve(model, images, maps, target, baseline=insertion_baseline, **common)),
            "deletion": auc(deletion_curve(model, images, maps, target, baseline=deletion_baseline, **common))}


# --- Performance Information Curves (SIC / AIC) ---------------------------------------------------------

PIC_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)  # the AdaptGrad authors' get_if.py


def _webp_size(image) -> int:
    """Bytes of a lossless WebP of a ``[H, W, C]`` uint8 image: the PIC's information estimate."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    array = image[:, :, 0] if image.shape[2] == 1 else image
    Image.fromarray(array).save(buffer, format="webp", lossless=True, quality=100)
    return buffer.tell()


def _interpolated(image, known, sigma: float = 4.0):
    """The image with its unknown pixels filled from the ``known`` ones (corners always known): a normalised
    Gaussian convolution, ``G * (image known) / G * known`` (sigma in pixels, cut at 4 sigma; beyond any
    known pixel: their mean colour). The PIC's reference code
    interpolates linearly over a Delaunay triangulation (scipy griddata), about 2 s per image here; this
    gives the same kind of information-free blur at a thousandth of the cost."""
    import numpy as np

    known = known.copy()
    h, w = known.shape
    known[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]] = True
    if known.all():
        return image

    radius = int(4 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-t**2 / (2 * sigma**2))
    stack = np.concatenate([known[None].astype(float), image.transpose(2, 0, 1) * known[None]])
    x = torch.from_numpy(stack)[:, None]  # [1 + C, 1, H, W]: the weights and each channel, one pass
    x = torch.nn.functional.conv2d(x, k.reshape(1, 1, 1, -1), padding=(0, radius))
    x = torch.nn.functional.conv2d(x, k.reshape(1, 1, -1, 1), padding=(radius, 0))[:, 0].numpy()
    weight, sums = x[0], x[1:]
    mean = image[known].mean(0)  # far from every known pixel: the known pixels' mean colour
    filled = np.where(weight[None] > 1e-12, sums / np.maximum(weight[None], 1e-12), mean[:, None, None])
    out = np.where(known[None], image.transpose(2, 0, 1), filled).transpose(1, 2, 0)
    return np.round(out).clip(0, 255).astype(np.uint8)


def pic_auc(entropies, predictions, points: int = 1000) -> float:
    """Area under one PIC: ``(entropy, prediction)`` pairs in [0, 1] plus (0, 0) and (1, 1), linearly
    interpolated on ``points`` even steps of [0, 1) and the point 1, trapezoid rule."""
    import numpy as np

    xs = np.concatenate([np.asarray(entropies, float), [0.0, 1.0]])
    ys = np.concatenate([np.asarray(predictions, float), [0.0, 1.0]])
    order = np.argsort(xs, kind="stable")
    grid = np.append(np.linspace(0.0, 1.0, points, endpoint=False), 1.0)
    curve = np.interp(grid, xs[order], ys[order])
    curve[-1] = 1.0
    return float(((curve[1:] + curve[:-1]) * np.diff(grid)).sum() / 2)


@torch.no_grad()
def pic(model, images: torch.Tensor, maps: torch.Tensor, target, *, bounds=(0.0, 1.0),
        thresholds=PIC_THRESHOLDS, random_fraction: float = 0.01, min_prediction: float = 0.8, seed: int = 0,
        channel_dim: Optional[int] = 1, abs: bool = True) -> dict:
    """SIC and AIC areas per example: ``{"sic": [B], "aic": [B]}`` (NaN where the PIC skips the image).

    Each image (``[C, H, W]`` in ``bounds``, quantised to 8 bits as the PIC does) starts fully
    blurred: interpolated from a seeded random ``random_fraction`` of its pixels. For each
    threshold t the top-t share of pixels by ``|map summed over channels|`` (``abs=False``: the
    signed sum) is revealed too. x: the image's lossless-WebP size, normalised between the
    blurred and the original image; y: the target's softmax (SIC) or whether the arg-max is the
    target (AIC), normalised the same way and kept monotone. An image is skipped (NaN) when
    its original softmax is below ``min_prediction``, or when blurring does not lower its
    information or its score (Kapishnikov et al.'s rules; the authors used 10 random masks per
    image and the median curve, here one mask per image and the mean over images).
    """
    import numpy as np

    if images.dim() != 4:
        raise ValueError(f"pic needs images [B, C, H, W], got shape {tuple(images.shape)}")
    lo, hi = (float(v) for v in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds!r}")
    a = _flat(maps, channel_dim).to(images.device)
    b, c, h, w = images.shape
    if a.shape[1] != h * w:
        raise ValueError(f"maps {tuple(maps.shape)} do not give one value per pixel of images {tuple(images.shape)}")
    a = (a.abs() if abs else a).cpu().double().numpy().reshape(b, h, w)
    target = torch.as_tensor(target).reshape(-1).expand(b).long().cpu()
    pixels = ((images.detach().float().cpu() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(seed)
    out = {"sic": np.full(b, np.nan), "aic": np.full(b, np.nan)}

    def scores(batch, k):
        x = torch.as_tensor(np.stack(batch)).permute(0, 3, 1, 2).to(images.device, images.dtype) / 255 * (hi - lo) + lo
        logits = model(x)
        return (torch.softmax(logits.float(), 1)[:, k].cpu().numpy(),
                (logits.argmax(1).cpu() == k).double().numpy())

    for i in range(b):
        random_mask = np.zeros(h * w, bool)
        random_mask[rng.choice(h * w, size=int(h * w * random_fraction), replace=False)] = True
        random_mask = random_mask.reshape(h, w)
        img = pixels[i]
        blurred = _interpolated(img, random_mask)
        revealed = []
        for t in thresholds:
            keep = (a[i] >= np.quantile(a[i], 1 - t)) | random_mask
            revealed.append(_interpolated(img, keep))
        soft, correct = scores([img, blurred] + revealed, int(target[i]))
        e0, e1 = _webp_size(blurred), _webp_size(img)
        if soft[0] < min_prediction or e0 >= e1:
            continue
        entropy = np.clip((np.array([_webp_size(r) for r in revealed]) - e0) / (e1 - e0), 0, 1)
        for name, y in (("sic", soft), ("aic", correct)):
            if y[1] >= y[0]:
                continue
            norm = np.maximum.accumulate(np.clip((y[2:] - y[1]) / (y[0] - y[1]), 0, 1))
            out[name][i] = pic_auc(entropy, norm)
    return {k: torch.from_numpy(v).float() for k, v in out.items()}
