"""Paper-style evaluation on the built-in data (``python -m fastmollify evaluate``).

* ``config``: sizes (``FULL``, ``QUICK``) and the two protocols (``DEFAULT``, ``AUTHORS``).
* ``specs``: each table's methods under a protocol; ``authors_ig`` (the authors' IG rule).
* ``measure``: models and data (shipped weights), one method's per-image metric values.
* ``studies``: paper 1's eps and alpha sweeps, the N sweep, tol-driven N, antithetic efficiency,
  paper 2's extra-noise share, ClipGrad's bias.
* ``tables``: markdown tables, paired claims; ``report``: the generated docs; ``run``: all of it.
* ``verify``: rerun a representative subset and compare with a committed ``results.json``.
* ``user``: the tables a torchvision model with user weights allows (sparseness, faithfulness).
"""
from .config import AUTHORS, DEFAULT, FULL, PROTOCOLS, QUICK, Config, Protocol
from .run import run
from .verify import verify

__all__ = ["run", "verify", "Config", "FULL", "QUICK", "Protocol", "DEFAULT", "AUTHORS", "PROTOCOLS"]
