"""Heatmaps that read at a glance: diverging colours for signed maps, sequential for absolute ones.

* ``to_2d(map)``: a ``[C, H, W]`` (or ``[H, W]``) map summed over channels, as NumPy.
* ``overlay(ax, image, map)``: the image in grey with the heatmap over it (red positive, blue
  negative, symmetric around 0, white at 0; or 'inferno' from 0 for absolute maps); the
  colour range is clipped at the 99th percentile of |map| so one hot pixel does not wash out
  the rest.
* ``grid(images, maps, path)``: rows = images, columns = the image and one overlay per method,
  method names on top; a map is ``[C, H, W]`` or ``[H, W]`` (Grad-CAM) per image.
  ``save_overlay``: one image. ``loglog(...)``: the N-sweep plot.

Matplotlib with the Agg backend (no display needed); it is imported on first use.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["to_2d", "is_signed", "overlay", "grid", "save_overlay", "loglog"]

SIGNED_CMAP, ABSOLUTE_CMAP = "RdBu_r", "inferno"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    """Lay out, write and close a figure; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def to_2d(attribution) -> np.ndarray:
    """``[H, W]``: the map summed over its channels (``[C, H, W]``), or as is (``[H, W]``)."""
    a = _np(attribution)
    if a.ndim == 3:
        return a.sum(0)
    if a.ndim != 2:
        raise ValueError(f"a map to draw must be [C, H, W] or [H, W], got shape {a.shape}")
    return a


def _image(image) -> np.ndarray:
    """``[H, W, 3]`` or ``[H, W]`` in [0, 1] for imshow."""
    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else img[..., :3].mean(-1)


def is_signed(attribution) -> bool:
    """Whether a map has both signs worth showing (then a diverging colour map is used)."""
    a = to_2d(attribution)
    scale = float(np.abs(a).max())
    return scale > 0 and float(a.min()) < -1e-3 * scale


def overlay(ax, image, attribution, signed=None, alpha: float = 0.85, title=None, colorbar: bool = False):
    """Draw ``image`` in grey and ``attribution`` over it on matplotlib axes ``ax``; returns a mappable.

    ``signed``: None decides from the map (both signs: diverging, else sequential of |map|).
    """
    a = to_2d(attribution)
    signed = is_signed(a) if signed is None else signed
    img = _image(image)
    ax.imshow(0.3 + 0.5 * _grey(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")  # dimmed: colours pop
    import matplotlib
    from matplotlib import cm, colors

    if not signed:
        a = np.abs(a)
    v = float(np.percentile(np.abs(a), 99)) or float(np.abs(a).max()) or 1.0
    norm = colors.Normalize(-v, v) if signed else colors.Normalize(0, v)
    cmap = matplotlib.colormaps[SIGNED_CMAP if signed else ABSOLUTE_CMAP]
    rgba = cmap(norm(a))
    # opacity grows with |attribution|: where the map is ~0 the image shows through
    rgba[..., 3] = alpha * np.clip(np.abs(a) / v, 0, 1) ** 0.5
    ax.imshow(rgba, interpolation="nearest")
    art = cm.ScalarMappable(norm=norm, cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(art, ax=ax, fraction=0.046, pad=0.04)
    return art


def grid(images, maps: dict, path, signed=None, row_labels=None, title=None, cell: float = 1.6):
    """A figure: one row per image, the image then one overlay per method.

    ``maps``: name -> ``[B, C, H, W]`` (summed over channels) or ``[B, H, W]`` (e.g. Grad-CAM), at the
    images' ``H, W``.
    """
    plt = _plt()
    images = _np(images)
    names = list(maps)
    maps = {name: _np(maps[name]) for name in names}
    size = _image(images[0]).shape[:2] if len(images) else None
    for name, m in maps.items():
        if m.ndim not in (3, 4) or m.shape[0] != images.shape[0] or tuple(m.shape[-2:]) != tuple(size or ()):
            raise ValueError(f"maps[{name!r}] has shape {m.shape}; it must be [B, C, H, W] or [B, H, W] with "
                             f"B = {images.shape[0]} and H, W = {size} as the images")
    rows, cols = images.shape[0], len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + (0.5 if title else 0.2)),
                             squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(_image(images[r]), cmap="gray" if _image(images[r]).ndim == 2 else None,
                          interpolation="nearest")
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        if row_labels is not None:
            axes[r, 0].set_ylabel(str(row_labels[r]), fontsize=9)
        for c, name in enumerate(names):
            overlay(axes[r, c + 1], images[r], maps[name][r], signed=signed, title=name if r == 0 else None)
    axes[0, 0].set_title("image", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def save_overlay(path, image, attribution, signed=None, title=None):
    """One image with its heatmap (and a colour bar) as a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    overlay(ax, image, attribution, signed=signed, title=title, colorbar=True)
    return _save(fig, path)


def loglog(series: dict, path, xlabel: str, ylabel: str, title=None, reference_slope: float | None = -0.5):
    """Log-log lines (``series``: name -> (xs, ys)), with a dashed ``y ~ x^slope`` guide."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    colours = plt.get_cmap("tab20").colors
    markers = "os^Dv<>px*h"
    for k, (name, (xs, ys)) in enumerate(series.items()):
        ax.loglog(xs, ys, marker=markers[k % len(markers)], markersize=3.5, color=colours[(2 * k) % 20 + (k >= 10)],
                  label=name)
    if reference_slope is not None and series:
        xs, ys = next(iter(series.values()))
        xs = np.asarray(xs, dtype=float)
        guide = float(ys[-1]) * (xs / xs[-1]) ** reference_slope  # anchored at the largest N
        ax.loglog(xs, guide, "k--", linewidth=1, label=f"slope {reference_slope:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)
