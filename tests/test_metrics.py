"""fastmollify.metrics against hand-computed cases, closed forms, SciPy and Quantus."""
import math
import warnings

import numpy as np
import pytest
import torch

from fastmollify import metrics

quantus = pytest.importorskip("quantus")


def _quantus(metric_cls, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric_cls(disable_warnings=True, **kwargs)


def _random_case(seed=0, b=6, c=3, h=7, w=5):
    rng = np.random.default_rng(seed)
    x = rng.random((b, c, h, w)).astype(np.float32)
    maps = rng.normal(size=(b, c, h, w)).astype(np.float32)
    masks = rng.random((b, h, w)) > 0.6
    return x, maps, masks


# --- sparseness (Gini) -----------------------------------------------------------------------

def test_gini_hand_computed():
    # methods.md: a = sort(|s| + 1e-7), Gini = sum (2i - n - 1) a_i / (n sum a_i)
    uniform = torch.ones(1, 1, 2, 2)
    assert metrics.sparseness(uniform).item() == pytest.approx(0.0, abs=1e-12)
    one_hot = torch.tensor([[[[0.0, 0.0], [0.0, 5.0]]]])
    # numerator: -3e-7 - 1e-7 + 1e-7 + 3 (5 + 1e-7) = 15; denominator 4 (5 + 4e-7)
    assert metrics.sparseness(one_hot).item() == pytest.approx(15 / (4 * (5 + 4e-7)), rel=1e-6)
    # channels are summed (signed) before the absolute value: [1, 0, 0, -2] -> |.| sorted [0, 0, 1, 2]
    two_channels = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 1.0, 0.0, -2.0]]]).reshape(1, 2, 2, 2)
    expected = (-3e-7 - 1e-7 + (1 + 1e-7) + 3 * (2 + 1e-7)) / (4 * (3 + 4e-7))
    assert metrics.sparseness(two_channels).item() == pytest.approx(expected, rel=1e-6)


def test_sparseness_matches_quantus():
    x, maps, _ = _random_case()
    summed = maps.sum(1, keepdims=True)
    expected = _quantus(quantus.Sparseness, abs=True, normalise=False)(
        model=None, x_batch=x, y_batch=np.zeros(len(x), int), a_batch=summed.copy())
    np.testing.assert_allclose(metrics.sparseness(torch.tensor(maps)).numpy(), expected, rtol=1e-5)


# --- complexity ------------------------------------------------------------------------------

def test_complexity_closed_form_and_quantus():
    # uniform mass over n elements: entropy log n; all mass on one element: 0
    assert metrics.complexity(torch.ones(1, 1, 4, 8)).item() == pytest.approx(math.log(32), rel=1e-6)
    assert metrics.complexity(torch.tensor([[[[0.0, 0.0, 3.0]]]])).item() == pytest.approx(0.0, abs=1e-9)
    x, maps, _ = _random_case(1)
    expected = _quantus(quantus.Complexity, abs=True, normalise=False)(
        model=None, x_batch=x, y_batch=np.zeros(len(x), int), a_batch=maps.sum(1, keepdims=True))
    np.testing.assert_allclose(metrics.complexity(torch.tensor(maps)).numpy(), expected, rtol=1e-5)


# --- Spearman, consistency, invariance --------------------------------------------------------

def test_rank_ties_averaged():
    r = metrics.rank(torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 1.0]]))
    assert r.tolist() == [[4.0, 1.0, 4.0, 2.0, 4.0], [2.5, 2.5, 2.5, 2.5, 5.0]]


def test_spearman_closed_forms():
    a = torch.randn(3, 1, 5, 5)
    assert torch.allclose(metrics.spearman(a, a.exp()), torch.ones(3))  # any increasing transform: +1
    assert torch.allclose(metrics.spearman(a, -a ** 3), -torch.ones(3))  # decreasing: -1
    assert torch.allclose(metrics.consistency(a, -a), torch.ones(3))  # |rho|
    # hand case: ranks [1,2,3,4] vs [2,1,4,3]: d^2 = 4, rho = 1 - 6*4/(4*15) = 0.6
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    y = torch.tensor([[20.0, 10.0, 40.0, 30.0]])
    assert metrics.spearman(x, y, channel_dim=None).item() == pytest.approx(0.6)
    assert metrics.invariance(x, -y, channel_dim=None).item() == pytest.approx(0.6)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, size=(5, 2, 6, 6)).astype(np.float32)  # many ties
    b = rng.normal(size=(5, 2, 6, 6)).astype(np.float32)
    ours = metrics.spearman(torch.tensor(a), torch.tensor(b)).numpy()
    theirs = [stats.spearmanr(a[i].sum(0).ravel(), b[i].sum(0).ravel()).statistic for i in range(5)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    ours_abs = metrics.spearman(torch.tensor(a), torch.tensor(b), abs=True).numpy()
    theirs_abs = [stats.spearmanr(np.abs(a[i].sum(0)).ravel(), np.abs(b[i].sum(0)).ravel()).statistic
                  for i in range(5)]
    np.testing.assert_allclose(ours_abs, theirs_abs, rtol=1e-5, atol=1e-6)


# --- localisation ----------------------------------------------------------------------------

def test_localisation_hand_computed():
    maps = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[True, True], [False, False]]])
    assert metrics.attribution_localisation(maps, mask).item() == pytest.approx(3 / 10)
    assert metrics.attribution_localisation(maps, mask, abs=False).item() == pytest.approx(1 / 8)
    assert metrics.pointing_game(maps, mask).item() == 0.0  # |4| is outside
    assert metrics.pointing_game(maps, ~mask).item() == 1.0
    assert math.isnan(metrics.pointing_game(maps, torch.zeros_like(mask)).item())
    assert math.isnan(metrics.attribution_localisation(maps, torch.zeros_like(mask)).item())


def test_localisation_matches_quantus():
    x, maps, masks = _random_case(3)
    summed = maps.sum(1, keepdims=True)
    s = masks[:, None]
    kw = dict(model=None, x_batch=x, y_batch=np.zeros(len(x), int), s_batch=s)
    expected = _quantus(quantus.AttributionLocalisation, abs=True, normalise=False)(a_batch=summed.copy(), **kw)
    np.testing.assert_allclose(metrics.attribution_localisation(torch.tensor(maps), torch.tensor(masks)).numpy(),
                               expected, rtol=1e-5)
    expected = _quantus(quantus.PointingGame, abs=True, normalise=False)(a_batch=summed.copy(), **kw)
    np.testing.assert_array_equal(metrics.pointing_game(torch.tensor(maps), torch.tensor(masks)).numpy(),
                                  np.asarray(expected, dtype=np.float32))


# --- faithfulness ----------------------------------------------------------------------------

class Linear(torch.nn.Module):
    """f(x) = sum w * x: deleting pixel j removes w_j x_j from the score (closed form)."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1, keepdim=True)


def test_deletion_insertion_closed_form():
    w = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    model = Linear(w)
    x = torch.ones(1, 1, 2, 2)
    maps = torch.tensor([0.1, -0.4, 0.3, 0.2]).reshape(1, 1, 2, 2)  # |.| order: pixel 1, 2, 3, 0
    common = dict(steps=4, output="logit", baseline="zeros")
    deletion = metrics.deletion_curve(model, x, maps, 0, **common)
    assert deletion.tolist() == [[10.0, 8.0, 5.0, 1.0, 0.0]]
    insertion = metrics.insertion_curve(model, x, maps, 0, **common)
    assert insertion.tolist() == [[0.0, 2.0, 5.0, 9.0, 10.0]]
    # trapezoid on [0, 1] with 4 intervals
    assert metrics.auc(deletion).item() == pytest.approx((10 / 2 + 8 + 5 + 1 + 0 / 2) / 4)
    both = metrics.insertion_deletion(model, x, maps, 0, steps=4, output="logit", insertion_baseline="zeros",
                                      batch_size=3)  # 3 images per forward: chunking must not matter
    assert both["insertion"].item() == pytest.approx((0 + 2 * (2 + 5 + 9) + 10) / 8)
    assert both["deletion"].item() == pytest.approx(metrics.auc(deletion).item())
    # steps coarser than pixels: round(t * 4 / 2) = 0, 2, 4 pixels
    assert metrics.deletion_curve(model, x, maps, 0, steps=2, output="logit").tolist() == [[10.0, 5.0, 0.0]]


def test_deletion_matches_quantus_pixel_flipping():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).eval()
    x = torch.rand(4, 1, 4, 4)
    maps = torch.randn(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 1])
    ours = metrics.deletion_curve(model, x, maps, y, steps=16, baseline=0.0, output="softmax", abs=False)
    metric = _quantus(quantus.PixelFlipping, features_in_step=1, perturb_baseline=0.0, abs=False, normalise=False)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps.numpy(),
                               softmax=True, device="cpu"))
    # Quantus's curve starts after the first deletion; ours starts at the intact image
    np.testing.assert_allclose(ours[:, 1:].numpy(), theirs, rtol=1e-5, atol=1e-6)


def test_blur_keeps_constant_images():
    img = torch.full((2, 3, 9, 9), 0.25)
    assert torch.allclose(metrics.blur(img), img)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="masks"):
        metrics.pointing_game(torch.ones(2, 1, 3, 3), torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion_curve(Linear(torch.ones(4)), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), 0,
                               baseline="nope")
    with pytest.raises(TypeError):
        metrics.sparseness(np.ones((2, 3)))


# --- the Quantus adapter --------------------------------------------------------------------

def test_quantus_explain_func_inside_a_quantus_metric():
    captum_attr = pytest.importorskip("captum.attr")
    from fastmollify.quantus_adapter import quantus_explain_func

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.rand(4, 3, 6, 6)
    y = torch.tensor([0, 1, 2, 0])
    # the plain gradient through the adapter equals Captum's signed saliency summed over channels
    ours = quantus_explain_func(model=model, inputs=x.numpy(), targets=y.numpy(), method="gradient")
    saliency = captum_attr.Saliency(model).attribute(x.clone().requires_grad_(True), target=y, abs=False)
    assert ours.shape == (4, 1, 6, 6) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, saliency.sum(1, keepdim=True).detach().numpy(), rtol=1e-5, atol=1e-7)
    # and Quantus accepts it as explain_func: same scores as with the Captum maps passed in
    metric = _quantus(quantus.Sparseness, abs=True, normalise=False)
    via_adapter = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=quantus_explain_func,
                         explain_func_kwargs={"method": "gradient"}, device="cpu")
    given = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                   a_batch=saliency.sum(1, keepdim=True).detach().numpy(), device="cpu")
    np.testing.assert_allclose(via_adapter, given, rtol=1e-5)
    # any method and its options pass through; reduce_axes=() keeps the channels
    smooth = quantus_explain_func(model, x.numpy(), y.numpy(), method="adaptgrad", n=3, bounds=(0, 1),
                                  reduce_axes=())
    assert smooth.shape == (4, 3, 6, 6)
    with pytest.raises(ValueError, match="unknown method"):
        quantus_explain_func(model, x.numpy(), y.numpy(), method="nope")


# --- the authors' scaled ranking, directions, PIC ------------------------------------------------------

def test_diverging_matches_the_authors_noabsscale():
    import numpy as np
    from scipy import stats

    torch.manual_seed(3)
    a = torch.randn(4, 3, 5, 5)
    b = a + 0.5 * torch.randn(4, 3, 5, 5)
    got = metrics.diverging(a)
    for i in range(4):
        s = a[i].sum(0).double().numpy().ravel()
        span = abs(np.percentile(s, 99))  # their noabsscale: clip(x / (vmax - vmin), -1, 1), vmax = -vmin = span
        want = np.clip(s / (2 * span), -1, 1)
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-12)
        sb = b[i].sum(0).double().numpy().ravel()
        rho = stats.spearmanr(want, np.clip(sb / (2 * abs(np.percentile(sb, 99))), -1, 1)).correlation
        assert float(metrics.invariance(a[i:i + 1], b[i:i + 1], scale="diverging")[0]) == pytest.approx(abs(rho),
                                                                                                          abs=1e-6)
    with pytest.raises(ValueError, match="scale"):
        metrics.spearman(a, b, scale="percentile")
    with pytest.raises(ValueError, match="abs"):
        metrics.spearman(a, b, abs=True, scale="diverging")
    assert torch.isnan(metrics.consistency(torch.zeros(1, 1, 3, 3), a[:1, :1, :3, :3], scale="diverging")).all()


def test_metric_directions():
    assert metrics.DIRECTIONS["invariance"] == 1 and metrics.DIRECTIONS["consistency"] == -1
    assert metrics.DIRECTIONS["deletion"] == -1 and metrics.DIRECTIONS["sic"] == 1


def test_pic_auc_hand_case():
    # points (0, 0), (0.5, 0.8), (1, 1): 0.5 * 0.8 / 2 + 0.5 * (0.8 + 1) / 2 = 0.65
    assert metrics.pic_auc([0.5], [0.8]) == pytest.approx(0.65, abs=1e-12)
    assert metrics.pic_auc([0.2, 0.6], [1.0, 1.0]) == pytest.approx(1 - 0.5 * 0.2, abs=1e-12)


def test_pic_rewards_the_map_that_points_at_the_evidence():
    class Bright(torch.nn.Module):  # class 0's logit: the mean brightness of the top-left quadrant
        def forward(self, x):
            q = x[:, :, :16, :16].mean((1, 2, 3))
            return torch.stack([40 * (q - 0.3), torch.zeros_like(q)], 1)

    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32) * 0.2
    x[:, :, :16, :16] = 0.9 + 0.1 * torch.rand(3, 3, 16, 16)  # a textured bright quadrant
    good = torch.zeros(3, 1, 32, 32)
    good[:, :, :16, :16] = 1 + torch.rand(3, 1, 16, 16)
    bad = 1 + torch.rand(3, 1, 32, 32)
    bad[:, :, :16, :16] = 0
    g = metrics.pic(Bright(), x, good, 0, min_prediction=0.5)
    b = metrics.pic(Bright(), x, bad, 0, min_prediction=0.5)
    kept = torch.isfinite(g["sic"])  # whether an image is kept depends on the image and its blur, not on the map
    assert int(kept.sum()) >= 2 and torch.equal(kept, torch.isfinite(b["sic"]))
    assert float(g["sic"][kept].mean()) > float(b["sic"][kept].mean()) + 0.2
    with pytest.raises(ValueError, match="one value per pixel"):
        metrics.pic(Bright(), x, torch.zeros(3, 1, 8, 8), 0)
