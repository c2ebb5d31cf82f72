"""A Captum-style class, so a Captum user switches in one line.

>>> # captum: NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=50,
>>> #                                                 stdevs=0.1, target=3, abs=False)
>>> # fastmollify: Explainer(model).attribute(x, nt_type="smoothgrad", nt_samples=50, stdevs=0.1, target=3)
"""
from __future__ import annotations

from . import methods

_METHODS = {name: getattr(methods, name) for name in
            ("smoothgrad", "mollify", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad", "gradient")}
_NT_TYPES = {"smoothgrad": "mean", "smoothgrad_sq": "sq", "vargrad": "var"}


class Explainer:
    """``Explainer(model, method="smoothgrad", **options).attribute(inputs, target=...)``.

    ``options`` are the method's keyword arguments (see ``fastmollify.methods``); those given to
    ``attribute`` override them. Captum's names are accepted: ``nt_type`` ('smoothgrad',
    'smoothgrad_sq', 'vargrad'), ``nt_samples`` (n), ``stdevs`` (absolute sigma, one per input
    for tuple inputs), ``nt_samples_batch_size`` (chunk_size). Unlike Captum's Saliency, the
    default is the signed gradient (``abs=False``). The last run's statistics are kept in
    ``last_stats`` (with the backend that ran).
    """

    def __init__(self, model, method: str = "smoothgrad", **options):
        if method not in _METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(_METHODS)}")
        self.model, self.method, self.options = model, method, options
        self.last_stats = None

    def attribute(self, inputs, target=None, additional_forward_args=None, *, nt_type=None, nt_samples=None,
                  stdevs=None, nt_samples_batch_size=None, **options):
        """Attributions for ``inputs`` (a tensor, or a tuple for tuple inputs)."""
        merged = {**self.options, **options}
        if nt_type is not None:
            if nt_type not in _NT_TYPES:
                raise ValueError(f"nt_type must be one of {', '.join(_NT_TYPES)}, got {nt_type!r}")
            merged["reduce"] = _NT_TYPES[nt_type]
        for captum_name, value, ours in (("nt_samples", nt_samples, "n"), ("stdevs", stdevs, "sigma"),
                                         ("nt_samples_batch_size", nt_samples_batch_size, "chunk_size")):
            if value is not None:
                if ours == "sigma" and self.method not in ("smoothgrad", "clipgrad", "fusiongrad"):
                    raise ValueError(f"stdevs sets an absolute Gaussian sigma; method {self.method!r} has none")
                merged[ours] = value
        reduce = merged.get("reduce", "mean")
        merged["reduce"] = "stats"
        stats = _METHODS[self.method](self.model, inputs, target,
                                      additional_forward_args=additional_forward_args, **merged)
        self.last_stats = stats
        is_tuple = isinstance(stats, tuple)
        if reduce == "stats":
            return stats
        maps = tuple(s.reduce(reduce) for s in (stats if is_tuple else (stats,)))
        return maps if is_tuple else maps[0]
