"""The public methods: SmoothGrad, mollification, AdaptGrad, ClipGrad, NoiseGrad, FusionGrad.

Every method takes ``(model, inputs, target=None)`` and these common options:

* ``seed=0``: the noise stream's seed; same seed, same map, whatever the chunking, batch
  split (``example_offset``: the global index of ``inputs[0]``) or backend.
* ``chunk_size=None``: samples per forward/backward (None: sized from the first chunk's
  measured memory and a budget, see ``fastmollify.chunking``; halved and retried on
  out-of-memory). Memory is set by the chunk, not by ``n``.
* ``reduce="mean"``: ``"mean"`` (SmoothGrad), ``"sq"`` (SmoothGrad-squared), ``"var"``
  (VarGrad, population variance as in Captum) or ``"stats"`` (a ``Stats`` with ``mean``,
  ``var``, ``stderr``, ``n``, ``backend``, ``seed``).
* ``backend="auto"``: ``"reference"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or auto.
* ``output="logit"`` or ``"softmax"`` (explain the class probability, as the AdaptGrad
  paper did); ``additional_forward_args``: extra model arguments (per-example tensors are
  tiled with the samples); ``abs=False``: average ``|gradient|`` (Captum Saliency's default).
* ``progress=None``: a progress bar on long runs (None: only on a terminal).

``model`` maps a batch ``[B, ...]`` to ``[B, K]`` scores (``target`` picks one per example) or
``[B]``. Tuple inputs give tuple results. Parameters' ``requires_grad`` flags, weights,
buffers and the train/eval mode are as they were after every call, even one that raised, and
threads may share a model (``fastmollify.guard``). An option a method does not take, or one it
would ignore, is refused (``check_options``).
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from . import checks, engine, kernels, layers
from .ops import ADAPTIVE, FIXED, RANGE
from .stats import REDUCTIONS

METHODS = ("smoothgrad", "mollify", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad", "gradient")
__all__ = [*METHODS, "check_options", "COMMON_OPTIONS"]

COMMON_OPTIONS = ("seed", "chunk_size", "reduce", "backend", "output", "additional_forward_args",
                  "example_offset", "abs", "progress", "tol", "antithetic", "layer", "layer_output", "noise_at")
CAPTUM_NAMES = ("nt_type", "nt_samples", "stdevs", "nt_samples_batch_size")  # what fm.Explainer translates


def _per_input(name: str, value, count: int) -> tuple:
    if isinstance(value, (tuple, list)) and not (name == "bounds" and _is_pair(value)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries for {count} inputs: give one per input or one for all")
        return tuple(value)
    return (value,) * count


def _is_pair(bounds) -> bool:
    return len(bounds) == 2 and not any(isinstance(b, (tuple, list)) for b in bounds)


def _bounds(x: torch.Tensor, bounds, name: str):
    """``(lo, hi, scalar)``: float32 tensors with 1 or D elements on x's device."""
    if bounds is None:
        lo, hi = x.min().float().reshape(1), x.max().float().reshape(1)
        if not lo < hi:
            raise ValueError(f"{name} is constant, so its value range is empty: pass bounds=(lo, hi)")
        return lo, hi, True
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers or tensors broadcastable to one example, "
                         f"got {bounds!r}")
    example = x.shape[1:]
    ends = []
    for end_name, end in zip(("lo", "hi"), bounds):
        try:
            t = torch.as_tensor(end, dtype=torch.float32, device=x.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"bounds {end_name} must be a number or a tensor broadcastable to one example of {name}, "
                            f"got {end!r}") from None
        try:
            shape = torch.broadcast_shapes(t.shape, example)
        except RuntimeError:
            shape = None
        if shape != example:
            raise ValueError(f"bounds {end_name} has shape {tuple(t.shape)}, which does not broadcast to one "
                             f"example of {name} {tuple(example)} (bounds are per element, per channel or scalar)")
        if not torch.isfinite(t).all():
            raise ValueError(f"bounds {end_name} must be finite")
        ends.append(t.reshape(1) if t.numel() == 1 else t.expand(example).reshape(-1).contiguous())
    lo, hi = ends
    if not (lo < hi).all():
        raise ValueError("bounds: lo must be < hi everywhere; pass bounds=(lo, hi) with lo < hi")
    return lo, hi, lo.numel() == 1 and hi.numel() == 1


def _check_within(x: torch.Tensor, lo, hi, name: str) -> None:
    """Refuse inputs outside [lo, hi]: one pass for the per-element extremes over the batch."""
    flat = x.detach().reshape(x.shape[0], -1)
    low, high = torch.aminmax(flat, dim=0) if lo.numel() > 1 else torch.aminmax(flat)
    if not ((low.float() >= lo) & (high.float() <= hi)).all():
        raise ValueError(f"{name} has values outside bounds [lo, hi] (its range is [{float(low.min()):.4g}, "
                         f"{float(high.max()):.4g}]): widen bounds or clamp the inputs into them")


def _gaussian_noise(x, k, name, sigma, noise_level, bounds, clip=False):
    """SmoothGrad/ClipGrad noise: absolute ``sigma`` or ``noise_level * (hi - lo)`` (default 0.2)."""
    if sigma is not None and noise_level is not None:
        raise ValueError("pass either sigma (absolute) or noise_level (a share of hi - lo), not both")
    if sigma is not None and bounds is not None and not clip:
        raise ValueError("bounds only set sigma from noise_level; with an absolute sigma they would be ignored: "
                         "drop bounds, or pass noise_level instead of sigma")
    need_bounds = clip or sigma is None
    lo = hi = None
    if need_bounds:
        lo, hi, scalar = _bounds(x, bounds, name)
        if clip:
            _check_within(x, lo, hi, name)
    gaussian = kernels.get("gaussian")
    if sigma is not None:
        return engine.InputNoise(gaussian, checks.positive("sigma", sigma), FIXED, lo, hi, clip)
    level = checks.positive("noise_level", 0.2 if noise_level is None else noise_level)
    if scalar:
        return engine.InputNoise(gaussian, level * float(hi - lo), FIXED, lo, hi, clip)
    return engine.InputNoise(gaussian, level, RANGE, lo, hi, clip)


def _weight_indices(model, params) -> list[int]:
    if not isinstance(model, torch.nn.Module):
        raise TypeError("weight noise needs the model as an nn.Module: its parameters get the noise")
    all_params = list(model.parameters())
    if params is None:
        return [i for i, p in enumerate(all_params) if p.is_floating_point()]
    if isinstance(params, (str, torch.Tensor)) or not hasattr(params, "__iter__"):
        raise TypeError(f"params must be a list of parameter names or parameters (e.g. params=['fc.weight']), "
                        f"got {type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError("params is empty: name the parameters to perturb, or pass params=None for all")
    names = dict(model.named_parameters())
    positions = {id(p): i for i, p in enumerate(all_params)}
    indices = []
    for item in params:
        p = names.get(item) if isinstance(item, str) else item
        if p is None or id(p) not in positions:
            raise ValueError(f"params entry {item!r} is not a parameter of the model; pass names from "
                             f"model.named_parameters() or the parameters themselves")
        indices.append(positions[id(p)])
    return sorted(set(indices))


def _own_options(method: str) -> tuple[str, ...]:
    """The keyword options a public method takes besides the common ones."""
    signature = inspect.signature(globals()[method])
    return tuple(name for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY)


def check_options(method: str, options: dict, extra: tuple = ()) -> None:
    """Refuse an option ``method`` does not take, naming it, the valid ones, and who takes it."""
    valid = _own_options(method) + tuple(extra) + COMMON_OPTIONS
    for name in options:
        if name in valid:
            continue
        if name in CAPTUM_NAMES:
            hint = (f" ({name!r} is Captum's name: fm.Explainer(model, method={method!r}).attribute(...) accepts "
                    f"Captum's names)")
        else:
            owners = [other for other in METHODS if other != method and name in _own_options(other)]
            hint = f" ({name!r} is an option of {', '.join(owners)})" if owners else ""
        raise TypeError(f"{method} got an unknown option {name!r}{hint}; its options are: {', '.join(valid)}")


def _explain(method, model, inputs, target, noise_for, options, *, n=1, include_clean=False, weight_draws=0,
             weight_sigma=0.0, params=None, extra=()):
    check_options(method, options, extra)
    if noise_for is None and not weight_draws and (options.get("tol") is not None or options.get("antithetic")):
        raise ValueError("gradient has no noise: tol and antithetic apply to the smoothing methods")
    return _run(model, inputs, target, noise_for, n=n, include_clean=include_clean, weight_draws=weight_draws,
                weight_sigma=weight_sigma, params=params, **options)


def _run(model, inputs, target, noise_for, *, n, include_clean, weight_draws, weight_sigma, params, seed=0,
         chunk_size=None, reduce="mean", backend="auto", output="logit", additional_forward_args=None,
         example_offset=0, abs=False, progress=None, tol=None, antithetic=False, layer=None, layer_output=None,
         noise_at=None):
    if torch.is_inference_mode_enabled():
        raise ValueError("fastmollify needs autograd: call it outside torch.inference_mode()")
    checks.model(model)
    checks.choice("reduce", reduce, REDUCTIONS)
    checks.choice("output", output, ("logit", "softmax"))
    n = checks.positive_int("n", n)
    if tol is not None:
        tol = checks.open_unit("tol", tol, " (the relative standard error at which an example stops)")
        if reduce not in ("mean", "stats"):
            raise ValueError(f"tol stops each example at a relative standard error of its mean map; with "
                             f"reduce={reduce!r} use reduce='mean' or 'stats'")
    antithetic = checks.boolean("antithetic", antithetic)
    include_clean = checks.boolean("include_clean", include_clean)
    if antithetic:
        if noise_for is not None and n % 2:
            raise ValueError(f"antithetic samples come in pairs (z, -z): n must be even, got n={n}")
        if weight_draws % 2:
            raise ValueError(f"antithetic weight draws come in pairs: m must be even, got m={weight_draws}")
        if include_clean:
            raise ValueError("include_clean adds a sample outside the antithetic pairs: use one or the other")
    plan = engine.Plan(
        noises=None, n=n, seed=checks.seed(seed), weight_draws=weight_draws, weight_sigma=weight_sigma,
        weight_params=_weight_indices(model, params) if weight_draws else None,
        include_clean=include_clean, abs=checks.boolean("abs", abs),
        chunk_size=None if chunk_size is None else checks.positive_int("chunk_size", chunk_size),
        backend=backend, progress=checks.boolean("progress", progress, allow_none=True), tol=tol,
        antithetic=antithetic)
    extra = additional_forward_args
    extra = () if extra is None else tuple(extra) if isinstance(extra, (tuple, list)) else (extra,)
    noise_at = checks.choice("noise_at", noise_at, (None, "layer", "input"))
    if layer is None:
        if layer_output is not None or noise_at is not None:
            raise ValueError("layer_output and noise_at concern the layer to explain: they need layer=")
    elif noise_at != "input" and weight_draws:
        raise ValueError("layer= with weight noise at the layer is refused: the layer's clean output changes "
                         "with every weight draw, so its noise would not be centred on it; pass noise_at='input' "
                         "(the gradient at the layer, noise on the inputs) or use an input-noise method")
    if layer is None or noise_at == "input":
        tensors, is_tuple = checks.inputs_tuple(inputs, model)
        names = [f"inputs[{k}]" if is_tuple else "inputs" for k in range(len(tensors))]
        objective = engine.Objective
        if layer is not None:  # one map: the layer's (the probe is the first model call)
            _, objective, _ = layers.site(model, tensors, extra, layer, layer_output, noise_at="input")
            is_tuple = False
    else:  # the probe is the first model call
        tensors, objective, name = layers.site(model, inputs, extra, layer, layer_output)
        is_tuple, names = False, [f"the output of layer {name!r}"]
    batch = tensors[0].shape[0]
    plan.example_offset = checks.stream_index("example_offset", example_offset, batch)
    checks.stream_index("the sample index", 0, n * max(weight_draws, 1), " (n * m samples)")
    target = checks.target(target, batch, tensors[0].device)
    plan.noises = None if noise_for is None else [noise_for(x, k, names[k]) for k, x in enumerate(tensors)]
    stats = engine.run(objective(model, target, output, extra, batch), tensors, plan, model=model)
    if reduce == "stats":
        return tuple(stats) if is_tuple else stats[0]
    maps = tuple(s.reduce(reduce) for s in stats)
    return maps if is_tuple else maps[0]


def _count(inputs) -> int:
    return len(inputs) if isinstance(inputs, (tuple, list)) else 1


def _gaussian_noise_for(count, *, noise_level=None, sigma=None, bounds=None, clip=False):
    """SmoothGrad's (``clip``: ClipGrad's) noise builder: ``noise_for(x, k, name)``."""
    sigmas, all_bounds = _per_input("sigma", sigma, count), _per_input("bounds", bounds, count)
    return lambda x, k, name: _gaussian_noise(x, k, name, sigmas[k], noise_level, all_bounds[k], clip)


def _kernel_noise_for(count, *, kernel="gaussian", eps=None, r=None, alpha=None, adaptive=False, bounds=None):
    """Mollification's noise builder: a fixed scale (eps, or r with alpha), or with ``adaptive`` each
    element's ``eps_j = kernel.eps_from(r_j, alpha)``, r_j its distance to the nearer bound."""
    chosen = kernels.get(kernel)
    alpha_value = checks.open_unit("alpha", 0.95 if alpha is None else alpha, " (the share of noise within +-r)")
    if checks.boolean("adaptive", adaptive):
        if eps is not None or r is not None:
            raise ValueError("adaptive=True sets each element's scale from its distance to the bounds: drop eps and r")
        scale = chosen.eps_from(1.0, alpha_value)  # eps is linear in r
        all_bounds = _per_input("bounds", bounds, count)

        def noise_for(x, k, name):
            lo, hi, _ = _bounds(x, all_bounds[k], name)
            _check_within(x, lo, hi, name)
            return engine.InputNoise(chosen, scale, ADAPTIVE, lo, hi)

        return noise_for
    if bounds is not None:
        raise ValueError("bounds are used by adaptive=True only; without it they would be ignored")
    if (eps is None) == (r is None):
        raise ValueError("mollify needs exactly one scale: eps=... (absolute) or r=... (with alpha, default 0.95), "
                         "or adaptive=True with bounds")
    if eps is not None and alpha is not None:
        raise ValueError("alpha sets eps from r; with eps given it would be ignored: pass r=... with alpha, or eps alone")
    scale = checks.positive("eps", eps) if eps is not None else chosen.eps_from(checks.positive("r", r), alpha_value)
    return lambda x, k, name: engine.InputNoise(chosen, scale)


def _adaptgrad_noise_for(count, *, c=0.95, bounds=None):
    """AdaptGrad's noise builder: the Gaussian kernel with adaptive scale and coverage c."""
    c = checks.open_unit("c", c, " (the probability that a sample stays within the bounds)")
    return _kernel_noise_for(count, kernel="gaussian", alpha=c, adaptive=True, bounds=bounds)


NOISE_BUILDERS = {"smoothgrad": _gaussian_noise_for, "clipgrad": lambda count, **o: _gaussian_noise_for(
    count, clip=True, **o), "mollify": _kernel_noise_for, "adaptgrad": _adaptgrad_noise_for}
NOISE_OPTIONS = {"smoothgrad": ("noise_level", "sigma", "bounds"), "clipgrad": ("noise_level", "sigma", "bounds"),
                 "mollify": ("kernel", "eps", "r", "alpha", "adaptive", "bounds"), "adaptgrad": ("c", "bounds")}


def gradient(model, inputs, target=None, **options):
    """The plain input gradient (the n = 1, no-noise case), through the same engine."""
    return _explain("gradient", model, inputs, target, None, options)


def smoothgrad(model, inputs, target=None, *, n: int = 50, noise_level: Optional[float] = None, sigma=None,
               bounds=None, **options):
    """SmoothGrad: the mean gradient over ``n`` Gaussian perturbations ``x + sigma * z``.

    Give ``sigma`` (absolute; one per input for tuple inputs) or ``noise_level`` (default 0.2):
    ``sigma = noise_level * (hi - lo)`` with ``bounds=(lo, hi)`` scalars or tensors
    broadcastable to one example (per channel, per element), defaulting to the inputs' min and
    max. Giving both, or bounds with sigma, is refused (one of them would be ignored).
    """
    noise_for = _gaussian_noise_for(_count(inputs), noise_level=noise_level, sigma=sigma, bounds=bounds)
    return _explain("smoothgrad", model, inputs, target, noise_for, options, n=n)


def mollify(model, inputs, target=None, *, kernel="gaussian", eps: Optional[float] = None, r: Optional[float] = None,
            alpha: Optional[float] = None, adaptive: bool = False, bounds=None, n: int = 50, **options):
    """Monte Carlo gradient mollification: the mean gradient over ``x + eps * z``, ``z ~ kernel``.

    ``kernel``: 'gaussian', 'poisson', 'hyperbolic', 'sigmoid', 'rectangular' or a registered
    one. Give ``eps`` (absolute scale), or ``r`` and ``alpha`` (default 0.95): eps such that a
    share alpha of each element's noise lies within +-r (paper 1, eq. 30). ``adaptive=True``
    (paper 2's idea for any kernel): each element gets ``eps_j = eps_from(r_j, alpha)`` with r_j
    its distance to the nearer of ``bounds`` (default the inputs' min and max), so a share alpha
    of its noise stays in range; the Gaussian case is AdaptGrad with ``c = alpha``.
    """
    noise_for = _kernel_noise_for(_count(inputs), kernel=kernel, eps=eps, r=r, alpha=alpha, adaptive=adaptive,
                                  bounds=bounds)
    return _explain("mollify", model, inputs, target, noise_for, options, n=n)


def adaptgrad(model, inputs, target=None, *, c: float = 0.95, bounds=None, n: int = 50,
              include_clean: bool = False, **options):
    """AdaptGrad: SmoothGrad with a per-element sigma that keeps each sample in range.

    ``sigma_j = min(x_j - lo_j, hi_j - x_j) / (sqrt(2) erfinv(c))`` (the authors' code), so a
    sample stays in ``[lo, hi]`` with probability at least ``c``; elements on a bound are
    never perturbed. ``bounds`` default to the inputs' min and max; for ImageNet-normalised
    inputs the paper used (-2.117904, 2.64). ``include_clean`` adds the clean gradient as one
    more sample (the authors' loop: the mean of n + 1 gradients).
    """
    noise_for = _adaptgrad_noise_for(_count(inputs), c=c, bounds=bounds)
    return _explain("adaptgrad", model, inputs, target, noise_for, options, n=n, include_clean=include_clean)


def clipgrad(model, inputs, target=None, *, noise_level: Optional[float] = None, sigma=None, bounds=None, n: int = 50,
             **options):
    """ClipGrad (the AdaptGrad paper's baseline): SmoothGrad with every sample clamped into bounds.

    ``sigma`` or ``noise_level`` (default 0.2) as in ``smoothgrad``; ``bounds`` clamp the samples.
    """
    noise_for = _gaussian_noise_for(_count(inputs), noise_level=noise_level, sigma=sigma, bounds=bounds, clip=True)
    return _explain("clipgrad", model, inputs, target, noise_for, options, n=n)


def noisegrad(model, inputs, target=None, *, m: int = 25, weight_sigma: float = 0.2, params=None, **options):
    """NoiseGrad: the mean gradient over ``m`` models with weights ``w * (1 + weight_sigma * z)``.

    ``params``: the parameters to perturb (names or tensors; default all). The clean weights are
    never written: for the call the parameters point at a buffer of noisy weights (one more copy
    of the weights in memory), and they point back, even if the call raised or was interrupted.
    Weight-noise calls on one model run one at a time (other threads' calls on it wait).
    """
    return _explain("noisegrad", model, inputs, target, None, options, weight_draws=checks.positive_int("m", m),
                    weight_sigma=checks.positive("weight_sigma", weight_sigma), params=params)


def fusiongrad(model, inputs, target=None, *, m: int = 10, n: int = 10, weight_sigma: float = 0.2, params=None,
               inner: str = "smoothgrad", **options):
    """FusionGrad (NoiseGrad++): ``m`` weight draws x ``n`` input draws each.

    Weight noise as in ``noisegrad``; input noise from ``inner``: 'smoothgrad' (default; its
    ``sigma``/``noise_level``/``bounds``, the original used an absolute ``sigma=0.4``),
    'clipgrad', 'mollify' (``kernel``, ``eps``/``r``/``alpha``, ``adaptive``, ``bounds``) or
    'adaptgrad' (``c``, ``bounds``; the AdaptGrad authors' NoiseGrad combination). The mean is over
    all ``m * n`` gradients; its standard error treats the m weight draws as the independent units.
    """
    if inner not in NOISE_BUILDERS:
        raise ValueError(f"inner must be one of {', '.join(map(repr, NOISE_BUILDERS))} (the input noise), got {inner!r}")
    noise_options = {k: options.pop(k) for k in list(options) if k in NOISE_OPTIONS[inner]}
    noise_for = NOISE_BUILDERS[inner](_count(inputs), **noise_options)
    return _explain("fusiongrad", model, inputs, target, noise_for, options, n=n,
                    weight_draws=checks.positive_int("m", m),
                    weight_sigma=checks.positive("weight_sigma", weight_sigma), params=params,
                    extra=NOISE_OPTIONS[inner])
