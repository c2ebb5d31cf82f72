"""A built-in tabular task with ground truth: scikit-learn's bundled breast-cancer data plus decoys.

``breast_cancer(seed)``: the 30 real features of ``sklearn.datasets.load_breast_cancer`` (569
tumours, label 1 = benign), standardised with the training split's mean and standard deviation,
followed by 30 **decoy** features: each a copy of a real feature with its rows permuted (seeded),
so it keeps the feature's distribution but is independent of the label and of the other
features. ``relevant`` marks the real features: whatever a model learns from the decoys is
noise, so an explanation's share of mass on the real features measures (with the model) how
well it ignores them; a uniform map scores 0.5. Nothing is downloaded.

``mlp()``: 60-64-64-2 with ReLU; ``tabular_model()``: its shipped weights (SHA-256 checked, like
``text.text_model``), or with ``retrain=True`` trained (seeded, cached like ``models.train``; a
few seconds on one CPU thread).
"""
from __future__ import annotations

import torch
from torch import nn

from . import data, models, text

__all__ = ["breast_cancer", "mlp", "tabular_model", "relevant_share", "test_accuracy", "export_weights", "TABULAR_TRAIN",
           "FEATURES"]

FEATURES = 30
TABULAR_TRAIN = dict(seed=0, epochs=40, lr=3e-3, batch_size=64, weight_decay=1e-4, hidden=64)
# the shipped weights (export_weights(), one CPU thread, deterministic algorithms, torch 2.14.1, x86_64)
SHIPPED = dict(file="tabular_mlp.pt", sha256="be38172e9931e4bf52e945472032d8a8500a2849ddc198bc836739219dccff01",
               recipe=dict(TABULAR_TRAIN), parameters=8194, test_accuracy=0.9789)


def breast_cancer(seed: int = 0, decoys: bool = True):
    """``dict(x [569, 60] float32, y [569] int64, relevant [60] bool, names, train_idx, test_idx)``.

    ``seed`` picks the train/test split (``data.split``, a quarter held out) and the decoys'
    permutations. ``decoys=False``: the 30 real features only.
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = torch.tensor(bunch.data, dtype=torch.float64)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    names = [str(n) for n in bunch.feature_names]
    train_idx, test_idx = data.split(len(x), seed=seed)
    mean, std = x[train_idx].mean(0), x[train_idx].std(0)
    x = (x - mean) / std
    if decoys:
        g = torch.Generator().manual_seed(20_000 + int(seed))
        copies = torch.stack([x[torch.randperm(len(x), generator=g), j] for j in range(x.shape[1])], 1)
        x = torch.cat([x, copies], 1)
        names = names + [f"decoy: {n}" for n in names]
    relevant = torch.arange(x.shape[1]) < FEATURES
    return dict(x=x.float(), y=y, relevant=relevant, names=names, train_idx=train_idx, test_idx=test_idx)


def mlp(features: int = 2 * FEATURES, hidden: int = 64, classes: int = 2) -> nn.Module:
    """A two-hidden-layer ReLU MLP ``features-hidden-hidden-classes``."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def _train(recipe: dict, cache: bool = True, verbose: bool = False) -> nn.Module:
    task = breast_cancer(recipe["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        model = mlp(task["x"].shape[1], recipe["hidden"])
    x, y = task["x"][task["train_idx"]], task["y"][task["train_idx"]]
    return models.train(model, x, y, epochs=recipe["epochs"], seed=recipe["seed"], lr=recipe["lr"],
                        batch_size=recipe["batch_size"], weight_decay=recipe["weight_decay"],
                        data_key=f"breast_cancer+decoys(seed={recipe['seed']})", cache=cache, verbose=verbose)


def tabular_model(*, retrain: bool = False, verbose: bool = False, **recipe) -> nn.Module:
    """The MLP for ``breast_cancer(seed)`` in eval mode: the shipped weights (SHA-256 checked) for the
    default ``TABULAR_TRAIN``; other recipe keys or ``retrain=True``: trained (seeded, cached)."""
    unknown = set(recipe) - set(TABULAR_TRAIN)
    if unknown:
        raise ValueError(f"unknown recipe keys {sorted(unknown)}; valid: {', '.join(TABULAR_TRAIN)}")
    recipe = {**TABULAR_TRAIN, **recipe}
    if retrain or recipe != TABULAR_TRAIN:
        return _train(recipe, verbose=verbose)
    if SHIPPED["recipe"] != TABULAR_TRAIN:
        raise ValueError("tabular.SHIPPED was exported from another recipe than TABULAR_TRAIN: re-export the weights")
    return text.shipped(SHIPPED, lambda r: mlp(2 * FEATURES, r["hidden"]))


def test_accuracy(model: nn.Module, seed: int = TABULAR_TRAIN["seed"]) -> float:
    """Accuracy on ``breast_cancer(seed)``'s held-out quarter."""
    task = breast_cancer(seed)
    return models.accuracy(model, task["x"][task["test_idx"]], task["y"][task["test_idx"]])


def export_weights(out=None) -> dict:
    """Train the default recipe from scratch (no cache), write ``tabular_mlp.pt``; returns ``SHIPPED``'s new value."""
    model = _train(TABULAR_TRAIN, cache=False)
    return text.write_shipped("tabular_mlp.pt", model, TABULAR_TRAIN, test_accuracy(model), out)


def relevant_share(maps: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per example, the share of absolute attribution mass on the relevant features ``[B]`` (maps ``[B, F]``)."""
    if not torch.is_tensor(maps) or maps.dim() != 2:
        shape = tuple(maps.shape) if torch.is_tensor(maps) else type(maps).__name__
        raise ValueError(f"maps must be [B, F] (one attribution per feature), got {shape}")
    relevant = torch.as_tensor(relevant, device=maps.device).bool()
    if relevant.shape != maps.shape[1:]:
        raise ValueError(f"relevant has shape {tuple(relevant.shape)}; it must be [F] = [{maps.shape[1]}]")
    a = maps.detach().double().abs()
    total = a.sum(1)
    return ((a * relevant).sum(1) / total.where(total > 0, torch.ones_like(total))).float()


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["export"]:
        sys.exit("usage: python -m fastmollify.tabular export  (retrain and write fastmollify/weights/tabular_mlp.*)")
    print(f"wrote the weights; set fastmollify/tabular.py's SHIPPED to:\n{export_weights()}")
