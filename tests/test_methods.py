"""Every method against closed forms, numpy and Captum; reproducibility across chunks and splits."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import torch
from scipy import integrate, stats as sstats

import fastmollify as fm
from fastmollify import kernels
from fastmollify.ops import reference

# Characteristic functions E[cos(t Z)] of the scale-1 kernels (independent closed forms).
CHARACTERISTIC = {
    "gaussian": lambda t: torch.exp(-t**2 / 2),
    "poisson": lambda t: torch.exp(-t.abs()),
    "hyperbolic": lambda t: 1 / torch.cosh(t),
    "sigmoid": lambda t: math.pi * t / torch.sinh(math.pi * t),
    "rectangular": lambda t: torch.sin(t) / t,
}


def within_mc_error(stats, exact, k=5.0):
    """|estimate - exact| <= k standard errors everywhere (false alarm ~1e-6 per element at k=5)."""
    err = (stats.mean - exact).abs()
    return bool((err <= k * stats.stderr + 1e-6).all()), float((err / (stats.stderr + 1e-12)).max())


def sine_problem(batch=2, dim=24):
    a = torch.linspace(0.5, 2.0, dim)
    w = torch.linspace(0.5, 4.0, dim)
    x = torch.rand(batch, dim) * 2 - 1
    return (lambda t: (a * torch.sin(w * t)).sum(1)), x, a, w


def backends_here():
    """The reference and, when built, the compiled CPU backend (op-level agreement of every
    backend with the reference is tests/test_backends.py's job; the Triton interpreter is too
    slow for these sample counts)."""
    return [name for name in ("reference", "cpu") if fm.availability("cpu")[name] is None]


@pytest.mark.parametrize("backend", backends_here())
@pytest.mark.parametrize("kernel", kernels.BUILTIN)
def test_mollified_sine_has_closed_form(kernel, backend):
    f, x, a, w = sine_problem()
    eps = 0.3
    stats = fm.mollify(f, x, kernel=kernel, eps=eps, n=3000, reduce="stats", backend=backend)
    exact = a * w * torch.cos(w * x) * CHARACTERISTIC[kernel](w * eps)
    ok, worst = within_mc_error(stats, exact)
    assert ok, f"{kernel} on {backend}: {worst:.2f} standard errors off"
    assert stats.n == 3000 and stats.backend == backend


def test_mollify_eps_from_r_alpha_and_smoothgrad_sigma():
    f, x, a, w = sine_problem()
    eps = kernels.get("sigmoid").eps_from(0.4, 0.9)
    stats = fm.mollify(f, x, kernel="sigmoid", r=0.4, alpha=0.9, n=3000, reduce="stats")
    assert within_mc_error(stats, a * w * torch.cos(w * x) * CHARACTERISTIC["sigmoid"](w * eps))[0]
    # smoothgrad's default sigma is noise_level * (max - min) of the inputs
    sigma = 0.2 * float(x.max() - x.min())
    stats = fm.smoothgrad(f, x, n=3000, reduce="stats")
    assert within_mc_error(stats, a * w * torch.cos(w * x) * CHARACTERISTIC["gaussian"](w * sigma))[0]


def cube(t):
    """f = sum x^3 / 3: its gradient at x + s z is (x + s z)^2, with mean x^2 + s^2."""
    return (t**3).sum(dim=tuple(range(1, t.dim()))) / 3


def test_adaptgrad_sigma_recovered_from_a_cubic():
    lo, hi, c = -1.0, 2.0, 0.95
    x = torch.rand(3, 40) * 3 - 1
    x[0, :4] = torch.tensor([lo, hi, lo, hi])  # elements on a bound are never perturbed
    stats = fm.adaptgrad(cube, x, bounds=(lo, hi), c=c, n=4000, reduce="stats")
    sigma = torch.minimum(x - lo, hi - x) / (math.sqrt(2) * sstats.norm.ppf((1 + c) / 2) / math.sqrt(2))
    assert within_mc_error(stats, x**2 + sigma**2)[0]
    assert torch.equal(stats.var[0, :4], torch.zeros(4)) and torch.equal(stats.mean[0, :4], x[0, :4] ** 2)
    # the authors' loop: the clean gradient as one more sample
    with_clean = fm.adaptgrad(cube, x, bounds=(lo, hi), n=4000, include_clean=True, reduce="stats")
    assert with_clean.n == 4001
    assert torch.allclose(with_clean.mean, (4000 * stats.mean + x**2) / 4001, rtol=1e-5, atol=1e-6)


def test_adaptgrad_per_channel_bounds():
    x = torch.rand(2, 3, 4, 4)
    lo = torch.tensor([0.0, -1.0, -2.0]).reshape(3, 1, 1)
    hi = torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    x = x * (hi - lo) + lo
    stats = fm.adaptgrad(cube, x, bounds=(lo, hi), c=0.99, n=3000, reduce="stats")
    sigma = torch.minimum(x - lo, hi - x) / (math.sqrt(2) * float(torch.erfinv(torch.tensor(0.99, dtype=torch.float64))))
    assert within_mc_error(stats, x**2 + sigma**2)[0]


def test_clipgrad_matches_the_clipped_gaussian_expectation():
    x = torch.tensor([[0.02, 0.3, 0.5, 0.97, 1.0, 0.0]])
    sigma = 0.2  # noise_level 0.2 of the range [0, 1]
    stats = fm.clipgrad(cube, x, bounds=(0.0, 1.0), n=4000, reduce="stats")

    def expected(xj):  # E[clamp(xj + sigma Z, 0, 1)^2] by quadrature
        inner = integrate.quad(lambda y: y**2 * sstats.norm.pdf(y, xj, sigma), 0, 1)[0]
        return inner + 1.0 * sstats.norm.sf(1, xj, sigma)

    exact = torch.tensor([[expected(float(v)) for v in x[0]]])
    assert within_mc_error(stats, exact)[0]


def square(t):
    """f = sum x^2 / 2: its gradient at x + s z is x + s z."""
    return (t**2).sum(dim=tuple(range(1, t.dim()))) / 2


def test_range_sigma_from_per_channel_bounds():
    x = torch.rand(2, 3, 5, 5)
    lo, hi = torch.zeros(3, 1, 1), torch.tensor([1.0, 2.0, 4.0]).reshape(3, 1, 1)
    stats = fm.smoothgrad(square, x * hi, bounds=(lo, hi), noise_level=0.1, n=2000, reduce="stats")
    per_channel = stats.var.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, (0.1 * hi.reshape(3)) ** 2, rtol=0.05)


@pytest.mark.parametrize("chunk", [1, 7, 30])
def test_reductions_against_numpy(chunk):
    x = torch.randn(3, 11)
    sigma, n = 0.7, 30
    z = reference.stream_noise(kernels.get("gaussian"), 42, 0, range(n), range(3), 11)
    g = (x + sigma * z).double().numpy()  # per-sample gradients of sum x^2/2, written out
    common = dict(sigma=sigma, n=n, seed=42, chunk_size=chunk)
    mean = fm.smoothgrad(square, x, **common)
    sq = fm.smoothgrad(square, x, reduce="sq", **common)
    var = fm.smoothgrad(square, x, reduce="var", **common)
    stats = fm.smoothgrad(square, x, reduce="stats", **common)
    np.testing.assert_allclose(mean.numpy(), g.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sq.numpy(), (g**2).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), g.var(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.stderr.numpy(), np.sqrt(g.var(0, ddof=1) / n), rtol=1e-4, atol=1e-7)
    assert stats.n == n and stats.seed == 42 and stats.backend in ("reference", "cpu")


def test_same_seed_same_map_whatever_the_chunk_and_batch_split():
    f, x, _, _ = sine_problem(batch=5)
    runs = [fm.smoothgrad(f, x, sigma=0.3, n=23, chunk_size=c, seed=9) for c in (1, 7, 23)]
    for other in runs[1:]:
        assert torch.allclose(runs[0], other, rtol=1e-5, atol=1e-7)
    split = torch.cat([fm.smoothgrad(f, x[:2], sigma=0.3, n=23, seed=9),
                       fm.smoothgrad(f, x[2:], sigma=0.3, n=23, seed=9, example_offset=2)])
    assert torch.allclose(runs[0], split, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(runs[0], fm.smoothgrad(f, x, sigma=0.3, n=23, seed=10))


class Elementwise(torch.nn.Module):
    """f(x) = sum w x^2 / 2 with a weight per element: gradient w * x."""

    def __init__(self, dim):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(0.5, 2.0, dim))

    def forward(self, t):
        return (self.w * t**2).sum(1) / 2


def test_noisegrad_weight_noise_variance_on_a_linear_model():
    model = torch.nn.Linear(30, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 30)
    s, m = 0.2, 600
    stats = fm.noisegrad(model, x, target=1, m=m, weight_sigma=s, reduce="stats")
    w = model.weight[1].detach().expand(2, 30)
    assert within_mc_error(stats, w)[0]
    tolerance = 5 * math.sqrt(2 / (m - 1)) * (s * w) ** 2  # the sample variance of m normal draws
    assert ((stats.var - (s * w) ** 2).abs() <= tolerance).all()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.requires_grad for p in model.parameters())


def test_fusiongrad_mean_and_variance_on_a_quadratic():
    model = Elementwise(20)
    x = torch.randn(2, 20)
    s, sigma, m, n = 0.2, 0.5, 40, 40
    stats = fm.fusiongrad(model, x, m=m, n=n, weight_sigma=s, sigma=sigma, reduce="stats")
    w = model.w.detach()
    # gradient w(1 + s u)(x + sigma z): mean w x; the draws share u, so the mean's variance is
    # w^2 (s^2 x^2 / m + (1 + s^2) sigma^2 / (m n))
    mean_sd = torch.sqrt(w**2 * (s**2 * x**2 / m + (1 + s**2) * sigma**2 / (m * n)))
    assert ((stats.mean - w * x).abs() <= 5 * mean_sd + 1e-6).all()
    var = w**2 * ((1 + s**2) * (x**2 + sigma**2) - x**2)
    assert torch.allclose(stats.var.mean(), var.mean(), rtol=0.15)
    assert stats.n == m * n


def test_noisegrad_only_listed_params():
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    x = torch.randn(3, 6)
    clean = fm.gradient(model, x, target=0)
    only_bias = fm.noisegrad(model, x, target=0, m=5, params=["0.bias", model[2].bias])
    noisy = fm.noisegrad(model, x, target=0, m=5)
    assert not torch.allclose(only_bias, clean) and not torch.allclose(noisy, only_bias)
    with pytest.raises(ValueError, match="params entry"):
        fm.noisegrad(model, x, target=0, m=2, params=["nope"])


@pytest.mark.parametrize("nt_type,reduce", [("smoothgrad", "mean"), ("smoothgrad_sq", "sq"), ("vargrad", "var")])
def test_agrees_with_captum_noise_tunnel_in_expectation(nt_type, reduce):
    from captum.attr import NoiseTunnel, Saliency

    model = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.Tanh(), torch.nn.Linear(12, 4)).eval()
    x = torch.randn(2, 16)
    n, sigma = 2000, 0.5
    theirs = NoiseTunnel(Saliency(model)).attribute(x, nt_type=nt_type, nt_samples=n, stdevs=sigma, target=2,
                                                    abs=False, nt_samples_batch_size=500)
    ours = fm.Explainer(model).attribute(x, target=2, nt_type=nt_type, nt_samples=n, stdevs=sigma)
    stats = fm.smoothgrad(model, x, target=2, sigma=sigma, n=n, reduce="stats")
    assert torch.allclose(ours, stats.reduce(reduce, x.dtype))
    if reduce == "mean":  # both estimate the same mean: 5 standard errors of their difference
        assert ((ours - theirs).abs() <= 5 * math.sqrt(2) * stats.stderr + 1e-6).all()
    else:
        assert torch.allclose(ours.mean(), theirs.mean(), rtol=0.1)


def test_explainer_tuple_inputs_and_forward_args():
    class TwoInputs(torch.nn.Module):
        def forward(self, a, b, scale):
            return (a**2).sum(1, keepdim=True) * scale + (b**2).sum(1, keepdim=True)

    a, b = torch.randn(3, 4), torch.randn(3, 5)
    scale = torch.tensor([[1.0], [2.0], [3.0]])
    maps = fm.Explainer(TwoInputs(), method="smoothgrad").attribute(
        (a, b), additional_forward_args=(scale,), nt_samples=500, stdevs=(0.1, 0.2))
    assert isinstance(maps, tuple) and maps[0].shape == a.shape and maps[1].shape == b.shape
    assert torch.allclose(maps[0], 2 * a * scale, atol=0.05) and torch.allclose(maps[1], 2 * b, atol=0.05)
    stats = fm.smoothgrad(TwoInputs(), (a, b), additional_forward_args=(scale,), n=50, sigma=0.1, reduce="stats")
    assert isinstance(stats, tuple) and stats[1].mean.shape == b.shape


def test_softmax_output_and_targets():
    model = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    g = fm.gradient(model, x, target=[0, 1, 2, 1], output="softmax")
    p = torch.softmax(model(x), 1).detach()
    targets = torch.tensor([0, 1, 2, 1])
    w = model.weight.detach()
    expected = p[range(4), targets, None] * (w[targets] - p @ w)  # d p_t / d x
    assert torch.allclose(g, expected, atol=1e-6)
    assert torch.allclose(fm.gradient(model, x, target=torch.tensor(1)), w[1].expand(4, 5))


def test_gradient_dtype_and_channels_last():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.rand(2, 3, 8, 8)
    model(x)
    a = fm.smoothgrad(model, x, target=1, n=8, bounds=(0, 1))
    b = fm.smoothgrad(model, x.contiguous(memory_format=torch.channels_last), target=1, n=8, bounds=(0, 1))
    assert torch.allclose(a, b, atol=1e-6)
    half = fm.smoothgrad(model.double(), x.double(), target=1, n=8, bounds=(0, 1))
    assert half.dtype == torch.float64 and torch.allclose(half.float(), a, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), chunk=st.integers(1, 12), split=st.integers(1, 4), seed=st.integers(0, 2**64 - 1),
       kernel=st.sampled_from(kernels.BUILTIN))
def test_property_any_chunking_and_split_gives_the_same_map(n, chunk, split, seed, kernel):
    """Hypothesis: for any n, chunk size, batch split and seed, the map is the one-chunk map."""
    x = torch.linspace(-1, 1, 5 * 7).reshape(5, 7)
    f = lambda t: (torch.sin(3 * t) * t).sum(1)  # noqa: E731
    common = dict(kernel=kernel, eps=0.2, n=n, seed=seed)
    whole = fm.mollify(f, x, chunk_size=n, **common)
    chunked = fm.mollify(f, x, chunk_size=chunk, **common)
    pieces = torch.cat([fm.mollify(f, x[:split], chunk_size=chunk, **common),
                        fm.mollify(f, x[split:], example_offset=split, **common)])
    assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    assert torch.allclose(pieces, whole, rtol=1e-5, atol=1e-6)
