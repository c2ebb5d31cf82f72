"""The polynomials of fastmath.h (and of the Triton backend), fitted and checked over every uniform.

    python csrc/core/fit_polynomials.py

Fits, by iteratively reweighted least squares on Chebyshev nodes (close to minimax):
* LOG: log1p(f) / f on f in [sqrt(1/2) - 1, sqrt(2) - 1), degree 8, relative error;
* COT: D(t) = (1 - t) v cot(pi v), t = v^2 in [0, 1/4], degree 4, relative to cot's scale;
* SECH: H(t) = -(2/pi) log(tan(pi v / 2) / v), t = v^2 in [0, 1/4], degree 5, absolute error.
It prints the float32 coefficients (highest degree first, as the Horner loops read them) and the
error of the float32 formulas, evaluated as the host build does (every operation rounded) and
with multiply-adds contracted (nvcc, compiled Triton), against float64 over all 2^23 values
v = (m + 1/2) 2^-24 the noise stream produces: relative in ulp where |z| >= 1, absolute in
units of 2^-23 below. The reciprocal is modelled correctly rounded (the GPU's refined one is
within 1 ulp of it).
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
EPS = 2.0 ** -23


def fit(fun, a, b, degree, weight, nodes=4000, rounds=30):
    """Coefficients (lowest degree first) of a near-minimax fit of fun on [a, b] under weight."""
    x = (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)
    y, w = fun(x), weight(x)
    basis = np.vander(x, degree + 1, increasing=True)
    reweight = np.ones(nodes)
    for _ in range(rounds):
        c, *_ = np.linalg.lstsq(basis * (w * reweight)[:, None], y * w * reweight, rcond=None)
        error = np.abs((basis @ c - y) * w)
        reweight *= (error / error.max() + 1e-3) ** 0.5
        reweight /= reweight.mean()
    return [F32(ci) for ci in c], float(error.max())


def _round(x):
    return np.asarray(x, dtype=np.float64).astype(F32)


def fma(a, b, c, contract):
    """a b + c in float32: one rounding when contracted, else two."""
    c = np.asarray(c, dtype=np.float64)
    if contract:
        return _round(a.astype(np.float64) * b + c)
    return _round(_round(a.astype(np.float64) * b) + c)


def horner(c, x, contract):
    p = np.full(x.shape, c[-1], dtype=F32)
    for ci in reversed(c[:-1]):
        p = fma(p, x, ci, contract)
    return p


def log_reduce(x):
    ix = x.view(np.int32).astype(np.int64) - 0x3F3504F3
    f = _round(((ix & 0x7FFFFF) + 0x3F3504F3).astype(np.int32).view(F32).astype(np.float64) - 1)
    return f, (ix >> 23).astype(F32)


def main():
    log_c, log_err = fit(lambda f: np.where(f != 0, np.log1p(f) / np.where(f != 0, f, 1), 1.0),
                         np.sqrt(0.5) - 1, np.sqrt(2) - 1, 8, np.ones_like)
    cot_c, cot_err = fit(lambda t: np.where(t > 0, (1 - t) * np.sqrt(t) / np.tan(np.pi * np.sqrt(np.maximum(t, 1e-300))),
                                            1 / np.pi), 0, 0.25, 4, lambda t: 1 / (np.sqrt(t) * (1 - t) + 1e-3))
    sech_c, sech_err = fit(lambda t: np.where(t > 0, -(2 / np.pi) * np.log(np.tan(np.pi / 2 * np.sqrt(np.maximum(t, 1e-300)))
                                                                         / np.sqrt(np.maximum(t, 1e-300))),
                                              -(2 / np.pi) * np.log(np.pi / 2)), 0, 0.25, 5, np.ones_like)
    for name, c, error in (("LOG", log_c, log_err), ("COT", cot_c, cot_err), ("SECH", sech_c, sech_err)):
        print(f"{name} (fit error {error:.2e}), highest degree first:", ", ".join(f"{float(ci):.9g}" for ci in c[::-1]))

    m = np.arange(2 ** 23, dtype=np.float64)
    v64 = (m + 0.5) * 2.0 ** -24
    v = v64.astype(F32)
    ln2 = F32(np.log(2))

    def log32(x, contract):
        f, fe = log_reduce(x)
        return fma(fe, ln2, _round(f.astype(np.float64) * horner(log_c, f, contract)), contract)

    def report(name, got, exact):
        error = np.abs(got.astype(np.float64) - exact)
        big = np.abs(exact) >= 1
        print(f"  {name:10s} {(error[big] / np.abs(exact[big])).max() / EPS:5.2f} ulp (|z| >= 1), "
              f"{error[~big].max() / EPS:5.2f} x 2^-23 absolute below")

    for contract in (False, True):
        print("multiply-adds contracted (GPU)" if contract else "every operation rounded (host)")
        report("log v", log32(v, contract), np.log(v64))
        t = _round(v.astype(np.float64) * v)
        w = fma(-v, t, v, contract)
        report("cauchy", _round(horner(cot_c, t, contract).astype(np.float64) * _round(1 / w.astype(np.float64))),
               1 / np.tan(np.pi * v64))
        sech = fma(log32(v, contract), F32(-2 / np.pi), horner(sech_c, t, contract), contract)
        report("sech", sech, -(2 / np.pi) * np.log(np.tan(np.pi / 2 * v64)))
        report("logistic", log32(_round(_round(1 / v.astype(np.float64)) - np.float64(1)), contract), np.log(1 / v64 - 1))


if __name__ == "__main__":
    main()
