"""The built-in text task (planted tokens, tiny transformer), token localisation, the tabular task, and
the layer evaluation at --quick size."""
import json
import math
import shutil
import socket

import pytest
import torch

import fastmollify as fm
from fastmollify import metrics, tabular, text, viz
from fastmollify.evaluation import inside


# --- the data ---------------------------------------------------------------------------------------

def test_planted_tokens_alone_decide_the_label():
    ids, mask, labels, planted = text.planted(300, seed=3)
    assert ids.shape == mask.shape == planted.shape == (300, text.LENGTH) and labels.shape == (300,)
    assert ids.dtype == mask.dtype == labels.dtype == torch.int64 and planted.dtype == torch.bool
    lengths = mask.sum(1)
    assert (lengths >= text.MIN_LENGTH).all() and (lengths <= text.LENGTH).all()
    # right padding: mask is 1 then 0, and padding positions hold PAD and nothing else does
    assert (mask == (torch.arange(text.LENGTH)[None] < lengths[:, None]).long()).all()
    assert ((ids == text.PAD) == (mask == 0)).all()
    assert not (planted & (mask == 0)).any()
    counts = planted.sum(1)
    assert counts.min() == 1 and counts.max() == text.MAX_PLANTED
    for i in range(len(ids)):
        real = ids[i, mask[i] == 1].tolist()
        signal = [t for t in real if t > text.FILLER]
        # every class token is planted, every planted token is the label's, the rest is filler
        assert sorted(signal) == sorted(ids[i, planted[i]].tolist())
        assert set(signal) <= set(text.class_tokens(int(labels[i])))
        assert all(1 <= t <= text.FILLER for t in ids[i, (mask[i] == 1) & ~planted[i]].tolist())
    # a rule that reads only the planted tokens recovers every label
    rule = torch.tensor([(int(ids[i, planted[i]][0]) - text.FILLER - 1) // text.PER_CLASS for i in range(len(ids))])
    assert (rule == labels).all()
    assert set(labels.tolist()) == set(range(text.CLASSES))


def test_planted_is_a_pure_function_of_seed_and_index():
    small, large = text.planted(5, seed=11), text.planted(40, seed=11)
    for a, b in zip(small, large):
        assert torch.equal(a, b[:5])
    assert not torch.equal(text.planted(5, seed=12)[0], small[0])
    with pytest.raises(ValueError, match="n must be"):
        text.planted(-1)
    with pytest.raises(ValueError, match="label must be"):
        text.class_tokens(text.CLASSES)


# --- the model ----------------------------------------------------------------------------------------

def test_tiny_transformer_trains_above_95_percent_in_seconds():
    recipe = dict(text.TEXT_TRAIN, n=800, epochs=6, lr=1e-2)
    model = text._train(recipe, cache=False)  # from scratch: the training code itself is under test
    assert text.text_accuracy(model, 500) >= 0.95
    assert sum(p.numel() for p in model.parameters()) * 4 < 300_000  # a few hundred KB at most


def test_shipped_text_model_is_small_accurate_and_reads_the_planted_tokens():
    model = text.text_model()
    assert (text.WEIGHTS_DIR / text.SHIPPED["file"]).stat().st_size < 300_000
    assert text.text_accuracy(model) >= 0.99
    ids, mask, labels, planted = text.planted(200, seed=text.TEXT_TEST_SEED)
    # swap the planted tokens for the next class's: the prediction follows them
    moved = (labels + 1) % text.CLASSES
    swapped = ids.clone()
    swapped[planted] = (ids[planted] + text.PER_CLASS - text.FILLER - 1) % (text.CLASSES * text.PER_CLASS) \
        + text.FILLER + 1
    with torch.no_grad():
        assert (model(swapped, mask).argmax(1) == moved).double().mean() >= 0.95
        # padding is masked out: other ids at padded positions change nothing
        junk = ids.masked_fill(mask == 0, 5)
        torch.testing.assert_close(model(junk, mask), model(ids, mask), rtol=1e-5, atol=1e-5)


def test_gradient_at_the_embedding_is_the_hand_computed_one():
    model = text.text_model()
    ids, mask, labels, _ = text.planted(6, seed=2)
    got = fm.gradient(model, ids, labels, layer="embed", additional_forward_args=(mask,))
    e = model.embed(ids).detach().requires_grad_(True)
    x = e + model.position(torch.arange(ids.shape[1]))
    for layer in model.encoder:
        x = layer(x, src_key_padding_mask=mask == 0)
    w = mask.float().unsqueeze(-1)
    model.head((x * w).sum(1) / w.sum(1))[torch.arange(6), labels].sum().backward()
    torch.testing.assert_close(got, e.grad, rtol=1e-4, atol=1e-6)


def test_shipped_weights_are_checked(tmp_path, monkeypatch):
    shutil.copy(text.WEIGHTS_DIR / "text_transformer.pt", tmp_path / "text_transformer.pt")
    monkeypatch.setattr(text, "WEIGHTS_DIR", tmp_path)
    text.text_model()
    with open(tmp_path / "text_transformer.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="SHA-256"):
        text.text_model()
    (tmp_path / "text_transformer.pt").unlink()
    with pytest.raises(FileNotFoundError, match="retrain=True"):
        text.text_model()
    with pytest.raises(ValueError, match="unknown recipe keys"):
        text.text_model(epoch=3)
    with pytest.raises(ValueError, match="unknown recipe keys"):
        tabular.tabular_model(layers=3)


# --- token localisation ------------------------------------------------------------------------------

def test_token_metrics_on_a_hand_computed_case():
    scores = torch.tensor([[1.0, -2.0, 3.0, 0.5, 9.0], [2.0, 1.0, 0.0, -1.0, 0.0]])
    planted = torch.tensor([[0, 0, 1, 0, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    # positive mass 1 + 3 + 0.5 (the padded 9 ignored), 3 planted; 2 + 1, 1 planted
    torch.testing.assert_close(text.token_localisation(scores, planted, mask), torch.tensor([3 / 4.5, 1 / 3]))
    torch.testing.assert_close(text.token_pointing(scores, planted, mask), torch.tensor([1.0, 0.0]))
    # k = 1: the top token (3.0) is planted; k = 2: top two are positions 0, 1, one planted
    torch.testing.assert_close(text.token_precision_at_k(scores, planted, mask), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(text.chance_share(planted, mask), torch.tensor([1 / 4, 2 / 5]))
    # without the mask the padded 9 is the top token and counts in the mass
    torch.testing.assert_close(text.token_localisation(scores, planted)[0], torch.tensor(3 / 13.5))
    assert text.token_pointing(scores, planted)[0] == 0.0
    # no positive mass, or nothing planted: undefined
    assert math.isnan(float(text.token_localisation(-scores.abs(), planted, mask)[0]))
    nothing = torch.zeros_like(planted)
    assert torch.isnan(text.token_localisation(scores, nothing, mask)).all()
    assert torch.isnan(text.token_pointing(scores, nothing, mask)).all()
    assert torch.isnan(text.token_precision_at_k(scores, nothing, mask)).all()


def test_token_localisation_agrees_with_attribution_localisation():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 12, generator=g)
    planted = torch.rand(16, 12, generator=g) < 0.3
    planted[:, 0] = True
    mask = (torch.arange(12)[None] < torch.randint(4, 13, (16, 1), generator=g)).long()
    masked = scores * mask  # padding at 0 adds no positive mass
    expected = metrics.attribution_localisation(masked, planted, channel_dim=None, abs=False)
    got = text.token_localisation(scores, planted, mask)
    none = masked.clamp_min(0).sum(1) == 0  # no positive mass: undefined here, 0 there
    assert none.any() and not none.all()
    assert torch.isnan(got[none]).all() and (expected[none] == 0).all()
    torch.testing.assert_close(got[~none], expected[~none])


@pytest.mark.parametrize("call,message", [
    (lambda: text.token_localisation(torch.rand(2, 3, 4), torch.ones(2, 3)), r"scores must be token scores \[B, T\]"),
    (lambda: text.token_pointing(torch.rand(2, 3), torch.ones(2, 4)), "planted has shape"),
    (lambda: text.token_precision_at_k(torch.rand(2, 3), torch.ones(2, 3), torch.ones(3)), "mask has shape"),
])
def test_token_metrics_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the tabular task ------------------------------------------------------------------------------

def test_tabular_task_loads_offline_with_decoys_independent_of_the_label(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access in a test that must run offline")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    task = tabular.breast_cancer(seed=0)
    x, y, relevant = task["x"], task["y"], task["relevant"]
    assert x.shape == (569, 60) and y.shape == (569,) and relevant.sum() == 30 and relevant[:30].all()
    assert len(task["train_idx"]) + len(task["test_idx"]) == 569 and len(task["names"]) == 60
    torch.testing.assert_close(x[task["train_idx"], :30].mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    # each decoy is its real feature with the rows permuted: same values, no relation to the label
    torch.testing.assert_close(x[:, 30:].sort(0).values, x[:, :30].sort(0).values)
    yc = (y.double() - y.double().mean())

    def corr(col):
        col = col.double() - col.double().mean()
        return float((col * yc).sum() / (col.norm() * yc.norm()))

    assert max(abs(corr(x[:, j])) for j in range(30)) > 0.7
    assert max(abs(corr(x[:, j])) for j in range(30, 60)) < 0.2  # |r| < 0.2 at n = 569 under independence
    model = tabular.tabular_model()
    assert tabular.test_accuracy(model) >= 0.95


def test_relevant_share_hand_computed():
    maps = torch.tensor([[1.0, -3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    share = tabular.relevant_share(maps, torch.tensor([True, True, False, False]))
    torch.testing.assert_close(share, torch.tensor([4 / 6, 0.0]))
    with pytest.raises(ValueError, match="relevant has shape"):
        tabular.relevant_share(maps, torch.ones(3, dtype=torch.bool))


# --- the evaluation and the figures ---------------------------------------------------------------------

def test_layer_evaluation_runs_at_quick_size(tmp_path):
    results = inside.run(tmp_path, quick=True, log=lambda *a: None)
    for name in ("layers.md", "layers.json", "layers_text.png", "layers_gradcam.png"):
        assert (tmp_path / name).stat().st_size > 0
    written = json.loads((tmp_path / "layers.json").read_text())
    expected = {"Grad", "SmoothGrad", "ClipGrad", "AdaptGrad (c=0.95)"} | {
        f"{k} (r=0.4)" for k in inside.KERNELS}
    for task in ("text", "tabular", "gradcam"):
        assert expected <= set(written[task]["rows"])
        for row in written[task]["rows"].values():
            main = row[written[task]["main"]]["mean"]
            assert 0.0 <= main <= 1.0 or math.isnan(main)
    assert written["gradcam"]["linear_layer"]["max_relative_difference"] < 1e-5
    assert results["text"]["rows"].keys() == written["text"]["rows"].keys()
    markdown = (tmp_path / "layers.md").read_text()
    assert "Paper 1's kernel question" in markdown and "| poisson (r=0.4) |" in markdown


def test_viz_grid_takes_two_dimensional_maps(tmp_path):
    images = torch.rand(2, 3, 8, 8)
    path = viz.grid(images, {"cam": torch.rand(2, 8, 8), "map": torch.randn(2, 3, 8, 8)}, tmp_path / "g.png")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="maps"):
        viz.grid(images, {"cam": torch.rand(2, 4, 4)}, tmp_path / "bad.png")
