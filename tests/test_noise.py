"""The noise stream against published vectors and independent float64/numpy computations."""
import math

import numpy as np
import pytest
import torch
from scipy import stats as sstats

from fastmollify import kernels, noise
from fastmollify.ops import reference

# Random123's known-answer vectors for philox4x32_10 (kat_vectors, Salmon et al. 2011).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in noise.philox4x32_10(counter, key)) == expected


def _philox_python(counter, key):
    """Philox4x32-10 in Python integers, written from the Random123 paper."""
    c, k = list(counter), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & 0xFFFFFFFF, p1 & 0xFFFFFFFF, ((p0 >> 32) ^ c[3] ^ k[1]) & 0xFFFFFFFF,
             p0 & 0xFFFFFFFF]
    return c


def test_philox_matches_python_integers_on_random_counters():
    rng = np.random.default_rng(7)
    counters = rng.integers(0, 2**32, size=(200, 4), dtype=np.uint64).astype(np.int64)
    keys = rng.integers(0, 2**32, size=(200, 2), dtype=np.uint64).astype(np.int64)
    got = noise.philox4x32_10(torch.from_numpy(counters), torch.from_numpy(keys)).tolist()
    assert got == [_philox_python(c, k) for c, k in zip(counters.tolist(), keys.tolist())]


def test_stream_counter_layout():
    """Element j of (sample s, example b) is word j % 4 of Philox((j >> 2, s, b, stream), key(seed))."""
    seed = 0x1234_5678_9ABC_DEF0
    bits = noise.random_bits(seed, 3, [5, 9], [2, 70000], 10)
    key = (seed & 0xFFFFFFFF, seed >> 32)
    for si, s in enumerate([5, 9]):
        for bi, b in enumerate([2, 70000]):
            for j in range(10):
                assert int(bits[si, bi, j]) == _philox_python((j >> 2, s, b, 3), key)[j % 4]


def test_symmetric_uniform_is_exact():
    """(v, upper) equals the exact float64 uniform u = (k + 0.5) 2^-24 folded at 1/2."""
    bits = torch.cat([noise.random_bits(99, 0, [0], [0], 4096).reshape(-1),
                      torch.tensor([0, 255, 0x7FFFFF00, 0x80000000, 0xFFFFFFFF])])
    v, upper = noise.symmetric_uniform(bits)
    u = ((bits >> 8).double() + 0.5) / 2**24
    assert torch.equal(v.double(), torch.minimum(u, 1 - u))
    assert torch.equal(upper, u > 0.5)
    assert float(v.min()) > 0 and float(v.max()) < 0.5


def test_user_uniform_rounds_toward_zero_and_stays_inside():
    bits = torch.tensor([0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x12345678])
    u = noise.user_uniform(bits)
    exact = ((bits >> 8).double() + 0.5) / 2**24
    assert (u.double() <= exact).all() and (exact - u.double() <= 2**-25).all()
    assert float(u.min()) > 0 and float(u.max()) < 1


def test_box_muller_matches_numpy_float64():
    bits = noise.random_bits(5, 0, [0, 1], [0, 1, 2], 4000)
    z = reference.stream_noise(kernels.get("gaussian"), 5, 0, [0, 1], [0, 1, 2], 4000)
    u = (((bits >> 8).numpy().astype(np.float64) + 0.5) / 2**24).reshape(2, 3, -1, 2, 2)
    radius = np.sqrt(-2 * np.log(u[..., 0]))
    angle = 2 * np.pi * u[..., 1]
    expected = np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1).reshape(2, 3, -1)[..., :4000]
    np.testing.assert_allclose(z.numpy(), expected, rtol=2e-5, atol=2e-6)  # float32 transcendental rounding


@pytest.mark.parametrize("name,dist", [
    ("gaussian", sstats.norm()), ("poisson", sstats.cauchy()), ("sigmoid", sstats.logistic()),
    ("rectangular", sstats.uniform(-1, 2)), ("hyperbolic", sstats.hypsecant(scale=2 / math.pi)),
])
def test_stream_samples_follow_the_kernel(name, dist):
    """Kolmogorov-Smirnov against scipy's distribution (independent of our formulas)."""
    z = reference.stream_noise(kernels.get(name), 11, 0, [0], range(4), 5000).reshape(-1).double().numpy()
    assert sstats.kstest(z, dist.cdf).pvalue > 1e-3


@pytest.mark.parametrize("name,ppf", [
    ("gaussian", sstats.norm.ppf), ("poisson", sstats.cauchy.ppf), ("sigmoid", sstats.logistic.ppf),
    ("rectangular", sstats.uniform(-1, 2).ppf), ("hyperbolic", sstats.hypsecant(scale=2 / math.pi).ppf),
])
def test_symmetric_transforms_match_scipy_quantiles_in_the_tails(name, ppf):
    bits = torch.tensor([0, 0xFF, 0x12345600, 0x7FFFFF00, 0x80000000, 0xC0000000, 0xFFFFFF00, 0xFFFFFFFF])
    u = ((bits >> 8).double() + 0.5) / 2**24
    if name == "gaussian":
        got = kernels.get(name).sample(u)  # float64: float32 cannot hold u near 1
    else:
        v, upper = noise.symmetric_uniform(bits)
        g = kernels.get(name).magnitude(v)
        got = torch.where(upper, g, -g).double()
    np.testing.assert_allclose(got.numpy(), ppf(u.numpy()), rtol=1e-5, atol=1e-6)


def test_noise_is_a_function_of_indices_only():
    kernel = kernels.get("gaussian")
    together = reference.stream_noise(kernel, 3, 0, range(6), range(5), 13)
    parts = torch.cat([reference.stream_noise(kernel, 3, 0, [s], [2, 3, 4], 13) for s in range(6)])
    assert torch.equal(together[:, 2:], parts)
    other_seed = reference.stream_noise(kernel, 4, 0, range(6), range(5), 13)
    other_stream = reference.stream_noise(kernel, 3, 2, range(6), range(5), 13)
    assert not torch.equal(together, other_seed) and not torch.equal(together, other_stream)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        noise.split_seed(seed)
