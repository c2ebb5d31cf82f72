"""fastmollify's benchmarks: N-scaling, ImageNet-size throughput, small models, op bandwidth.

Every script builds its models, inputs and contenders through ``benchmarks.common`` (one setup
factory), writes rows to ``benchmarks/results/<script>_<cpu|gpu>.json`` (and ``.csv``) and a PNG
plot, and runs as ``python -m benchmarks.<script>`` or ``python benchmarks/<script>.py``.
``benchmarks/cpu_suite.py`` and ``benchmarks/gpu_suite.sh`` run them all; ``benchmarks.summary``
prints the tables.
"""
