"""Convergence: calibrated standard errors, tol-driven N, antithetic pairs, adaptive scale for every kernel."""
import math

import pytest
import torch

import fastmollify as fm
from fastmollify import compose, engine, kernels

SEEDS = 40


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).eval()


X = torch.rand(2, 6)
CALIBRATED = {
    "smoothgrad": lambda m, s: fm.smoothgrad(m, X, 1, n=16, seed=s, reduce="stats"),
    "smoothgrad antithetic": lambda m, s: fm.smoothgrad(m, X, 1, n=16, antithetic=True, seed=s, reduce="stats"),
    "mollify poisson": lambda m, s: fm.mollify(m, X, 1, kernel="poisson", eps=0.05, n=16, seed=s, reduce="stats"),
    "adaptgrad": lambda m, s: fm.adaptgrad(m, X, 1, n=16, bounds=(0, 1), seed=s, reduce="stats"),
    "clipgrad": lambda m, s: fm.clipgrad(m, X, 1, n=16, bounds=(0, 1), seed=s, reduce="stats"),
    "noisegrad": lambda m, s: fm.noisegrad(m, X, 1, m=16, seed=s, reduce="stats"),
    "noisegrad antithetic": lambda m, s: fm.noisegrad(m, X, 1, m=16, antithetic=True, seed=s, reduce="stats"),
    "fusiongrad": lambda m, s: fm.fusiongrad(m, X, 1, m=10, n=10, seed=s, reduce="stats"),
    "fusiongrad adaptgrad": lambda m, s: fm.fusiongrad(m, X, 1, m=10, n=6, inner="adaptgrad", bounds=(0, 1), seed=s,
                                                       reduce="stats"),
    "IG smoothgrad": lambda m, s: compose.integrated_gradients(m, X, 1, inner="smoothgrad", steps=4, n=8, seed=s,
                                                               reduce="stats"),
    "IG noisegrad": lambda m, s: compose.integrated_gradients(m, X, 1, inner="noisegrad", steps=4, m=12, seed=s,
                                                              reduce="stats"),
    "GxI fusiongrad": lambda m, s: compose.gradient_x_input(m, X, 1, inner="fusiongrad", m=10, n=5, seed=s,
                                                            reduce="stats"),
}


@pytest.mark.parametrize("name", list(CALIBRATED))
def test_standard_error_is_calibrated(name):
    """The reported standard error matches the spread of the mean over seeds (median over elements)."""
    model = _mlp()
    runs = [CALIBRATED[name](model, seed) for seed in range(SEEDS)]
    spread = torch.stack([r.mean for r in runs]).std(0)
    reported = torch.stack([r.stderr**2 for r in runs]).mean(0).sqrt()  # RMS: unbiased for the variance
    ratio = float((reported / spread).median())
    assert 0.8 <= ratio <= 1.25, ratio


class Quadratic(torch.nn.Module):
    """f = sum(a x^2 + b x): gradient 2 a x + b, linear in x and in a."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.a, self.b = torch.nn.Parameter(torch.randn(6, generator=g)), torch.nn.Parameter(torch.randn(6, generator=g))

    def forward(self, x):
        return (self.a * x * x + self.b * x).sum(1)


@pytest.mark.parametrize("call", [
    lambda m, x: fm.smoothgrad(m, x, n=2, sigma=0.7, antithetic=True),
    lambda m, x: fm.adaptgrad(m, x, n=4, bounds=(-3, 3), antithetic=True, chunk_size=2),
    *[(lambda k: lambda m, x: fm.mollify(m, x, kernel=k, eps=0.3, n=2, antithetic=True))(k) for k in kernels.BUILTIN],
])
def test_two_antithetic_samples_give_a_quadratic_model_its_exact_gradient(call):
    model, x = Quadratic(), torch.rand(3, 6)
    exact = 2 * model.a.detach() * x + model.b.detach()
    torch.testing.assert_close(call(model, x), exact, rtol=1e-5, atol=1e-5)
    plain = fm.smoothgrad(model, x, n=2, sigma=0.7)
    assert (plain - exact).abs().max() > 1e-2  # without pairs two samples are not exact


def test_two_antithetic_weight_draws_are_exact_for_a_gradient_linear_in_the_weights():
    model, x = Quadratic(), torch.rand(3, 6)
    torch.testing.assert_close(fm.noisegrad(model, x, m=2, weight_sigma=0.5, antithetic=True),
                               fm.gradient(model, x), rtol=1e-5, atol=1e-5)


def test_antithetic_pairs_are_one_draw_mirrored():
    """Sample p and its mirror: x + s z and x - s z, with z the plain run's sample p."""
    seen = []

    def model(t):
        seen.append(t.detach().clone())
        return t.sum(1)

    x = torch.rand(2, 5)
    fm.smoothgrad(model, x, n=4, sigma=0.3, antithetic=True, chunk_size=4)
    plain = []
    fm.smoothgrad(lambda t: plain.append(t.detach().clone()) or t.sum(1), x, n=2, sigma=0.3, chunk_size=2)
    pairs, straight = seen[0].reshape(4, 2, 5), plain[0].reshape(2, 2, 5)
    torch.testing.assert_close(pairs[:2], straight)
    torch.testing.assert_close(pairs[2:], 2 * x - straight)


@pytest.mark.parametrize("bad", [dict(n=5, antithetic=True), dict(n=4, antithetic="yes"),
                                 dict(n=4, antithetic=True, include_clean=True)])
def test_antithetic_bad_input(bad):
    with pytest.raises((ValueError, TypeError), match="antithetic|include_clean|n must be even"):
        fm.adaptgrad(_mlp(), X, 0, bounds=(0, 1), **bad)


def test_odd_m_with_antithetic_is_refused():
    with pytest.raises(ValueError, match="m must be even"):
        fm.noisegrad(_mlp(), X, 0, m=3, antithetic=True)


# --- tol -------------------------------------------------------------------------------------------

def _mixed_batch():
    """Examples from easy (large, smooth gradient) to hard (gradient near zero, noisy)."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).eval()
    x = torch.cat([torch.rand(2, 6) * 0.2, torch.rand(2, 6) * 4 + 2])
    return model, x


def test_tol_stops_each_example_and_equals_a_fixed_n_run_alone():
    model, x = _mixed_batch()
    stats = fm.smoothgrad(model, x, n=400, sigma=0.5, tol=0.05, chunk_size=8, seed=5, reduce="stats")
    n = stats.n
    assert torch.is_tensor(n) and n.shape == (4,)
    assert n.min() < n.max()  # examples stopped apart
    assert ((n % 8 == 0) | (n == 400)).all() and (n >= engine.MIN_UNITS).all()
    relative = stats.stderr.flatten(1).norm(dim=1) / stats.mean.flatten(1).norm(dim=1)
    assert ((relative <= 0.05) | (n == 400)).all()
    for b in range(4):
        alone = fm.smoothgrad(model, x[b:b + 1], n=int(n[b]), sigma=0.5, chunk_size=8, seed=5, example_offset=b)
        torch.testing.assert_close(stats.mean[b:b + 1], alone, rtol=1e-5, atol=1e-7)


def test_tol_with_the_default_chunk_checks_every_tol_check_samples(monkeypatch):
    """chunk_size=None: the measured chunk would hold all n samples (no check before the end); with tol
    it is capped and chunks never cross a multiple of TOL_CHECK, so examples stop apart, and where they
    stop does not depend on how much memory the chunk may take."""
    model, x = _mixed_batch()
    stats = fm.smoothgrad(model, x, n=400, sigma=0.5, tol=0.05, seed=5, reduce="stats")
    n = stats.n
    assert n.min() < n.max() < 400
    assert (n % engine.TOL_CHECK == 0).all() and (n >= engine.MIN_UNITS).all()
    monkeypatch.setattr(fm.chunking, "CPU_BUDGET_CAP", 1)  # a one-sample chunk after the measured one
    small = fm.smoothgrad(model, x, n=400, sigma=0.5, tol=0.05, seed=5, reduce="stats")
    assert torch.equal(small.n, n)
    torch.testing.assert_close(small.mean, stats.mean, rtol=1e-5, atol=1e-7)


def test_tol_with_weight_draws_counts_draws():
    model, x = _mixed_batch()
    stats = fm.fusiongrad(model, x, m=60, n=4, sigma=0.3, tol=0.05, seed=2, reduce="stats")
    draws = stats.units.n
    assert torch.is_tensor(draws) and (draws >= engine.MIN_UNITS).all() and (draws <= 60).all()
    assert torch.equal(stats.n, draws * 4)
    for b in range(4):
        alone = fm.fusiongrad(model, x[b:b + 1], m=int(draws[b]), n=4, sigma=0.3, seed=2, example_offset=b)
        torch.testing.assert_close(stats.mean[b:b + 1], alone, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("tol", [0, 1, 1.5, -0.1, float("nan"), "0.1"])
def test_bad_tol_is_refused(tol):
    with pytest.raises(ValueError, match="tol must be"):
        fm.smoothgrad(_mlp(), X, 0, tol=tol)


def test_tol_needs_a_mean_map():
    with pytest.raises(ValueError, match="tol .* reduce="):
        fm.smoothgrad(_mlp(), X, 0, tol=0.1, reduce="var")
    with pytest.raises(ValueError, match="gradient has no noise"):
        fm.gradient(_mlp(), X, 0, tol=0.1)
    with pytest.raises(ValueError, match="tol"):
        compose.integrated_gradients(_mlp(), X, 0, tol=0.1)


# --- adaptive scale for every kernel ---------------------------------------------------------------

def test_adaptive_gaussian_mollification_is_adaptgrad():
    model = _mlp()
    assert torch.equal(fm.mollify(model, X, 1, kernel="gaussian", adaptive=True, alpha=0.9, bounds=(0, 1), n=7),
                       fm.adaptgrad(model, X, 1, c=0.9, bounds=(0, 1), n=7))


CHARACTERISTIC = {  # E[cos(t Z)] of each kernel at scale 1
    "gaussian": lambda t: math.exp(-t * t / 2),
    "poisson": lambda t: math.exp(-abs(t)),
    "hyperbolic": lambda t: 1 / math.cosh(t),
    "sigmoid": lambda t: math.pi * t / math.sinh(math.pi * t),
    "rectangular": lambda t: math.sin(t) / t,
}


@pytest.mark.parametrize("kernel", list(CHARACTERISTIC))
def test_adaptive_scale_per_element_matches_the_kernel(kernel):
    """Each element's noise, divided by eps_j = eps_from(r_j, alpha), has the kernel's characteristic
    function, and a share alpha of it lies within +-r_j (so at least alpha stays within the bounds)."""
    seen = []

    def model(t):
        seen.append(t.detach().clone())
        return t.sum(1)

    x, alpha, n = torch.tensor([[0.1, 0.5, 0.85, 0.3, 0.97]]), 0.8, 4000
    fm.mollify(model, x, kernel=kernel, adaptive=True, alpha=alpha, bounds=(0, 1), n=n, seed=4)
    samples = torch.cat(seen).double()
    r = torch.minimum(x, 1 - x).double()
    z = (samples - x.double()) / (kernels.get(kernel).eps_from(1.0, alpha) * r)
    for t in (0.5, 1.0, 2.0):
        empirical = torch.cos(t * z).mean(0)
        assert (empirical - CHARACTERISTIC[kernel](t)).abs().max() < 4.5 / math.sqrt(n), (t, empirical)
    inside = ((samples - x.double()).abs() <= r).double().mean(0)
    assert (inside - alpha).abs().max() < 4.5 * math.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.parametrize("inner,options", [("adaptgrad", dict(c=0.9, bounds=(0, 1))),
                                           ("mollify", dict(kernel="poisson", r=0.1)),
                                           ("mollify", dict(kernel="sigmoid", adaptive=True, bounds=(0, 1))),
                                           ("clipgrad", dict(sigma=0.2, bounds=(0, 1)))])
def test_fusiongrad_takes_any_input_noise(inner, options):
    """One weight draw of negligible size: FusionGrad is its inner method's n samples."""
    model = _mlp()
    fused = fm.fusiongrad(model, X, 1, m=1, n=6, weight_sigma=1e-9, inner=inner, seed=3, **options)
    torch.testing.assert_close(fused, getattr(fm, inner)(model, X, 1, n=6, seed=3, **options), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("call,message", [
    (lambda: fm.mollify(_mlp(), X, 0, adaptive=True, bounds=(0.2, 0.8)), "outside bounds"),
    (lambda: fm.mollify(_mlp(), torch.ones(2, 6), 0, adaptive=True), "constant"),
    (lambda: fm.mollify(_mlp(), X, 0, adaptive=True, eps=0.1, bounds=(0, 1)), "drop eps and r"),
    (lambda: fm.mollify(_mlp(), X, 0, eps=0.1, bounds=(0, 1)), "adaptive=True only"),
    (lambda: fm.fusiongrad(_mlp(), X, 0, inner="noisegrad"), "inner must be one of"),
    (lambda: fm.fusiongrad(_mlp(), X, 0, inner="adaptgrad", sigma=0.1), "unknown option 'sigma'"),
])
def test_adaptive_and_inner_bad_input(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("kernel", list(CHARACTERISTIC))
def test_adaptive_kernels_in_every_backend_match_the_reference(backend, kernel):
    model = _mlp()
    run = dict(kernel=kernel, adaptive=True, alpha=0.9, bounds=(0, 1), n=6, seed=2)
    torch.testing.assert_close(fm.mollify(model, X, 1, backend=backend, **run),
                               fm.mollify(model, X, 1, backend="reference", **run), rtol=1e-4, atol=1e-6)
