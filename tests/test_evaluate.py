"""The evaluation: verify against the committed results, the authors' IG rule, kernel CDFs, protocols."""
import json
import math

import numpy as np
import pytest
import torch

from fastmollify import kernels, methods
from fastmollify.evaluation import AUTHORS, DEFAULT, QUICK, specs, studies, verify
from fastmollify.evaluation.run import VERIFY_ROWS
from fastmollify.__main__ import SOURCE_ROOT, main

RESULTS = SOURCE_ROOT / "docs" / "evaluation" / "results.json"
ROWS = ["default/paper2/Grad", "default/paper1/poisson (r=0.4)", "authors/paper2/AdaptGrad c=0.95"]


@pytest.fixture(scope="module")
def committed():
    if not RESULTS.is_file():
        pytest.skip("no committed docs/evaluation/results.json")
    return json.loads(RESULTS.read_text())


def test_verify_reruns_committed_rows_and_agrees(committed):
    assert verify(RESULTS, images=1, rows=ROWS, log=lambda s: None) == []


def test_verify_names_a_row_that_differs(committed, tmp_path, capsys):
    bad = json.loads(json.dumps(committed))
    values = bad["verify"]["default"]["paper2/Grad"]["sparseness"]
    values[0] += 0.05  # far outside any standard error
    bad["accuracy"]["shapes CNN"] = 0.5
    path = tmp_path / "results.json"
    path.write_text(json.dumps(bad))
    differences = verify(path, images=1, rows=ROWS[:1], log=lambda s: None)
    assert any("paper2/Grad sparseness" in d for d in differences)
    assert any("accuracy shapes CNN" in d for d in differences)
    assert main(["evaluate", "--verify", "--results", str(path), "--images", "1", "--rows", ROWS[0]]) == 1
    assert "paper2/Grad sparseness" in capsys.readouterr().err
    with pytest.raises(ValueError, match="images must be between"):
        verify(path, images=99)


def test_verify_rows_exist_in_the_tables():
    for proto_name, rows in VERIFY_ROWS.items():
        proto = {"default": DEFAULT, "authors": AUTHORS}[proto_name]
        for table, row in rows:
            assert row in (specs.paper1 if table == "paper1" else specs.paper2)(QUICK, proto)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3)).eval()


def test_authors_ig_matches_their_loop():
    model, x, t = _mlp(), torch.rand(3, 1, 6), torch.tensor([0, 2, 1])
    steps = 5

    def grad(z, k):
        z = z.detach().clone().requires_grad_(True)
        torch.softmax(model(z), 1)[0, k].backward()
        return z.grad

    for baseline in (0.0, 1.0):
        got = specs.authors_ig(model, x, t, baseline=baseline, inner="gradient", proto=AUTHORS, steps=steps, offset=0)
        for i in range(3):  # the authors' IntegratedGradient: grads[0] clean, then i/steps from the baseline
            x0 = torch.full_like(x[i:i + 1], baseline)
            grads = [grad(x[i:i + 1], t[i])] + [grad(x0 + (k / steps) * (x[i:i + 1] - x0), t[i]) for k in range(steps)]
            want = torch.stack(grads).mean(0) * (x[i:i + 1] - x0)
            torch.testing.assert_close(got[i:i + 1], want, rtol=1e-5, atol=1e-7)


def test_authors_protocol_averages_the_clean_gradient():
    model, x, t = _mlp(), torch.rand(2, 1, 6), torch.tensor([1, 0])
    ctx = specs.Ctx(bounds=(0.0, 1.0), adaptive_bounds=(0.0, 1.0), ig_bounds=(0.0, 1.0))
    cfg = QUICK
    got = specs.paper2(cfg, AUTHORS)["SmoothGrad"](model, x, t, ctx, 0)
    plain = methods.smoothgrad(model, x, t, n=cfg.n, noise_level=cfg.noise_level, bounds=(0, 1), seed=cfg.seed,
                               output="softmax")
    clean = methods.gradient(model, x, t, output="softmax")
    torch.testing.assert_close(got, (cfg.n * plain + clean) / (cfg.n + 1))
    ada = specs.paper2(cfg, AUTHORS)["AdaptGrad c=0.95"](model, x, t, ctx, 0)
    torch.testing.assert_close(ada, methods.adaptgrad(model, x, t, n=cfg.n, bounds=(0, 1), include_clean=True,
                                                      seed=cfg.seed, output="softmax"))


def test_shifted_bounds_give_the_authors_absolute_distances():
    x = torch.rand(1000, dtype=torch.float64) + 1.0  # the Bias run's data in [1, 2], their bounds (0, 1)
    theirs = torch.minimum((x - 0).abs(), (x - 1).abs())
    lo, hi = AUTHORS.shifted_adaptive_bounds
    torch.testing.assert_close(torch.minimum(x - lo, hi - x), theirs)


@pytest.mark.parametrize("kernel", studies.KERNELS)
def test_kernel_cdf_against_the_sampler(kernel):
    u = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000  # a fine quantile grid of the kernel
    z = kernels.get(kernel).sample(u)
    for t in (-1.5, -0.3, 0.0, 0.7, 2.0):
        assert float(studies.kernel_cdf(kernel, torch.tensor([t]))[0]) == pytest.approx(
            float((z <= t).double().mean()), abs=2e-5)


def test_extra_noise_share_of_adaptgrad_is_bounded_by_c():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 0.98 + 0.01
    for c in (0.95, 0.999):
        eps = torch.minimum(x, 1 - x) * kernels.get("gaussian").eps_from(1.0, c)
        p = studies._outside("gaussian", x, eps, 0.0, 1.0)
        assert float(p.max()) <= 1 - c + 1e-9 and float(p.min()) >= (1 - c) / 2 - 1e-9
    p = studies._outside("rectangular", torch.tensor([0.5]), torch.tensor([1.0]), 0.0, 1.0)
    assert float(p[0]) == pytest.approx(0.5)  # uniform on [-0.5, 1.5]: half of it outside [0, 1]


def test_quick_protocol_authors_only(tmp_path):
    from fastmollify.evaluation import Config
    from fastmollify.evaluation.measure import evaluate_method, setup
    cfg = Config(**{**QUICK.__dict__, "shapes_images": 2, "digits_images": 3})
    env = setup(cfg, lambda s: None)
    res = evaluate_method(specs.paper2(cfg, AUTHORS)["IG (x0=1)"], env, cfg, AUTHORS, pic=False)
    assert set(res) >= {"sparseness", "consistency", "invariance", "insertion AUC"}
    assert all(np.all((v[np.isfinite(v)] >= 0) & (v[np.isfinite(v)] <= 1)) for v in res.values())
    assert math.isfinite(float(np.nanmean(res["invariance"])))


def test_user_model_on_an_image_folder(tmp_path):
    import torchvision
    from PIL import Image

    from fastmollify.evaluation.user import run_user

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.effect_noise((40, 40), 60).convert("RGB").save(tmp_path / "imgs" / cls / "0.png")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), tmp_path / "w.pt")
    assert main(["evaluate", "--model", "resnet18", "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "o"),
                 "--images", "2"]) == 2  # --data is required
    summary = run_user(tmp_path / "o", arch="resnet18", weights=tmp_path / "w.pt", folder=tmp_path / "imgs", images=2,
                       size=32, config=QUICK, log=lambda s: None)
    assert {"Grad", "AdaptGrad c=0.95", "poisson adaptive"} <= set(summary)
    assert 0 <= summary["SmoothGrad"]["sparseness"]["mean"] <= 1
    assert "| AdaptGrad c=0.95 |" in (tmp_path / "o" / "user_resnet18.md").read_text()
