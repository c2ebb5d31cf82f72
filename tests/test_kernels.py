"""Kernels: densities, eps from coverage, and user kernels, against closed forms."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate

import fastmollify as fm
from fastmollify import kernels

# Share of eps * Z within +-r, written out from methods.md's table.
MASS = {
    "gaussian": lambda r, e: math.erf(r / (e * math.sqrt(2))),
    "poisson": lambda r, e: 2 / math.pi * math.atan(r / e),
    "hyperbolic": lambda r, e: 4 / math.pi * math.atan(math.exp(math.pi * r / (2 * e))) - 1,
    "sigmoid": lambda r, e: math.tanh(r / (2 * e)),
    "rectangular": lambda r, e: min(1.0, r / e),
}


def test_published_gaussian_check():
    assert kernels.get("gaussian").eps_from(0.1, 0.95) == pytest.approx(0.05102, abs=5e-6)


@pytest.mark.parametrize("name", kernels.BUILTIN)
@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.95, 0.99])
def test_eps_from_gives_the_coverage(name, alpha):
    eps = kernels.get(name).eps_from(0.3, alpha)
    assert MASS[name](0.3, eps) == pytest.approx(alpha, abs=1e-9)
    assert kernels.get(name).mass_within(0.3, eps) == pytest.approx(alpha, abs=1e-9)


@pytest.mark.parametrize("name", kernels.BUILTIN)
def test_density_is_normalised_and_matches_mass(name):
    density = kernels.get(name).density
    f = lambda t: float(density(torch.tensor(t, dtype=torch.float64)))  # noqa: E731
    support = (-1, 1) if name == "rectangular" else (-np.inf, np.inf)
    total = integrate.quad(f, *support, limit=200)[0]
    assert total == pytest.approx(1, abs=1e-6)
    within = integrate.quad(f, -0.7, 0.7)[0]
    assert within == pytest.approx(MASS[name](0.7, 1.0), abs=1e-7)


@pytest.mark.parametrize("name", kernels.BUILTIN)
def test_empirical_coverage(name):
    kernel = kernels.get(name)
    eps = kernel.eps_from(0.2, 0.9)
    z = eps * kernel.sample(torch.rand(200_000, dtype=torch.float64))
    share = float((z.abs() <= 0.2).double().mean())
    assert share == pytest.approx(0.9, abs=4 * math.sqrt(0.9 * 0.1 / 200_000))


def test_bad_kernel_arguments():
    with pytest.raises(ValueError, match="unknown kernel 'laplce'"):
        kernels.get("laplce")
    with pytest.raises(ValueError, match="alpha"):
        kernels.get("gaussian").eps_from(0.1, 1.0)
    with pytest.raises(ValueError, match="r must be > 0"):
        kernels.get("gaussian").eps_from(0.0, 0.5)


def _laplace_inverse_cdf(u):
    return -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())


def test_user_kernel_registration_and_use():
    laplace = kernels.register("test-laplace", density=lambda t: 0.5 * torch.exp(-torch.as_tensor(t).abs()),
                               inverse_cdf=_laplace_inverse_cdf, replace=True)
    try:
        assert laplace.id >= 100 and "test-laplace" in kernels.names()
        # coverage of a Laplace: 1 - exp(-r/eps)
        eps = laplace.eps_from(0.5, 0.8)
        assert 1 - math.exp(-0.5 / eps) == pytest.approx(0.8, rel=1e-9)
        assert laplace.mass_within(0.5, eps) == pytest.approx(0.8, abs=1e-9)
        # the mollified gradient of sin(w x) is w cos(w x) / (1 + (w eps)^2) for a Laplace kernel
        x = torch.linspace(-1, 1, 6).reshape(1, 6)
        w = torch.tensor([0.5, 1.0, 2.0, 3.0, 1.5, 2.5])
        stats = fm.mollify(lambda t: (torch.sin(w * t)).sum(1), x, kernel="test-laplace", eps=0.4, n=4000,
                           reduce="stats")
        exact = w * torch.cos(w * x) / (1 + (w * 0.4) ** 2)
        assert ((stats.mean - exact).abs() <= 5 * stats.stderr + 1e-6).all()
    finally:
        kernels.unregister("test-laplace")


def test_user_kernel_must_be_symmetric():
    with pytest.raises(ValueError, match="symmetric"):
        kernels.register("skewed", density=lambda t: t, inverse_cdf=lambda u: -torch.log1p(-u))
    with pytest.raises(ValueError, match="exists"):
        kernels.register("gaussian", density=lambda t: t, inverse_cdf=_laplace_inverse_cdf)
