"""A built-in text task with ground truth, a tiny transformer for it, and token localisation.

``planted(n, seed)``: sequences of token ids (``LENGTH`` positions, right-padded with ``PAD``)
of random length, filled with uniform filler tokens, into which 1-3 tokens of the label's
class set are planted at random positions. Only the planted tokens depend on the label (the
filler, the lengths and the positions do not), so they alone decide the class, and a map's
token scores can be checked against them. Example ``i`` is a pure function of ``(seed, i)``,
like ``data.shapes``.

``tiny_transformer()``: token + position embeddings, ``TransformerEncoderLayer`` blocks, a mean
over the unpadded positions and a linear head; ``forward(ids, attention_mask=None)`` (the mask
defaults to ``ids != PAD``). Attribute with ``layer="embed"`` (the token embeddings).

``text_model()``: the trained classifier: shipped weights (``fastmollify/weights/text_transformer.pt``,
SHA-256 checked against ``SHIPPED``), or with ``retrain=True`` trained from ``TEXT_TRAIN`` on one CPU thread in
seconds (cached like ``models.train``).

``token_localisation`` / ``token_pointing`` / ``token_precision_at_k``: how well token scores
``[B, T]`` find the planted tokens.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import models

__all__ = ["planted", "tiny_transformer", "TinyTransformer", "text_model", "text_accuracy", "token_localisation",
           "token_pointing", "token_precision_at_k", "chance_share", "PAD", "FILLER", "CLASSES", "PER_CLASS",
           "VOCAB", "LENGTH", "TEXT_TRAIN", "TEXT_TEST_SEED", "class_tokens", "export_weights", "shipped",
           "write_shipped"]

PAD = 0
FILLER = 40  # filler tokens 1..FILLER
CLASSES = 4
PER_CLASS = 3  # class k owns tokens FILLER + 1 + k * PER_CLASS ... + PER_CLASS - 1
VOCAB = 1 + FILLER + CLASSES * PER_CLASS
LENGTH = 24  # padded length; the real length is uniform in [MIN_LENGTH, LENGTH]
MIN_LENGTH = 10
MAX_PLANTED = 3

TEXT_TRAIN = dict(n=3000, seed=0, epochs=4, lr=3e-3, batch_size=64, d=32, heads=4, layers=2, ff=64)
TEXT_TEST_SEED = 7  # planted(k, seed=7): the test sequences; training uses seed 1000 + seed
WEIGHTS_DIR = models.WEIGHTS_DIR
# the shipped weights: trained by export_weights() on one CPU thread with deterministic algorithms (torch 2.14.1,
# x86_64); test accuracy on planted(1000, seed=TEXT_TEST_SEED)
SHIPPED = dict(file="text_transformer.pt", sha256="b59bd73a3bb6c7a164fc1a9609706f4ae8260ff5f58dd4445e326b90aafb08a9",
               recipe=dict(TEXT_TRAIN), parameters=19684, test_accuracy=0.999)


def class_tokens(label: int) -> list[int]:
    """The token ids that signal class ``label``."""
    if not 0 <= int(label) < CLASSES:
        raise ValueError(f"label must be in [0, {CLASSES}), got {label}")
    start = 1 + FILLER + int(label) * PER_CLASS
    return list(range(start, start + PER_CLASS))


def planted(n: int, seed: int = 0):
    """``(ids [n, LENGTH] int64, attention_mask [n, LENGTH] int64, labels [n] int64, planted [n, LENGTH] bool)``.

    ``planted`` marks the positions holding the label's class tokens (the ground truth); padding
    positions have id ``PAD`` and mask 0.
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    n = int(n)
    ids = np.zeros((n, LENGTH), np.int64)
    mask = np.zeros((n, LENGTH), np.int64)
    labels = np.empty(n, np.int64)
    where = np.zeros((n, LENGTH), bool)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        label = int(rng.integers(CLASSES))
        length = int(rng.integers(MIN_LENGTH, LENGTH + 1))
        ids[i, :length] = rng.integers(1, FILLER + 1, length)
        count = int(rng.integers(1, MAX_PLANTED + 1))
        positions = rng.choice(length, size=count, replace=False)
        ids[i, positions] = 1 + FILLER + label * PER_CLASS + rng.integers(0, PER_CLASS, count)
        mask[i, :length] = 1
        labels[i] = label
        where[i, positions] = True
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels), torch.from_numpy(where)


class TinyTransformer(nn.Module):
    """Token + position embeddings, encoder layers (post-norm, no dropout), masked mean pool, linear head."""

    def __init__(self, vocab: int = VOCAB, num_classes: int = CLASSES, d: int = 32, heads: int = 4, layers: int = 2,
                 ff: int = 64, length: int = LENGTH):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.position = nn.Embedding(length, d)
        self.encoder = nn.ModuleList(nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
                                     for _ in range(layers))
        self.head = nn.Linear(d, num_classes)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = ids != PAD
        keep = attention_mask != 0
        x = self.embed(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))
        for layer in self.encoder:
            x = layer(x, src_key_padding_mask=~keep)
        w = keep.to(x.dtype).unsqueeze(-1)
        return self.head((x * w).sum(1) / w.sum(1).clamp_min(1))


def tiny_transformer(seed: int = 0, **sizes) -> TinyTransformer:
    """A ``TinyTransformer`` initialised from ``seed`` (the global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyTransformer(**sizes)


def _recipe_parts(recipe: dict):
    sizes = {k: recipe[k] for k in ("d", "heads", "layers", "ff")}
    return sizes, dict(epochs=recipe["epochs"], seed=recipe["seed"], lr=recipe["lr"], batch_size=recipe["batch_size"])


def _train(recipe: dict, cache: bool = True, verbose: bool = False) -> TinyTransformer:
    ids, _, labels, _ = planted(recipe["n"], seed=1000 + recipe["seed"])
    sizes, settings = _recipe_parts(recipe)
    model = tiny_transformer(recipe["seed"], **sizes)
    # models.train calls model(ids): the mask comes from ids != PAD; MultiheadAttention keeps the seeded init
    return models.train(model, ids, labels, data_key=f"planted(n={recipe['n']},seed={1000 + recipe['seed']})",
                        cache=cache, verbose=verbose, **settings)


def shipped(entry: dict, build):
    """A shipped model in eval mode: ``build(entry["recipe"])`` loaded with ``weights/<entry["file"]>``,
    whose SHA-256 must be ``entry["sha256"]`` (entries live in code: the package ships ``weights/*.pt``)."""
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"shipped weights {path} are missing; pass retrain=True to train them")
    digest = models.sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"shipped weights {path} have SHA-256 {digest}, the code expects {entry['sha256']}: "
                         f"the file is damaged or was replaced; reinstall fastmollify or pass retrain=True")
    model = build(entry["recipe"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def write_shipped(file: str, model: nn.Module, recipe: dict, test_accuracy: float, out=None) -> dict:
    """Save ``model``'s weights as ``out/file`` (default the package's weights folder); returns the entry
    (file, SHA-256, recipe, parameters, test accuracy) to paste into the module's ``SHIPPED``."""
    out = Path(out) if out is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / file)
    return dict(file=file, sha256=models.sha256(out / file), recipe=dict(recipe),
                parameters=sum(p.numel() for p in model.parameters()), test_accuracy=round(test_accuracy, 4))


def _build(recipe: dict) -> TinyTransformer:
    return tiny_transformer(recipe["seed"], **_recipe_parts(recipe)[0])


def text_model(*, retrain: bool = False, verbose: bool = False, **recipe) -> TinyTransformer:
    """The trained ``TinyTransformer`` in eval mode.

    Default recipe: the shipped weights (SHA-256 checked). Other ``TEXT_TRAIN`` keys (``n``,
    ``epochs``, ``seed``, sizes...) or ``retrain=True``: trained on one CPU thread, cached.
    """
    unknown = set(recipe) - set(TEXT_TRAIN)
    if unknown:
        raise ValueError(f"unknown recipe keys {sorted(unknown)}; valid: {', '.join(TEXT_TRAIN)}")
    recipe = {**TEXT_TRAIN, **recipe}
    if retrain or recipe != TEXT_TRAIN:
        return _train(recipe, verbose=verbose)
    if SHIPPED["recipe"] != TEXT_TRAIN:
        raise ValueError("text.SHIPPED was exported from another recipe than TEXT_TRAIN: re-export the weights")
    return shipped(SHIPPED, _build)


def text_accuracy(model: nn.Module, n: int = 1000, seed: int = TEXT_TEST_SEED) -> float:
    """Test accuracy on ``planted(n, seed)`` (the attention mask passed explicitly)."""
    ids, mask, labels, _ = planted(n, seed)
    with torch.no_grad():
        return float((model(ids, mask).argmax(1) == labels).double().mean())


def export_weights(out=None) -> dict:
    """Train the default recipe from scratch (no cache), write ``text_transformer.pt``; returns ``SHIPPED``'s
    new value (``python -m fastmollify.text export`` prints it)."""
    model = _train(TEXT_TRAIN, cache=False)
    return write_shipped("text_transformer.pt", model, TEXT_TRAIN, text_accuracy(model), out)


# --- token localisation ------------------------------------------------------------------------------

def _check(scores, truth, mask, name="planted"):
    if not torch.is_tensor(scores) or scores.dim() != 2:
        shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
        raise ValueError(f"scores must be token scores [B, T] (fm.token_scores of a [B, T, H] map), got {shape}")
    truth = torch.as_tensor(truth, device=scores.device)
    if truth.shape != scores.shape:
        raise ValueError(f"{name} has shape {tuple(truth.shape)}; it must be [B, T] = {tuple(scores.shape)}")
    keep = torch.ones_like(truth, dtype=torch.bool) if mask is None else torch.as_tensor(mask, device=scores.device)
    if keep.shape != scores.shape:
        raise ValueError(f"mask has shape {tuple(keep.shape)}; it must be [B, T] = {tuple(scores.shape)}")
    keep = keep != 0
    return scores.detach().double(), truth.bool() & keep, keep


def token_localisation(scores: torch.Tensor, planted: torch.Tensor, mask=None) -> torch.Tensor:
    """Per example, the share of the positive token-score mass on the planted tokens ``[B]``.

    ``sum(max(s, 0) over planted) / sum(max(s, 0) over unpadded tokens)``; padding (``mask`` 0)
    is ignored. NaN where there is no positive mass or no planted token.
    """
    s, truth, keep = _check(scores, planted, mask)
    positive = s.clamp_min(0) * keep
    total = positive.sum(1)
    share = (positive * truth).sum(1) / total.where(total > 0, torch.ones_like(total))
    return torch.where((total > 0) & truth.any(1), share, torch.full_like(share, math.nan)).float()


def token_pointing(scores: torch.Tensor, planted: torch.Tensor, mask=None) -> torch.Tensor:
    """1.0 where the highest-scoring unpadded token is planted (a tie: any top token planted), else 0.0."""
    s, truth, keep = _check(scores, planted, mask)
    s = s.masked_fill(~keep, -math.inf)
    top = (s == s.max(1, keepdim=True).values) & keep
    hit = (top & truth).any(1).float()
    return torch.where(truth.any(1), hit, torch.full_like(hit, math.nan))


def token_precision_at_k(scores: torch.Tensor, planted: torch.Tensor, mask=None) -> torch.Tensor:
    """The share of planted tokens among the k highest-scoring unpadded tokens, k = the number planted.

    Ties are broken by position (first wins), so a constant map scores the planted share of the
    first k tokens.
    """
    s, truth, keep = _check(scores, planted, mask)
    s = s.masked_fill(~keep, -math.inf)
    k = truth.sum(1)
    order = torch.argsort(s, dim=1, descending=True, stable=True)
    ranked = torch.gather(truth, 1, order)
    within = torch.arange(s.shape[1], device=s.device)[None, :] < k[:, None]
    precision = (ranked & within).sum(1).double() / k.clamp_min(1)
    return torch.where(k > 0, precision, torch.full_like(precision, math.nan)).float()


def chance_share(planted: torch.Tensor, mask) -> torch.Tensor:
    """Per example, the planted share of the unpadded tokens: what a uniform map scores in localisation."""
    planted, mask = torch.as_tensor(planted).bool(), torch.as_tensor(mask) != 0
    return ((planted & mask).sum(1).double() / mask.sum(1).clamp_min(1)).float()


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["export"]:
        sys.exit("usage: python -m fastmollify.text export  (retrain and write fastmollify/weights/text_transformer.*)")
    print(f"wrote the weights; set fastmollify/text.py's SHIPPED to:\n{export_weights()}")
