"""Built-in data and models: shapes with masks, digits, seeded and cached training."""
import math

import numpy as np
import pytest
import torch

from fastmollify import data, models


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMOLLIFY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shapes_contract():
    x, y, m = data.shapes(12, seed=3)
    assert x.shape == (12, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (12,) and y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2, 3}
    assert m.shape == (12, 64, 64) and m.dtype == torch.bool
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert bool(m.flatten(1).any(1).all())  # every image has its object
    # a pure function of (seed, index): a prefix of a longer set, other seeds differ
    x5, y5, m5 = data.shapes(5, seed=3)
    assert torch.equal(x5, x[:5]) and torch.equal(y5, y[:5]) and torch.equal(m5, m[:5])
    assert not torch.equal(data.shapes(5, seed=4)[0], x5)


def test_shapes_masks_cover_the_shape():
    x, y, m = data.shapes(40, seed=11)
    # fill ratio of the mask in its bounding box: circle pi/4, square 1, triangle 1/2,
    # cross: two 2r x 0.66r arms minus their 0.66r x 0.66r overlap, over (2r)^2
    expected = {0: math.pi / 4, 1: 1.0, 2: 0.5, 3: (2 * (2 * 0.66) - 0.66**2) / 4}
    for i in range(len(y)):
        rows, cols = torch.nonzero(m[i], as_tuple=True)
        box = (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)
        cls = int(y[i])
        assert int(m[i].sum()) / box == pytest.approx(expected[cls], abs=0.08)  # pixel edges add up to ~0.07
        crop = m[i][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        corners = [crop[0, 0], crop[0, -1], crop[-1, 0], crop[-1, -1]]
        if cls == 1:
            assert bool(crop.all())
        elif cls == 2:  # apex on top, full-width base at the bottom
            assert int(crop[0].sum()) <= 3 and bool(crop[-1].all())
        else:  # circle and cross: centre in, corners out
            assert bool(crop[crop.shape[0] // 2, crop.shape[1] // 2]) and not any(bool(c) for c in corners)
        # the shape is drawn in a bright colour (each channel >= 0.55 before pixel noise of s.d. 0.03)
        assert float(x[i][:, m[i]].min(0).values.mean()) > 0.5
    with pytest.raises(ValueError):
        data.shapes(-1)


def test_digits():
    x, y = data.digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.shape == (1797,)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    xs, ys = data.digits(shift=1.0)
    assert torch.equal(xs, x + 1.0) and torch.equal(ys, y)
    train, test = data.split(100, seed=0)
    assert len(test) == 25 and sorted(torch.cat([train, test]).tolist()) == list(range(100))


def test_model_shapes_and_cost():
    net = models.demo_cnn()
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 4)
    assert models.demo_cnn(in_channels=1, num_classes=7)(torch.rand(2, 1, 64, 64)).shape == (2, 7)
    assert models.digits_cnn()(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert sum(p.numel() for p in net.parameters()) < 20_000  # small enough for CPU smoothing runs


def test_training_is_seeded_deterministic_and_leaves_the_global_rng(cache):
    x, y = data.digits()
    x, y = x[:256], y[:256]
    net = models.digits_cnn()
    state = torch.random.get_rng_state()
    a = models.train(net, x, y, epochs=1, seed=3, cache=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = models.train(models.digits_cnn(), x, y, epochs=1, seed=3, cache=False)
    c = models.train(models.digits_cnn(), x, y, epochs=1, seed=4, cache=False)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
    assert not a.training


def test_training_learns_digits_and_is_cached(cache, monkeypatch):
    x, y = data.digits()
    train, test = data.split(len(x), seed=0)
    net = models.train(models.digits_cnn(), x[train], y[train], epochs=3, seed=0, data_key="digits-test")
    assert models.accuracy(net, x[test], y[test]) > 0.8  # chance is 0.1
    files = list(cache.glob("*.pt"))
    assert len(files) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached weights should have been loaded")

    monkeypatch.setattr(torch.optim, "Adam", no_training)
    again = models.train(models.digits_cnn(), x[train], y[train], epochs=3, seed=0, data_key="digits-test")
    for pa, pb in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(pa, pb)
    with pytest.raises(AssertionError, match="cached"):  # another key (other epochs) trains again
        models.train(models.digits_cnn(), x[train], y[train], epochs=2, seed=0, data_key="digits-test")


def test_accuracy_hand_case():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)

    x = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])
    assert models.accuracy(Fixed(), x, torch.tensor([0, 1, 1]), batch_size=2) == pytest.approx(2 / 3)
    assert np.isclose(models.accuracy(Fixed(), x[:0], torch.tensor([], dtype=torch.int64)), 0.0)


# --- shipped weights, the new architectures, torchvision models ---------------------------------------

def test_shipped_weights_load_match_their_hash_and_accuracy():
    entries = models.manifest()
    assert set(models.BUILTIN) <= set(entries)
    for name in models.BUILTIN:
        entry = entries[name]
        path = models.WEIGHTS_DIR / entry["file"]
        assert path.stat().st_size < 1_000_000 and models.sha256(path) == entry["sha256"]
        assert entry["recipe"] == models.BUILTIN[name]
    x, y = data.digits()
    test = data.split(len(x), seed=0)[1]
    net = models.builtin("digits_mlp_normal")
    assert models.accuracy(net, x[test], y[test]) == pytest.approx(entries["digits_mlp_normal"]["test_accuracy"],
                                                                   abs=1e-4)
    assert models.shapes_model().state_dict().keys() == models.demo_cnn().state_dict().keys()


def test_damaged_weights_are_refused(tmp_path, monkeypatch):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(models.WEIGHTS_DIR, weights)
    monkeypatch.setattr(models, "WEIGHTS_DIR", weights)
    blob = bytearray((weights / "digits_mlp_normal.pt").read_bytes())
    blob[-100] ^= 1
    (weights / "digits_mlp_normal.pt").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256"):
        models.builtin("digits_mlp_normal")
    with pytest.raises(ValueError, match="name must be one of"):
        models.builtin("vgg16")
    (weights / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="retrain=True"):
        models.builtin("shapes_cnn")


def test_retrain_runs_the_recipe(cache, monkeypatch):
    calls = []
    real = models.train

    def spy(model, images, labels, **kwargs):
        calls.append((type(model).__name__, len(images), kwargs["epochs"]))
        return real(model, images[:64], labels[:64], **{**kwargs, "epochs": 1})

    monkeypatch.setattr(models, "train", spy)
    out = models.digits_models(arch="mlp", retrain=True)
    assert [c[1] for c in calls] == [1348] * 3 and all(c[2] == 30 for c in calls)
    assert set(out) == {"normal", "random", "shifted", "test_idx"} and not out["normal"].training


def test_new_architectures_and_classifier_params():
    net = models.shapes_resnet()
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 4)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 9
    assert models.digits_mlp()(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert models.classifier_params(models.digits_mlp()) == ["3.weight", "3.bias"]
    assert models.classifier_params(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))) == []
    with pytest.raises(ValueError, match="arch"):
        models.shapes_model(arch="vgg")


def test_torchvision_model_with_user_weights(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
    net = models.torchvision_model("resnet18", weights=path)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(net(x), ref(x))
    with pytest.raises(ValueError, match="not a torchvision"):
        models.torchvision_model("resnet19", weights=path)
    with pytest.raises(ValueError, match="do not fit"):
        models.torchvision_model("resnet34", weights=path)
    with pytest.raises(FileNotFoundError):
        models.torchvision_model("resnet18", weights=tmp_path / "missing.pt")


def test_imagefolder(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (255 * (cls == "b"), 10 * i, 0)).save(tmp_path / cls / f"{i}.png")
    x, y = data.imagefolder(tmp_path, size=16)
    assert x.shape == (4, 3, 16, 16) and sorted(y.tolist()) == [0, 0, 1, 1]
    red = x[y == 1][:, 0]
    assert torch.allclose(red, torch.ones_like(red))
    xn, _ = data.imagefolder(tmp_path, size=16, limit=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert xn.shape[0] == 2 and float(xn.min()) >= -1 and float(xn.max()) <= 1
    with pytest.raises(FileNotFoundError):
        data.imagefolder(tmp_path / "nope")
