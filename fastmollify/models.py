"""Built-in models and seeded, cached training (no downloads).

* ``demo_cnn(in_channels=3, num_classes=4)``: a small CNN for ``[B, 3, 64, 64]`` images (the
  synthetic shapes of ``fastmollify.data.shapes``).
* ``digits_cnn(num_classes=10)``: a small CNN for scikit-learn's 8x8 digits ``[B, 1, 8, 8]``.
* ``train(...)``: seeded full training loop (Adam, one-cycle schedule, seeded batch order, one
  CPU thread, deterministic algorithms); the weights are cached
  under ``$FASTMOLLIFY_CACHE`` (default ``~/.cache/fastmollify``), keyed by a hash of the
  architecture, the data, the seed and the training settings, so a second call loads them.
* ``shapes_model()``, ``digits_models()``: the trained models the demo and the evaluation use
  (digits: a normal model, one trained on random labels, one trained on inputs shifted by +1).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch
from torch import nn

from . import data

__all__ = ["demo_cnn", "digits_cnn", "train", "accuracy", "cache_dir", "shapes_model", "digits_models"]


def demo_cnn(in_channels: int = 3, num_classes: int = 4) -> nn.Module:
    """A stride-2 5x5 conv, two 3x3 convs (ReLU, max-pool between) and a linear layer, for 64x64 inputs.

    Small on purpose: forward + backward of 1600 images takes about a second or two on 2 CPU cores.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),  # 2x2
        nn.Flatten(), nn.Linear(32 * 4, num_classes),
    )


def digits_cnn(num_classes: int = 10) -> nn.Module:
    """Two conv layers and two linear layers, for 8x8 single-channel digits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def cache_dir() -> Path:
    """``$FASTMOLLIFY_CACHE`` or ``~/.cache/fastmollify`` (created on demand)."""
    return Path(os.environ.get("FASTMOLLIFY_CACHE") or Path.home() / ".cache" / "fastmollify")


def _key(model: nn.Module, data_key: str, settings: dict) -> str:
    text = repr(model) + "|" + data_key + "|" + repr(sorted(settings.items())) + "|" + torch.__version__
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 10, seed: int = 0,
          lr: float = 3e-3, batch_size: int = 64, weight_decay: float = 0.0, data_key: str | None = None,
          cache: bool = True, verbose: bool = False) -> nn.Module:
    """Train ``model`` in place (seeded, deterministic ops) and return it in eval mode.

    With ``cache`` and a ``data_key`` (a string naming the data, e.g. ``"shapes(n=2000,seed=0)"``)
    the weights are loaded from / saved to the cache. The global RNG state is left untouched.
    """
    settings = dict(epochs=int(epochs), seed=int(seed), lr=float(lr), batch_size=int(batch_size),
                    weight_decay=float(weight_decay))
    path = None
    if cache and data_key is not None:
        path = cache_dir() / f"{type(model).__name__}-{_key(model, data_key, settings)}.pt"
        if path.exists():
            try:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                return model.eval()
            except (OSError, RuntimeError, EOFError):
                pass  # a broken cache file: train again and overwrite it
    start = time.perf_counter()
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    # one thread: these batches are too small to gain from more, and on shared cores extra threads
    # spin against other processes (measured: 20 steps 0.27 s on 1 thread, 8.7 s on 2, 2 busy cores)
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            for module in model.modules():  # re-initialise from the seed, whatever the model's state
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=max(1, epochs * ((len(images) + batch_size - 1) // batch_size)))
            loss_fn = nn.CrossEntropyLoss()
            for epoch in range(epochs):
                perm = torch.randperm(len(images))
                total = 0.0
                for i in range(0, len(images), batch_size):
                    idx = perm[i:i + batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(images[idx]), labels[idx])
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(idx)
                if verbose:
                    print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(images):.4f} "
                          f"({time.perf_counter() - start:.1f} s)", flush=True)
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)
    model.eval()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
        except OSError:
            pass  # an unwritable cache only costs a retrain next time
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Share of ``images`` whose arg-max class is the label."""
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / max(1, len(images))


SHAPES_TRAIN = dict(n=3000, seed=0, epochs=12, lr=4e-3, batch_size=64)


def shapes_model(*, n: int = SHAPES_TRAIN["n"], epochs: int = SHAPES_TRAIN["epochs"], seed: int = 0,
                 verbose: bool = False) -> nn.Module:
    """``demo_cnn`` trained on ``shapes(n, seed=1000 + seed)`` (cached). The test data use other seeds."""
    images, labels, _ = data.shapes(n, seed=1000 + seed)
    return train(demo_cnn(), images, labels, epochs=epochs, seed=seed, lr=SHAPES_TRAIN["lr"],
                 batch_size=SHAPES_TRAIN["batch_size"], data_key=f"shapes(n={n},seed={1000 + seed})",
                 verbose=verbose)


DIGITS_TRAIN = dict(epochs=30, lr=3e-3, batch_size=64)


def digits_models(*, seed: int = 0, epochs: int = DIGITS_TRAIN["epochs"], verbose: bool = False) -> dict:
    """The consistency/invariance protocol's three ``digits_cnn`` models, all on the same training split.

    ``{"normal": ..., "random": ..., "shifted": ...}``: trained on the true labels, on labels
    permuted at random (seeded), and on the inputs shifted by +1 (explain it on ``x + 1``).
    Also returns ``"test_idx"``, the held-out indices of ``data.digits()``.
    """
    images, labels = data.digits()
    train_idx, test_idx = data.split(len(images), seed=seed)
    x, y = images[train_idx], labels[train_idx]
    g = torch.Generator().manual_seed(10_000 + seed)
    y_random = y[torch.randperm(len(y), generator=g)]
    common = dict(epochs=epochs, seed=seed, lr=DIGITS_TRAIN["lr"], batch_size=DIGITS_TRAIN["batch_size"],
                  verbose=verbose)
    key = f"digits(split_seed={seed})"
    return {
        "normal": train(digits_cnn(), x, y, data_key=key + ":normal", **common),
        "random": train(digits_cnn(), x, y_random, data_key=key + ":random", **common),
        "shifted": train(digits_cnn(), x + 1.0, y, data_key=key + ":shifted+1", **common),
        "test_idx": test_idx,
    }
