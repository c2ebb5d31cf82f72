"""The three ops every backend implements, with one signature everywhere.

``perturb(x, out, lo, hi, *, seed, stream, sample_start, example_offset, kernel, scale,
sigma_mode, clip)``
    ``x``: ``[B, D]`` contiguous floating inputs; ``out``: ``[S, B, D]`` of the same dtype.
    Writes ``out[s, b, j] = x[b, j] + sigma_j * z`` with ``z`` the noise stream's sample
    ``(seed, stream, sample_start + s, example_offset + b, j)`` of kernel id ``kernel``.
    ``sigma_mode``: ``FIXED`` (``sigma = scale``), ``RANGE`` (``scale * (hi - lo)``) or
    ``ADAPTIVE`` (``scale * min(x - lo, hi - x)``, AdaptGrad). ``clip`` clamps into
    ``[lo, hi]`` (ClipGrad). ``lo``/``hi``: contiguous float32 with 1 or D elements.
    Arithmetic in float32 (float64 for float64 inputs), rounded once into ``out``.

``accumulate(mean, m2, grads, weights, count)``
    Merges the ``[S, B, D]`` gradients (per-sample ``weights`` ``[S]`` float32, or None for
    ones) into the float32 running ``mean``/``m2`` ``[B, D]`` in place; ``count`` is the weight
    already merged. ``var = m2 / total weight``.

``perturb_weights(clean, out, *, seed, draw, index, sigma)``
    ``out = clean * (1 + sigma * z)``, ``z`` Gaussian from the weight stream with counter
    ``(j >> 2, draw, index, 1)``; any shape, row-major element order.

``perturb_weights_many(cleans, outs, *, seed, draw, indices, sigma)``
    ``perturb_weights`` for every ``(cleans[i], outs[i], indices[i])`` at once: one launch for all
    the parameters of a model on the CUDA and Triton backends (multi-tensor apply); tensors of several dtypes
    are grouped by dtype. The same values as the calls one by one.
"""
FIXED, RANGE, ADAPTIVE = 0, 1, 2
SIGMA_MODES = {"fixed": FIXED, "range": RANGE, "adaptive": ADAPTIVE}
