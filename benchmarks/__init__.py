"""fastmollify's benchmarks: N-scaling, ImageNet-size throughput, small models, op bandwidth, peak memory vs n.

Each script runs as ``python -m benchmarks.<script>`` or ``python benchmarks/<script>.py``,
writes rows to ``benchmarks/results/<script>_<cpu|gpu>.json`` (and ``.csv``) and a PNG plot;
``benchmarks/cpu_suite.py`` and ``benchmarks/gpu_suite.sh`` run them all; ``benchmarks.summary``
prints the tables. The scripts share these modules, one purpose each:

* ``zoo``: the models and the ``Setup`` (a model with its input batches) every case runs on;
* ``contenders``: the ``Case`` s (floor, fastmollify, Captum, plain loop, NoiseGrad authors) and their runners;
* ``timing``: warm-up, interleaved timing and peak memory of one configuration's cases;
* ``memory``: CPU peak memory (the profiler's live tensor bytes, the process's peak RSS);
* ``fresh_process``: one case in a fresh process (``--fresh-process``);
* ``runner``: a configuration's cases into result rows (``ROW_FIELDS``);
* ``ratios``: each row's ratio to its floor, paired by round;
* ``results_io``: the rows' JSON and CSV files;
* ``cli``: the options every script shares;
* ``plotting``: matplotlib for the PNGs.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the source checkout
RESULTS = Path(__file__).resolve().parent / "results"
