"""Compatibility name for ``fastmollify.evaluation`` (``python -m fastmollify evaluate``)."""
from .evaluation import AUTHORS, DEFAULT, FULL, QUICK, Config, run, verify  # noqa: F401

__all__ = ["run", "verify", "Config", "FULL", "QUICK", "DEFAULT", "AUTHORS"]
