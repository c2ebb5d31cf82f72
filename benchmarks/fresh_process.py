"""One case in a fresh Python process (``--fresh-process``): CPU peak memory by plain peak RSS.

The child builds the set-up, runs ``timing.measure`` and prints its ``Measure`` as one JSON
line; its ``peak_rss`` is the process's peak RSS (``memory.peak_rss_bytes``) minus its RSS after
set-up and the warm-up call.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import asdict
from typing import Optional

from . import ROOT, memory
from .contenders import Case
from .timing import Budget, Measure, measure
from .zoo import Setup, SetupSpec


def measure_in_subprocess(spec: SetupSpec, case: Case, repeats: int, budget: Optional[Budget] = None) -> Measure:
    """Run one case in a fresh Python process; peak memory is its peak RSS minus the RSS after warm-up."""
    payload = json.dumps({"spec": asdict(spec), "case": asdict(case), "repeats": repeats,
                          "left": None if budget is None or budget.deadline is None else budget.left()})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fresh_process", "--case", payload], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return Measure(error=f"subprocess failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return Measure(**json.loads(lines[-1]))


def _subprocess_main(payload: str) -> None:
    data = json.loads(payload)
    setup = Setup(SetupSpec(**data["spec"]))
    case = Case(**data["case"])
    base = []

    def after_warmup():  # code pages, thread pools and caches the first call brings in are not the case's
        gc.collect()
        base.append(memory.rss_kib())

    budget = Budget(seconds=data["left"]) if data["left"] is not None else None
    result = measure(setup, case, data["repeats"], budget, cpu_rss=False, after_warmup=after_warmup)
    if setup.device.type == "cpu" and base and base[0] is not None:
        result.peak_rss = memory.peak_rss_bytes() - base[0] * 1024
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        _subprocess_main(sys.argv[2])
    else:
        sys.exit("usage: python -m benchmarks.fresh_process --case JSON (internal: one case in a fresh process)")
