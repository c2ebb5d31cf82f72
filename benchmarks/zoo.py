"""The model zoo and the set-up every benchmark runs on: one model with its input batches.

A ``Setup`` is one model (eval mode, parameters frozen, so no contender pays for weight
gradients) on one device at one batch, image size and precision, with ``ROTATE`` input batches
and targets; every contender sees the same model and the same absolute noise scale ``sigma``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

ROTATE = 3  # input batches cycled through the timed calls
NOISE_LEVEL = 0.15  # input noise sigma as a share of the input range (absolute sigma passed to all)


class MLP(torch.nn.Sequential):
    """The AdaptGrad paper's MNIST MLP: 784-200-10 with a ReLU, on [B, 1, 28, 28] images."""

    def __init__(self):
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10))


def resnet18_cifar(num_classes: int = 10) -> torch.nn.Module:
    """ResNet-18 for 32x32 images (3x3 stride-1 stem, no max-pool), from torchvision's blocks."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None)
    return build


def _demo_cnn() -> torch.nn.Module:
    from fastmollify import models  # imported lazily: written alongside the benchmarks

    return models.demo_cnn(in_channels=3, num_classes=4)


@dataclass(frozen=True)
class ModelInfo:
    build: Callable[[], torch.nn.Module]
    channels: int
    size: int  # default image side
    classes: int
    bounds: tuple[float, float]  # the inputs' value range (ImageNet-normalised or [0, 1])


IMAGENET_BOUNDS = (-2.117904, 2.64)  # the AdaptGrad paper's bounds for ImageNet-normalised inputs
MODELS = {
    "mlp": ModelInfo(MLP, 1, 28, 10, (0.0, 1.0)),
    "demo_cnn": ModelInfo(_demo_cnn, 3, 64, 4, (0.0, 1.0)),
    "resnet18_cifar": ModelInfo(resnet18_cifar, 3, 32, 10, IMAGENET_BOUNDS),
    "resnet18": ModelInfo(_torchvision("resnet18"), 3, 224, 1000, IMAGENET_BOUNDS),
    "resnet50": ModelInfo(_torchvision("resnet50"), 3, 224, 1000, IMAGENET_BOUNDS),
    "vgg16": ModelInfo(_torchvision("vgg16"), 3, 224, 1000, IMAGENET_BOUNDS),
}


@dataclass(frozen=True)
class SetupSpec:
    model: str
    batch: int
    device: str = "cpu"
    dtype: str = "fp32"  # or "bf16" (autocast)
    channels_last: bool = False
    image_size: Optional[int] = None  # None: the model's own
    seed: int = 0


class Setup:
    """One model (eval mode, parameters frozen) and ``ROTATE`` input batches with targets."""

    def __init__(self, spec: SetupSpec):
        if spec.model not in MODELS:
            raise ValueError(f"unknown model {spec.model!r}; choose from {', '.join(MODELS)}")
        if spec.dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be 'fp32' or 'bf16', got {spec.dtype!r}")
        self.spec = spec
        info = MODELS[spec.model]
        self.device = torch.device(spec.device)
        size = spec.image_size or info.size
        self.shape = (spec.batch, info.channels, size, size)
        self.image = f"{info.channels}x{size}x{size}"
        torch.manual_seed(spec.seed)
        model = info.build().to(self.device).eval()
        memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
        if spec.channels_last:
            model = model.to(memory_format=memory_format)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.lo, self.hi = info.bounds
        self.sigma = NOISE_LEVEL * (self.hi - self.lo)
        generator = torch.Generator().manual_seed(spec.seed + 1)
        self.inputs, self.targets = [], []
        for _ in range(ROTATE):
            x = self.lo + (self.hi - self.lo) * torch.rand(self.shape, generator=generator)
            x = x.to(self.device).contiguous(memory_format=memory_format)
            self.inputs.append(x)
            self.targets.append(torch.randint(0, info.classes, (spec.batch,), generator=generator).to(self.device))
        self.sync()

    def autocast(self):
        if self.spec.dtype == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def objective(self, k: int):
        from fastmollify import engine

        return engine.Objective(self.model, self.targets[k], "logit", (), self.spec.batch)
