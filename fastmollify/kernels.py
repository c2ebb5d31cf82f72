"""Mollification kernels: densities, exact samplers, and eps from a coverage (r, alpha).

Five built-in product kernels (methods.md section 1), each a symmetric density ``K(t)`` at
scale 1 sampled exactly by its inverse CDF. ``eps`` scales them: ``z = eps * Z``. Because
``eps`` is calibrated by coverage (a share ``alpha`` of each element's noise within
``+-r``), the scale convention of a base shape does not change the calibrated noise.

>>> import fastmollify as fm
>>> round(fm.kernels.get("gaussian").eps_from(0.1, 0.95), 5)
0.05102

A user's own kernel: ``register("laplace", density=..., inverse_cdf=...)``; it must be
symmetric about 0. ``triton_inverse_cdf`` (a ``@triton.jit`` function of ``u``) lets the
Triton backend fuse it into its perturb kernel; other compiled backends decline it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

__all__ = ["Kernel", "get", "by_id", "register", "unregister", "names", "BUILTIN"]


def _as_tensor(t):
    return t if torch.is_tensor(t) else torch.as_tensor(t, dtype=torch.float64)


@dataclass(frozen=True)
class Kernel:
    """A symmetric mollifier at scale 1.

    ``density(t)`` and ``inverse_cdf(u)`` work on tensors. Built-ins also carry
    ``magnitude(v)``: ``-inverse_cdf(v)`` for ``v`` in (0, 1/2], the form the noise stream
    evaluates (``z = +-magnitude(min(u, 1 - u))``); user kernels get ``inverse_cdf(u)``.
    """

    name: str
    id: int
    density: Callable
    inverse_cdf: Callable
    magnitude: Optional[Callable] = None
    quantile_closed_form: Optional[Callable[[float], float]] = None
    triton_inverse_cdf: object = field(default=None, compare=False)

    @property
    def builtin(self) -> bool:
        return self.magnitude is not None

    def sample(self, u):
        """Kernel samples from uniforms ``u`` in (0, 1) (exact inverse-CDF sampling)."""
        u = _as_tensor(u)
        if self.magnitude is None:
            return self.inverse_cdf(u)
        v = torch.minimum(u, 1 - u)
        return torch.where(u > 0.5, self.magnitude(v), -self.magnitude(v))

    def quantile(self, p: float) -> float:
        """The upper quantile ``Q(p)`` for p in [1/2, 1)."""
        if self.quantile_closed_form is not None:
            return self.quantile_closed_form(p)
        return float(self.inverse_cdf(torch.tensor([p], dtype=torch.float64))[0])

    def eps_from(self, r: float, alpha: float) -> float:
        """The scale that puts a share ``alpha`` of each element's noise within ``+-r``."""
        _check_open_unit("alpha", alpha)
        if not r > 0:
            raise ValueError(f"r must be > 0 (the half-width of the coverage interval), got {r!r}")
        return r / self.quantile((1 + alpha) / 2)

    def mass_within(self, r: float, eps: float) -> float:
        """The share of the noise ``eps * Z`` that lies within ``+-r``."""
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        a = r / eps
        lo, hi = 0.5, 1.0  # bisection on the upper quantile: Q(p) = a
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.quantile(mid) < a:
                lo = mid
            else:
                hi = mid
        return 2 * ((lo + hi) / 2) - 1


def _check_open_unit(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")


_REGISTRY: dict[str, Kernel] = {}


def _builtin(name, id_, density, magnitude, quantile):
    def inverse_cdf(u):
        return Kernel.sample(kernel, u)

    kernel = Kernel(name, id_, density, inverse_cdf, magnitude, quantile)
    _REGISTRY[name] = kernel
    return kernel


def _erfinv(x: float) -> float:
    return float(torch.erfinv(torch.tensor(x, dtype=torch.float64)))


_builtin(
    "gaussian", 0,
    lambda t: torch.exp(-_as_tensor(t) ** 2 / 2) / math.sqrt(2 * math.pi),
    lambda v: -torch.special.ndtri(v),
    lambda p: math.sqrt(2) * _erfinv(2 * p - 1),
)
_builtin(  # the Poisson kernel of the half-plane: Cauchy
    "poisson", 1,
    lambda t: 1 / (math.pi * (1 + _as_tensor(t) ** 2)),
    lambda v: torch.cos(math.pi * v) / torch.sin(math.pi * v),
    lambda p: math.tan(math.pi * (p - 0.5)),
)
_builtin(  # hyperbolic secant
    "hyperbolic", 2,
    lambda t: 0.5 / torch.cosh(math.pi * _as_tensor(t) / 2),
    lambda v: -(2 / math.pi) * torch.log(torch.tan((math.pi / 2) * v)),
    lambda p: (2 / math.pi) * math.log(math.tan(math.pi * p / 2)),
)
_builtin(  # logistic: the derivative of the sigmoid
    "sigmoid", 3,
    lambda t: 0.25 / torch.cosh(_as_tensor(t) / 2) ** 2,
    lambda v: torch.log1p(-v) - torch.log(v),
    lambda p: math.log(p / (1 - p)),
)
_builtin(  # uniform on [-1, 1]
    "rectangular", 4,
    lambda t: torch.where(_as_tensor(t).abs() <= 1, 0.5, 0.0),
    lambda v: 1 - 2 * v,
    lambda p: 2 * p - 1,
)
BUILTIN = tuple(_REGISTRY)
_FIRST_USER_ID = 100


def names() -> tuple[str, ...]:
    """Names of every registered kernel, built-ins first."""
    return tuple(_REGISTRY)


def get(name) -> Kernel:
    """The kernel called ``name`` (or ``name`` itself if it is a Kernel)."""
    if isinstance(name, Kernel):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown kernel {name!r}; choose one of {', '.join(names())} "
            "or add your own with fastmollify.kernels.register(name, density=..., inverse_cdf=...)"
        ) from None


def by_id(id_: int) -> Kernel:
    """The registered kernel with numeric id ``id_`` (the form compiled ops receive)."""
    for kernel in _REGISTRY.values():
        if kernel.id == id_:
            return kernel
    raise ValueError(f"no registered kernel has id {id_!r}")


def _check_symmetric(density: Callable, inverse_cdf: Callable) -> None:
    """Refuse a kernel that is not a symmetric density, checked on a dense grid of u (tails included)."""
    tails = torch.logspace(-7, math.log10(0.05), 200, dtype=torch.float64)
    u = torch.cat([tails, torch.linspace(0.05, 0.5, 2001, dtype=torch.float64)[1:]])  # the lower half, 0.5 last
    q = inverse_cdf(u)
    if not torch.is_tensor(q) or q.shape != u.shape or not torch.isfinite(q).all():
        raise ValueError("inverse_cdf must map a float64 tensor of u in (0, 1) to finite values of the same shape")
    q = q.double()
    scale = float(q.abs().max())
    if not (q.diff() >= 0).all() or not q[-1].abs() <= 1e-9 * max(scale, 1.0):
        raise ValueError("inverse_cdf must be non-decreasing with inverse_cdf(0.5) == 0 (a density symmetric about 0)")
    mirrored = inverse_cdf(1 - u).double()
    if not torch.allclose(q, -mirrored, rtol=1e-6, atol=1e-9 * max(scale, 1.0)):
        worst = int((q + mirrored).abs().argmax())
        raise ValueError(f"inverse_cdf must be symmetric, inverse_cdf(1 - u) == -inverse_cdf(u), but at u = "
                         f"{float(u[worst]):.3g} it gives {float(q[worst]):.6g} and {float(mirrored[worst]):.6g}: "
                         f"a mollifier must be a density symmetric about 0")
    t = q[q.abs() > 0]
    d_pos, d_neg = density(t.abs()).double(), density(-t.abs()).double()
    if not torch.allclose(d_pos, d_neg, rtol=1e-6, atol=1e-12):
        worst = int((d_pos - d_neg).abs().argmax())
        raise ValueError(f"density must be symmetric, density(-t) == density(t), but at t = {float(t[worst].abs()):.4g} "
                         f"it gives {float(d_neg[worst]):.6g} and {float(d_pos[worst]):.6g}")


def register(name: str, *, density: Callable, inverse_cdf: Callable, triton_inverse_cdf=None,
             replace: bool = False) -> Kernel:
    """Add a user kernel: a symmetric density and its inverse CDF (torch functions of tensors).

    ``triton_inverse_cdf``: an optional ``@triton.jit`` function of a float32 ``u`` block
    computing the same inverse CDF, which the Triton backend fuses into its perturb kernel.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if name in BUILTIN or (name in _REGISTRY and not replace):
        raise ValueError(f"a kernel called {name!r} exists; pick another name (or replace=True for your own)")
    if not callable(density) or not callable(inverse_cdf):
        raise TypeError("density and inverse_cdf must be callables taking and returning tensors")
    _check_symmetric(density, inverse_cdf)
    previous = _REGISTRY.get(name)
    id_ = previous.id if previous else max(_FIRST_USER_ID - 1, *(k.id for k in _REGISTRY.values())) + 1
    kernel = Kernel(name, id_, density, inverse_cdf, triton_inverse_cdf=triton_inverse_cdf)
    _REGISTRY[name] = kernel
    return kernel


def unregister(name: str) -> None:
    """Remove a user kernel."""
    if name in BUILTIN:
        raise ValueError(f"{name!r} is built in and cannot be removed")
    get(name)
    del _REGISTRY[name]
