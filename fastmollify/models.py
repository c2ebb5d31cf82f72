"""Built-in models, their shipped weights, seeded training, and torchvision models with user weights.

* Architectures: ``demo_cnn`` (shapes, 3 convs), ``shapes_resnet`` (shapes, a small ResNet: 7
  convs in 3 residual blocks, batch norm), ``digits_cnn`` and ``digits_mlp`` (the AdaptGrad
  authors' MNIST MLP 784-200-10 at 8x8: 64-200-10) for scikit-learn's 8x8 digits.
* Shipped weights: every built-in model in ``BUILTIN`` has its trained weights in
  ``fastmollify/weights/<name>.pt``, listed with their SHA-256, recipe and test accuracy in
  ``fastmollify/weights/manifest.json``. ``builtin(name)`` loads them (checking the SHA-256),
  so every machine evaluates the same models; ``retrain=True`` trains them instead (seeded;
  bit-identical only on the same CPU, torch build and thread count: float reductions differ
  elsewhere, and 12 epochs amplify a last-bit difference into other weights).
* ``train(...)``: the seeded training loop (Adam, one-cycle schedule, seeded batch order, one CPU
  thread, deterministic algorithms); weights cached under ``$FASTMOLLIFY_CACHE`` (default
  ``~/.cache/fastmollify``), keyed by architecture, data, seed and settings.
* ``shapes_model()``, ``digits_models()``: the models the demo and the evaluation use.
* ``torchvision_model(arch, weights=PATH)``: a torchvision architecture with a user's weights.
* ``export_weights()`` (``python -m fastmollify.models export``): retrain every built-in model
  from scratch and write the weights and the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from . import data

__all__ = ["demo_cnn", "shapes_resnet", "digits_cnn", "digits_mlp", "train", "accuracy", "cache_dir",
           "shapes_model", "digits_models", "builtin", "BUILTIN", "WEIGHTS_DIR", "manifest", "sha256",
           "export_weights", "torchvision_model", "classifier_params"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


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


class _Block(nn.Module):
    """A ResNet basic block: two 3x3 convs with batch norm, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def shapes_resnet(in_channels: int = 3, num_classes: int = 4) -> nn.Module:
    """A small ResNet for 64x64 inputs: stem (5x5 stride 2, max-pool), blocks of 16, 32, 64 channels, linear.

    Deeper than ``demo_cnn`` (9 conv layers with the projections, batch norm, skip connections)
    at about 3x its cost per image.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),  # 16x16
        _Block(16, 16, 1), _Block(16, 32, 2), _Block(32, 64, 2),  # 4x4
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


def digits_cnn(num_classes: int = 10) -> nn.Module:
    """Two conv layers and two linear layers, for 8x8 single-channel digits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def digits_mlp(num_classes: int = 10) -> nn.Module:
    """The AdaptGrad authors' MNIST MLP (784-200-10, ReLU) at the digits' 8x8: 64-200-10."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, num_classes))


ARCHITECTURES = {"demo_cnn": demo_cnn, "shapes_resnet": shapes_resnet, "digits_cnn": digits_cnn,
                 "digits_mlp": digits_mlp}


def classifier_params(model: nn.Module) -> list[str]:
    """Names of the parameters of the model's last ``nn.Linear`` (the classifier the AdaptGrad authors'
    NoiseGrad leaves unperturbed); empty when there is none."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return []
    prefix = f"{last}." if last else ""
    return [prefix + n for n, _ in model.get_submodule(last).named_parameters()]


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


# --- the built-in models: recipes, shipped weights ------------------------------------------------------

SHAPES_TRAIN = dict(n=3000, seed=0, epochs=12, lr=4e-3, batch_size=64)
DIGITS_TRAIN = dict(epochs=30, lr=3e-3, batch_size=64)
SHAPES_TEST_SEED = 7  # data.shapes(k, seed=7): the test images of every shapes table

# name -> recipe. Shapes: data.shapes(n, seed=1000 + seed); digits: data.split(1797, seed=split_seed)'s
# training part, labels as given ('random': permuted with torch.Generator().manual_seed(10000 + split_seed)),
# inputs + shift.
BUILTIN = {
    "shapes_cnn": dict(arch="demo_cnn", data="shapes", **SHAPES_TRAIN),
    "shapes_resnet": dict(arch="shapes_resnet", data="shapes", **SHAPES_TRAIN),
    **{f"digits_{arch}_{kind}": dict(arch=f"digits_{arch}", data="digits", labels="random" if kind == "random"
                                     else "true", shift=1.0 if kind == "shifted" else 0.0, split_seed=0, seed=0,
                                     **DIGITS_TRAIN)
       for arch in ("cnn", "mlp") for kind in ("normal", "random", "shifted")},
}


def sha256(path) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest() -> dict:
    """``fastmollify/weights/manifest.json``: per built-in model its file, SHA-256, recipe and accuracy."""
    path = WEIGHTS_DIR / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this copy of fastmollify ships no weights; pass retrain=True "
                                f"(or --retrain) to train the built-in models")
    return json.loads(path.read_text())


def _training_data(recipe: dict):
    """(images, labels, data_key) of a recipe; data_key names the data for the training cache."""
    if recipe["data"] == "shapes":
        images, labels, _ = data.shapes(recipe["n"], seed=1000 + recipe["seed"])
        return images, labels, f"shapes(n={recipe['n']},seed={1000 + recipe['seed']})"
    images, labels = data.digits()
    train_idx, _ = data.split(len(images), seed=recipe["split_seed"])
    x, y = images[train_idx] + recipe["shift"], labels[train_idx]
    if recipe["labels"] == "random":
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(10_000 + recipe["split_seed"]))]
    kind = "random" if recipe["labels"] == "random" else "shifted+1" if recipe["shift"] == 1.0 else "normal"
    return x, y, f"digits(split_seed={recipe['split_seed']}):{kind}"


def _train_recipe(recipe: dict, *, cache: bool = True, verbose: bool = False) -> nn.Module:
    x, y, key = _training_data(recipe)
    return train(ARCHITECTURES[recipe["arch"]](), x, y, epochs=recipe["epochs"], seed=recipe["seed"],
                 lr=recipe["lr"], batch_size=recipe["batch_size"], data_key=key, cache=cache, verbose=verbose)


def builtin(name: str, *, retrain: bool = False, verbose: bool = False) -> nn.Module:
    """A built-in model in eval mode: the shipped weights (SHA-256 checked), or with ``retrain`` trained
    from its recipe (seeded, cached; see the module docstring for what may differ)."""
    if name not in BUILTIN:
        raise ValueError(f"name must be one of {', '.join(BUILTIN)}, got {name!r}")
    if retrain:
        return _train_recipe(BUILTIN[name], verbose=verbose)
    entry = manifest().get(name)
    if entry is None:
        raise FileNotFoundError(f"no shipped weights for {name!r} in {WEIGHTS_DIR / 'manifest.json'}; "
                                f"pass retrain=True to train it")
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"shipped weights {path} are missing; pass retrain=True to train {name!r}")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"shipped weights {path} have SHA-256 {digest}, the manifest says {entry['sha256']}: "
                         f"the file is damaged or was replaced; reinstall fastmollify or pass retrain=True")
    model = ARCHITECTURES[entry["recipe"]["arch"]]()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def shapes_model(*, n: int = SHAPES_TRAIN["n"], epochs: int = SHAPES_TRAIN["epochs"], seed: int = 0,
                 arch: str = "cnn", retrain: bool = False, verbose: bool = False) -> nn.Module:
    """The shapes classifier (``arch``: 'cnn' = ``demo_cnn``, 'resnet' = ``shapes_resnet``).

    The shipped weights for the default recipe (trained on ``shapes(3000, seed=1000)``; tests use
    other seeds); other ``n``/``epochs``/``seed``, or ``retrain=True``, train (cached).
    """
    if arch not in ("cnn", "resnet"):
        raise ValueError(f"arch must be 'cnn' or 'resnet', got {arch!r}")
    name = f"shapes_{arch}"
    recipe = dict(BUILTIN[name], n=int(n), epochs=int(epochs), seed=int(seed))
    if recipe == BUILTIN[name] and not retrain:
        return builtin(name, verbose=verbose)
    return _train_recipe(recipe, verbose=verbose)


def digits_models(*, seed: int = 0, epochs: int = DIGITS_TRAIN["epochs"], arch: str = "cnn", retrain: bool = False,
                  verbose: bool = False) -> dict:
    """The consistency/invariance protocol's three digits models (``arch``: 'cnn' or 'mlp'), one training split.

    ``{"normal": ..., "random": ..., "shifted": ...}``: trained on the true labels, on labels
    permuted at random (seeded), and on the inputs shifted by +1 (explain it on ``x + 1``).
    Also ``"test_idx"``, the held-out indices of ``data.digits()``. Shipped weights for the
    default recipe (``seed=0``, 30 epochs); otherwise, or with ``retrain=True``, trained (cached).
    """
    if arch not in ("cnn", "mlp"):
        raise ValueError(f"arch must be 'cnn' or 'mlp', got {arch!r}")
    out = {}
    for kind in ("normal", "random", "shifted"):
        name = f"digits_{arch}_{kind}"
        recipe = dict(BUILTIN[name], epochs=int(epochs), split_seed=int(seed), seed=int(seed))
        out[kind] = (builtin(name, verbose=verbose) if recipe == BUILTIN[name] and not retrain
                     else _train_recipe(recipe, verbose=verbose))
    out["test_idx"] = data.split(len(data.digits()[1]), seed=seed)[1]
    return out


def _test_accuracy(name: str, model: nn.Module) -> float:
    recipe = BUILTIN[name]
    if recipe["data"] == "shapes":
        x, y, _ = data.shapes(1000, seed=SHAPES_TEST_SEED)
        return accuracy(model, x, y)
    x, y = data.digits()
    test_idx = data.split(len(x), seed=recipe["split_seed"])[1]
    return accuracy(model, x[test_idx] + recipe["shift"], y[test_idx])


def export_weights(out=WEIGHTS_DIR, names=None, log=print) -> dict:
    """Train each built-in model from scratch (no cache) and write ``<name>.pt`` and ``manifest.json`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    for name in names or list(BUILTIN):
        start = time.perf_counter()
        model = _train_recipe(BUILTIN[name], cache=False)
        file = out / f"{name}.pt"
        torch.save(model.state_dict(), file)
        entries[name] = dict(
            file=file.name, sha256=sha256(file), recipe=BUILTIN[name],
            parameters=sum(p.numel() for p in model.parameters()),
            test_accuracy=round(_test_accuracy(name, model), 4),
            trained_with=dict(torch=torch.__version__, machine=platform.machine(), threads=1,
                              deterministic_algorithms=True, seconds=round(time.perf_counter() - start, 1)))
        log(f"{name}: test accuracy {entries[name]['test_accuracy']}, sha256 {entries[name]['sha256'][:16]}..., "
            f"{entries[name]['trained_with']['seconds']} s")
    entries["_recipe"] = ("fastmollify.models.train: parameters re-initialised after torch.manual_seed(seed); Adam "
                          "(betas 0.9, 0.999, no weight decay), one-cycle learning-rate schedule peaking at lr over "
                          "epochs * ceil(n / batch_size) steps; batch order torch.randperm per epoch; cross-entropy "
                          "loss; one CPU thread; torch.use_deterministic_algorithms(True). Data: see BUILTIN in "
                          "fastmollify/models.py.")
    path.write_text(json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
    return entries


def torchvision_model(arch: str, weights=None, num_classes: int | None = None) -> nn.Module:
    """A torchvision architecture (e.g. 'resnet50') in eval mode, with the user's weights file.

    ``weights``: a ``state_dict`` saved with ``torch.save`` (also accepted: a dict holding it under
    'state_dict' or 'model'; a 'module.' prefix from DataParallel is dropped). ``num_classes``:
    default from the weights' last layer, else 1000. No weights are downloaded.
    """
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise ValueError(f"arch {arch!r} is not a torchvision classification model; e.g. resnet50, vgg16, "
                         f"inception_v3 ({len(names)} in all: torchvision.models.list_models())")
    state = None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise ValueError(f"weights {path} hold a {type(state).__name__}, not a state_dict")
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        if num_classes is None:
            last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
            num_classes = int(last[-1].shape[0]) if last else None
    extra = dict(aux_logits=False, init_weights=False) if arch in ("inception_v3", "googlenet") else {}
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes or 1000, **extra)
    if state is not None:
        if extra:
            state = {k: v for k, v in state.items() if not k.startswith("AuxLogits") and not k.startswith("aux")}
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"weights {weights} do not fit torchvision's {arch}: {str(error)[:400]}") from None
    return model.eval()


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["export"]:
        sys.exit("usage: python -m fastmollify.models export [NAME ...]  (retrain and write fastmollify/weights/)")
    export_weights(names=sys.argv[2:] or None)
