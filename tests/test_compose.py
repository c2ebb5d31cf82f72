"""Integrated Gradients / Gradient x Input with a smoothed inner gradient: closed forms and Captum."""
import pytest
import torch

from fastmollify import compose


class Quadratic(torch.nn.Module):
    """f(x) = sum a x^2 + b x per example: gradient 2 a x + b, linear in x (closed forms below)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(a), torch.nn.Parameter(b)

    def forward(self, x):
        return (self.a * x * x + self.b * x).flatten(1).sum(1)


def _quadratic(d=6):
    g = torch.Generator().manual_seed(5)
    return Quadratic(torch.randn(d, generator=g), torch.randn(d, generator=g))


def test_integrated_gradients_closed_form_and_completeness():
    model = _quadratic()
    x, x0 = torch.randn(3, 6), torch.randn(3, 6)
    ig = compose.integrated_gradients(model, x, None, inner="gradient", steps=5, baseline=x0)
    a, b = model.a.detach(), model.b.detach()
    # the midpoint rule is exact for a gradient linear along the path: mean gradient = a (x + x0) + b
    torch.testing.assert_close(ig, (x - x0) * (a * (x + x0) + b), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ig.sum(1), model(x) - model(x0), rtol=1e-5, atol=1e-5)


def test_gradient_x_input_closed_form():
    model = _quadratic()
    x = torch.randn(2, 6)
    torch.testing.assert_close(compose.gradient_x_input(model, x, inner="gradient"),
                               x * (2 * model.a.detach() * x + model.b.detach()))


def test_smoothed_inner_gradient_and_its_standard_error():
    # SmoothGrad of a quadratic is unbiased for 2 a p + b; each sample's gradient has variance 4 a^2 sigma^2
    model = _quadratic()
    a = model.a.detach()
    x = torch.rand(2, 6) + 0.5
    sigma, n, steps = 0.3, 400, 4
    stats = compose.integrated_gradients(model, x, None, inner="smoothgrad", sigma=sigma, n=n, steps=steps,
                                         reduce="stats", seed=3)
    expected_se = x * 2 * a.abs() * sigma / (n * steps) ** 0.5  # |x - 0| * sqrt(steps * var / n) / steps
    torch.testing.assert_close(stats.stderr, expected_se, rtol=0.12, atol=1e-6)
    exact = x * (a * x + model.b.detach())
    assert ((stats.mean - exact).abs() <= 5 * expected_se + 1e-5).all()
    gxi = compose.gradient_x_input(model, x, inner="smoothgrad", sigma=sigma, n=n, reduce="stats", seed=3)
    torch.testing.assert_close(gxi.stderr, x * 2 * a.abs() * sigma / n ** 0.5, rtol=0.12, atol=1e-6)
    assert ((gxi.mean - x * (2 * a * x + model.b.detach())).abs() <= 5 * gxi.stderr + 1e-5).all()


def test_linear_model_smoothing_changes_nothing():
    model = Quadratic(torch.zeros(6), torch.randn(6))  # constant gradient b
    x = torch.rand(3, 6)
    for inner, opts in (("smoothgrad", dict(n=7)), ("adaptgrad", dict(n=7, bounds=(0, 1))),
                        ("mollify", dict(kernel="poisson", r=0.1, n=7))):
        ig = compose.integrated_gradients(model, x, None, inner=inner, steps=3, **opts)
        torch.testing.assert_close(ig, x * model.b.detach(), rtol=1e-5, atol=1e-6)


def test_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).eval()
    x, target = torch.randn(4, 5), torch.tensor([0, 2, 1, 2])
    ours = compose.integrated_gradients(model, x, target, inner="gradient", steps=9)
    theirs = captum_attr.IntegratedGradients(model).attribute(x, target=target, n_steps=9, method="riemann_middle")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compose.gradient_x_input(model, x, target, inner="gradient"),
                               captum_attr.InputXGradient(model).attribute(x, target=target))


def test_bad_arguments():
    model = _quadratic()
    with pytest.raises(ValueError, match="inner"):
        compose.integrated_gradients(model, torch.randn(1, 6), inner="nope")
    with pytest.raises(ValueError, match="reduce"):
        compose.gradient_x_input(model, torch.randn(1, 6), reduce="var")
    with pytest.raises(TypeError):
        compose.integrated_gradients(model, (torch.randn(1, 6),))


@pytest.mark.parametrize("inner,options", [("smoothgrad", dict(n=3, sigma=0.3)), ("fusiongrad", dict(m=2, n=2, sigma=0.3)),
                                           ("mollify", dict(kernel="sigmoid", eps=0.2, n=3))])
def test_integrated_gradients_does_not_depend_on_the_batch_split(inner, options):
    """Each example's noise depends on (seed, its global index, step) only."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(5, 6)
    target = torch.tensor([0, 2, 1, 1, 0])
    run = dict(inner=inner, steps=4, seed=11, **options)
    whole = compose.integrated_gradients(model, x, target, **run)
    parts = torch.cat([compose.integrated_gradients(model, x[:2], target[:2], **run),
                       compose.integrated_gradients(model, x[2:3], target[2:3], example_offset=2, **run),
                       compose.integrated_gradients(model, x[3:], target[3:], example_offset=3, **run)])
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-7)
    other_seed = compose.integrated_gradients(model, x, target, **dict(run, seed=12))
    assert (other_seed - whole).abs().max() > 1e-4  # the check above can fail


def test_integrated_gradients_tiles_per_example_forward_arguments_over_steps():
    """A linear model scaled per example: IG = (x - x0) * scale_b * w exactly, whatever the noise."""
    w = torch.randn(6)

    def model(t, scale):
        return (t @ w) * scale

    x, scale = torch.randn(4, 6), torch.tensor([1.0, -2.0, 3.0, 0.5])
    ig = compose.integrated_gradients(model, x, None, inner="smoothgrad", steps=3, n=2, sigma=0.5,
                                      additional_forward_args=(scale,))
    torch.testing.assert_close(ig, x * scale[:, None] * w, rtol=1e-5, atol=1e-6)
