"""Plotting: matplotlib's pyplot for the scripts' PNGs, when matplotlib is installed."""
from __future__ import annotations


def plt():
    """matplotlib's pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except Exception:
        return None
    return pyplot
