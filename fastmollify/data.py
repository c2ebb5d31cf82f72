"""Built-in data, nothing downloaded: synthetic shapes with ground-truth masks, and sklearn's digits.

``shapes(n, seed)``: 64x64 RGB images of one shape (class 0 circle, 1 square, 2 triangle,
3 cross) of random size, position and colour on a random textured background (stripes,
checks or blotches); the mask marks the shape's pixels, so localisation is measurable.
The data are a pure function of ``(n, seed)``: example ``i`` depends on ``seed`` and ``i``
only, so ``shapes(10)`` is the first 10 examples of ``shapes(100)``.

``digits(shift=0.0)``: scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1],
as ``[N, 1, 8, 8]`` float32 with their labels; ``shift`` adds a constant (the invariance
protocol's +1 shift).

``imagefolder(path, size, limit)``: images of a torchvision ImageFolder (one sub-folder per
class), resized and centre-cropped, optionally normalised, for a user's model.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["shapes", "digits", "SHAPE_CLASSES", "split", "imagefolder"]

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
SIZE = 64


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A [3, H, W] texture in [0, 1]: stripes, checks or smoothed blotches, two random colours."""
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle and frequency
        angle, freq = rng.uniform(0, math.pi), rng.uniform(0.15, 0.5)
        t = 0.5 + 0.5 * np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)) + rng.uniform(0, 6.3))
    elif kind == 1:  # checks
        cell = rng.integers(4, 10)
        t = (((xx // cell) + (yy // cell)) % 2).astype(np.float64)
    else:  # blotches: low-frequency noise, upsampled
        coarse = rng.uniform(0, 1, (9, 9))
        idx = np.linspace(0, 8, SIZE)
        i0 = np.floor(idx).astype(int).clip(0, 7)
        f = idx - i0
        rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
        t = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    c1, c2 = rng.uniform(0.0, 0.6, 3), rng.uniform(0.0, 0.6, 3)
    img = c1[:, None, None] * (1 - t)[None] + c2[:, None, None] * t[None]
    img += rng.normal(0, 0.03, img.shape)
    return img


def _shape_mask(cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    r = rng.uniform(9, 16)  # half-size in pixels
    cy, cx = rng.uniform(r + 2, SIZE - r - 2, 2)
    dy, dx = yy - cy, xx - cx
    if cls == 0:
        return dy**2 + dx**2 <= r**2
    if cls == 1:
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if cls == 2:  # upward triangle
        top, bottom = -r, r * 0.8
        half_width = (dy - top) / (bottom - top) * r
        return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= half_width)
    arm = r * 0.33  # cross
    return ((np.abs(dy) <= r) & (np.abs(dx) <= arm)) | ((np.abs(dx) <= r) & (np.abs(dy) <= arm))


def shapes(n: int, seed: int = 0):
    """``(images [n,3,64,64] float32 in [0,1], labels [n] int64, masks [n,64,64] bool)``."""
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    images = np.empty((n, 3, SIZE, SIZE), np.float32)
    labels = np.empty(n, np.int64)
    masks = np.empty((n, SIZE, SIZE), bool)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        img = _background(rng, yy, xx)
        mask = _shape_mask(cls, rng, yy, xx)
        colour = rng.uniform(0.55, 1.0, 3)
        img = np.where(mask[None], colour[:, None, None] + rng.normal(0, 0.03, img.shape), img)
        images[i] = np.clip(img, 0.0, 1.0)
        labels[i] = cls
        masks[i] = mask
    return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(masks)


def digits(shift: float = 0.0):
    """scikit-learn's bundled digits: ``(images [1797,1,8,8] float32 in [shift, 1+shift], labels)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1) + float(shift)
    return images, torch.tensor(bunch.target, dtype=torch.int64)


def split(n: int, test_fraction: float = 0.25, seed: int = 0):
    """A seeded ``(train_idx, test_idx)`` split of ``range(n)``."""
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


def imagefolder(path, size: int = 224, limit: int | None = None, mean=None, std=None, seed: int = 0):
    """``(images [K, 3, size, size] float32, labels [K])`` from an ImageFolder at ``path``.

    Resize to ``round(size * 256 / 224)`` (shorter side), centre-crop ``size``, scale to [0, 1],
    then ``(x - mean) / std`` per channel when given. ``limit``: K images drawn by a seeded
    permutation (the folder is sorted by class).
    """
    from pathlib import Path

    import torchvision
    from torchvision import transforms

    if not Path(path).is_dir():
        raise FileNotFoundError(f"image folder {path} does not exist")
    steps = [transforms.Resize(round(size * 256 / 224), antialias=True), transforms.CenterCrop(size),
             transforms.ToTensor()]
    if (mean is None) != (std is None):
        raise ValueError("pass mean and std together (or neither)")
    if mean is not None:
        steps.append(transforms.Normalize(mean, std))
    folder = torchvision.datasets.ImageFolder(str(path), transform=transforms.Compose(steps))
    if len(folder) == 0:
        raise ValueError(f"image folder {path} holds no images")
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(int(seed))).tolist()
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        order = order[:int(limit)]
    items = [folder[i] for i in order]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)
