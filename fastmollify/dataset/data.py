"""The examples of a data-set run: an ImageFolder, a ``module:callable`` or a Dataset, checked item by item.

``source(spec)`` turns what the user gave into a ``Source`` (the dataset, its spec and a
fingerprint for the store's configuration). ``Items`` wraps it for the DataLoader: each item
becomes ``(index, image or None, label, skip reason, fatal message)``, so an unreadable image is
skipped with its reason and a malformed item stops the run with one clean message, even from a
DataLoader worker (an exception raised there would come back wrapped in a traceback).
``collate`` stacks the readable images of a batch.
"""
from __future__ import annotations

import hashlib
import importlib
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .errors import DatasetRunError


@dataclass
class Source:
    """A data set and how the store's configuration describes it."""

    dataset: object
    kind: str  # 'folder', 'callable' or 'object'
    spec: str
    fingerprint: str


def _rgb_loader(channels: int):
    def load(path):
        from PIL import Image

        with Image.open(path) as img:
            return img.convert("L" if channels == 1 else "RGB")

    return load


def image_folder(path, channels: int = 3) -> Source:
    """torchvision's ImageFolder over ``path`` (labels as torchvision assigns them), images read lazily."""
    from torchvision.datasets import ImageFolder

    root = Path(path).resolve()
    try:
        folder = ImageFolder(str(root), loader=_rgb_loader(channels))
    except (FileNotFoundError, OSError) as error:
        raise DatasetRunError(f"--data {path}: {error} (expected torchvision's ImageFolder layout: one sub-folder "
                              f"of images per class)") from None
    listing = "\n".join(f"{Path(p).relative_to(root).as_posix()}\t{label}" for p, label in folder.samples)
    return Source(folder, "folder", str(root), hashlib.sha256(listing.encode()).hexdigest())


def _from_callable(spec: str) -> Source:
    module_name, _, attr = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        obj = importlib.import_module(module_name)
    except Exception as error:  # any failure importing the user's module is a user error
        raise DatasetRunError(f"--data {spec}: cannot import module {module_name!r}: "
                              f"{type(error).__name__}: {error}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DatasetRunError(f"--data {spec}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and (isinstance(obj, type) or not hasattr(obj, "__getitem__")):
        try:
            obj = obj()
        except Exception as error:  # the user's factory failed
            raise DatasetRunError(f"--data {spec}: calling it raised {type(error).__name__}: {error}") from None
    source = of_dataset(obj, spec)
    source.kind = "callable"
    return source


def of_dataset(dataset, spec: Optional[str] = None) -> Source:
    """A Dataset object (indexable, with a length)."""
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise DatasetRunError(f"the data set must be a torch Dataset with __getitem__ and __len__, got "
                              f"{type(dataset).__name__}")
    name = spec or f"{type(dataset).__module__}.{type(dataset).__qualname__}"
    return Source(dataset, "object", name, f"{name}:{len(dataset)}")


def source(data, channels: int = 3) -> Source:
    """What ``--data`` / ``attribute_dataset(dataset=...)`` names: a folder, ``module:callable`` or a Dataset."""
    if isinstance(data, (str, Path)):
        if Path(data).is_dir():
            return image_folder(data, channels)
        if isinstance(data, str) and ":" in data and not Path(data).exists():
            return _from_callable(data)
        raise DatasetRunError(f"--data {data}: not a folder (ImageFolder layout) nor 'module:callable' returning "
                              f"a Dataset")
    return of_dataset(data)


def _label(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


class Items(torch.utils.data.Dataset):
    """Item ``i`` as ``(i, image float32 [C, H, W] or None, label, skip reason, fatal message)``.

    Images: tensors (uint8 scaled to [0, 1]) or PIL images; resized to ``size`` when given
    (antialiased bilinear), then ``(x - mean) / std`` per channel when given. ``shape`` (set by
    ``probe``) is the shape every example must have.
    """

    def __init__(self, dataset, size=None, mean=None, std=None):
        self.dataset, self.size, self.shape = dataset, tuple(size) if size else None, None
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    def __len__(self):
        return len(self.dataset)

    def image(self, index: int):
        """``(image, label)`` of example ``index`` before normalisation; raises what reading raised."""
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetRunError(f"data set item {index} is {_describe(item)}; items must be (image tensor [C, H, W], "
                            f"integer label) pairs, e.g. a torchvision dataset with transform=ToTensor()")
        image, label = item
        if not isinstance(image, torch.Tensor):
            from PIL import Image

            if not isinstance(image, Image.Image):
                raise DatasetRunError(f"data set item {index}: the image is {_describe(image)}, not a tensor [C, H, W] "
                                f"or a PIL image")
            from torchvision.transforms.v2.functional import pil_to_tensor

            image = pil_to_tensor(image)
        if _label(label) is None:
            raise DatasetRunError(f"data set item {index}: the label is {_describe(label)}, not an integer")
        if image.dim() != 3 or not (image.dtype == torch.uint8 or image.is_floating_point()):
            raise DatasetRunError(f"data set item {index}: the image has shape {list(image.shape)} and dtype "
                                  f"{image.dtype}; expected [C, H, W] uint8 or floating")
        image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        if self.size and tuple(image.shape[1:]) != self.size:
            from torchvision.transforms.v2.functional import resize

            image = resize(image, list(self.size), antialias=True)
        return image, _label(label)

    def __getitem__(self, index: int):
        try:
            image, label = self.image(index)
        except DatasetRunError as error:  # a malformed item: the data set itself is wrong
            return index, None, -1, None, str(error)
        except Exception as error:  # an unreadable example: skipped, its reason recorded
            return index, None, -1, f"{type(error).__name__}: {' '.join(str(error).split())}", None
        if self.shape is not None and tuple(image.shape) != self.shape:
            return index, None, -1, None, (
                f"example {index} has shape {list(image.shape)} but the first readable one has {list(self.shape)}: "
                f"images of different sizes need --size H,W (attribute_dataset(size=(H, W)))")
        if self.mean is not None:
            image = image - self.mean
        if self.std is not None:
            image = image / self.std
        return index, image, label, None, None

    def probe(self, count: int):
        """``(index, shape)`` of the first readable example among the first ``count``; sets ``shape``."""
        for index in range(count):
            _, image, _, _, fatal = self[index]
            if fatal:
                raise DatasetRunError(fatal)
            if image is not None:
                self.shape = tuple(image.shape)
                return index, self.shape
        raise DatasetRunError(f"none of the {count} examples could be read (the first: {self[0][3]})")


def _describe(value) -> str:
    shape = getattr(value, "shape", None)
    return f"a {type(value).__name__}" + (f" of shape {list(shape)}" if shape is not None else "")


@dataclass
class Batch:
    """The readable images of a batch (stacked), their global indices and labels, and what was skipped."""

    indices: list  # global indices of the readable examples, ascending
    images: Optional[torch.Tensor]
    labels: torch.Tensor
    skipped: dict  # index -> reason
    fatal: Optional[str]


def collate(items) -> Batch:
    """Stack a batch of ``Items`` entries (run in the DataLoader's workers)."""
    fatal = next((f for *_, f in items if f), None)
    ok = [(i, x, y) for i, x, y, _, f in items if x is not None]
    skipped = {i: reason for i, _, _, reason, _ in items if reason}
    images = torch.stack([x for _, x, _ in ok]) if ok and not fatal else None
    return Batch([i for i, _, _ in ok], images, torch.tensor([y for *_, y in ok], dtype=torch.int64), skipped, fatal)
