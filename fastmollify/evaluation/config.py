"""Sizes and settings of the evaluation (``FULL``, ``QUICK``), and the two protocols."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Config", "FULL", "QUICK", "Protocol", "DEFAULT", "AUTHORS", "PROTOCOLS", "KERNELS", "ADAPT_CS"]

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular")
ADAPT_CS = (0.95, 0.99, 0.995, 0.999)


@dataclass
class Config:
    """Image counts and method settings. Counts are sized for ~10 minutes on 2 shared CPU cores."""
    shapes_images: int = 64  # localisation / sparseness (shapes test set, data.shapes(k, seed=7))
    faith_images: int = 40  # insertion / deletion
    faith_steps: int = 16
    pic_images: int = 12  # SIC / AIC (about 1 s per image and method on busy cores)
    digits_images: int = 160  # consistency / invariance (digits test split)
    n: int = 50  # input samples (SmoothGrad, ClipGrad, AdaptGrad, mollification)
    m: int = 25  # NoiseGrad weight draws (default protocol)
    fusion: tuple = (10, 10)  # FusionGrad (m, n)
    ig_steps: int = 8  # default protocol: midpoint rule
    ig_n: int = 16  # inner samples per IG step
    noise_level: float = 0.2
    kernel_r: float = 0.4  # paper 1's table: eps from (r, alpha) for each kernel, r a share of the data range
    kernel_alpha: float = 0.95
    authors_m: int = 50  # authors' protocol: NoiseGrad draws
    authors_ig_steps: int = 50  # authors' protocol: left-Riemann steps (+ the clean gradient)
    authors_ig_n: int = 4  # authors' protocol: inner samples per IG step (theirs: 50; cost, see docs)
    zoo_shapes_images: int = 24  # the small ResNet
    zoo_digits_images: int = 160  # the MLP
    sweep_shapes_images: int = 16  # paper 1's eps and alpha sweeps
    sweep_digits_images: int = 64
    sweep_n: int = 20
    sweep_r: tuple = (0.05, 0.1, 0.2, 0.4, 0.8)
    sweep_alpha: tuple = (0.5, 0.8, 0.95, 0.99, 0.999)
    nsweep_images: int = 8
    nsweep_ns: tuple = (2, 4, 8, 16, 32, 64, 128, 256)
    tol: float = 0.2  # tol-driven N: relative standard error of the map
    tol_cap: int = 512
    tol_images: int = 6
    antithetic_images: int = 8
    antithetic_n: int = 64
    noise_images: int = 32  # extra-noise share (analytic, no model calls)
    bias_images: int = 6  # ClipGrad's bias against a high-N reference
    bias_n: int = 50
    bias_ref_n: int = 512
    verify_images: int = 8  # per-image values kept for `evaluate --verify`
    seed: int = 0


FULL = Config()
QUICK = Config(shapes_images=4, faith_images=2, faith_steps=4, pic_images=2, digits_images=6, n=4, m=2, fusion=(2, 2),
               ig_steps=2, ig_n=2, authors_m=2, authors_ig_steps=3, authors_ig_n=2, zoo_shapes_images=2,
               zoo_digits_images=4, sweep_shapes_images=2, sweep_digits_images=4, sweep_n=2, sweep_r=(0.1, 0.4),
               sweep_alpha=(0.8, 0.95), nsweep_images=2, nsweep_ns=(2, 4, 8, 16), tol=0.5, tol_cap=16, tol_images=2,
               antithetic_images=2, antithetic_n=4, noise_images=2, bias_images=2, bias_n=4, bias_ref_n=16,
               verify_images=2)


@dataclass(frozen=True)
class Protocol:
    """How maps are made and compared. ``DEFAULT``: this project's; ``AUTHORS``: the AdaptGrad authors' code."""
    name: str
    target: str  # 'label' (the true class) or 'predicted' (each model's arg-max)
    output: str  # 'logit' or 'softmax'
    include_clean: bool  # input-noise methods and NoiseGrad average N + 1 gradients, the clean one included
    rank: str  # consistency / invariance: 'abs' (|map|) or 'diverging' (signed, 99th-percentile scaled)
    skip_classifier: bool  # NoiseGrad/FusionGrad leave the last linear layer unperturbed
    ig: str  # 'midpoint' (compose.integrated_gradients) or 'authors' (left Riemann + clean, baselines 0 and 1)
    shifted_adaptive_bounds: tuple  # adaptive noise on the +1-shifted digits (data in [1, 2])


DEFAULT = Protocol("default", target="label", output="logit", include_clean=False, rank="abs", skip_classifier=False,
                   ig="midpoint", shifted_adaptive_bounds=(1.0, 2.0))
# The authors keep bounds (0, 1) on the shifted data with absolute distances min(|x - 0|, |x - 1|) = x - 1:
# for x in [1, 2] that is the distance to the nearer bound of (1, 3), so (1, 3) gives exactly their noise.
AUTHORS = Protocol("authors", target="predicted", output="softmax", include_clean=True, rank="diverging",
                   skip_classifier=True, ig="authors", shifted_adaptive_bounds=(1.0, 3.0))
PROTOCOLS = {"default": DEFAULT, "authors": AUTHORS}
