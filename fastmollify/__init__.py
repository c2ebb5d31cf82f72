"""fastmollify: fused gradient-smoothing attributions for PyTorch models.

SmoothGrad, Monte Carlo gradient mollification with five kernels, AdaptGrad, ClipGrad,
NoiseGrad and FusionGrad, with SmoothGrad-squared, VarGrad and standard-error reductions,
reproducible noise and memory flat in the sample count. Importing never fails: compiled
backends that are missing fall back to the pure-PyTorch reference.
"""
from . import compose, data, kernels, metrics, models, noise, viz
from .compose import gradient_x_input, integrated_gradients
from .dataset import attribute_dataset, open_store
from .explainer import Explainer
from .gradcam import gradcam
from .layers import token_scores
from .methods import adaptgrad, clipgrad, fusiongrad, gradient, mollify, noisegrad, smoothgrad
from .ops.dispatch import availability
from .quantus_adapter import quantus_explain_func
from .stats import Stats

__version__ = "0.1.0"
__all__ = ["smoothgrad", "mollify", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad", "gradient", "Explainer",
           "Stats", "integrated_gradients", "gradient_x_input", "quantus_explain_func", "availability",
           "attribute_dataset", "open_store", "gradcam", "token_scores", "kernels", "noise", "metrics", "compose", "data", "models", "viz"]
