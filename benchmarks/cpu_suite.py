"""The CPU benchmark suite: every benchmark at sizes a small CPU machine runs in a few minutes.

    python benchmarks/cpu_suite.py              # writes benchmarks/results/*_cpu.{json,csv,png}
    python benchmarks/cpu_suite.py --tiny --out /tmp/res    # seconds: the smoke-test sizes

Runs N-scaling (the MLP), small models, a reduced ImageNet-size run (ResNet50 at 112x112, B=2),
op bandwidth (benchmarks/bench_ops.py, when present), peak memory against n at the default
chunk (ResNet-18, each call in a fresh process) and convergence (tol= sample counts, antithetic
efficiency; within its share of the budget: the cheapest models first), then prints the summary
tables. Defaults to
one torch thread (``--threads``): on a shared machine, OpenMP threads that wait on each other
turn other processes' load into large, erratic slow-downs, while one thread degrades evenly, so
ratios to the floor stay meaningful. The summary is also written to ``results/summary_cpu.md``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import (  # noqa: E402
    RESULTS, bench_convergence, bench_memory, bench_scaling, bench_small, bench_throughput, cli, summary)

# script -> (share of the budget, extra arguments at full CPU size)
PLAN = {
    "scaling": (0.25, []),
    "small": (0.3, []),
    "throughput": (0.5, []),
    "ops": (0.1, []),
    "memory": (0.15, []),
    "convergence": (0.3, []),
}


def run_ops(out: Path, threads: int, tiny: bool, budget: float) -> None:
    script = Path(__file__).resolve().parent / "bench_ops.py"
    if not script.exists():
        print("bench_ops.py not present: op bandwidth skipped", flush=True)
        return
    command = [sys.executable, str(script), "--device", "cpu", "--out", str(out), "--threads", str(threads)]
    command += ["--quick"] if tiny else ["--budget", str(max(2.0, budget / 12))]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        subprocess.run(command, check=False, timeout=max(30.0, 2 * budget), env=env)
    except subprocess.TimeoutExpired:
        print("bench_ops.py ran past its time and was stopped", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for the whole suite")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(PLAN))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    only = cli.names(args.only) or list(PLAN)
    start = time.time()
    common_args = ["--device", "cpu", "--out", str(args.out), "--threads", str(args.threads)]
    common_args += ["--tiny"] if args.tiny else []
    common_args += ["--no-plot"] if args.no_plot else []
    failures = 0
    for name in only:
        share, extra = PLAN[name]
        budget = share / sum(PLAN[n][0] for n in only) * args.budget
        print(f"\n=== {name} (budget {budget:.0f} s, {time.time() - start:.0f} s elapsed) ===", flush=True)
        try:
            if name == "ops":
                run_ops(args.out, args.threads, args.tiny, budget)
            elif name in ("memory", "convergence"):
                module = bench_memory if name == "memory" else bench_convergence
                module.main(["--out", str(args.out), "--threads", str(args.threads), "--budget", str(budget)]
                            + ["--quick"] * args.tiny + ["--no-plot"] * args.no_plot + extra)
            else:
                module = {"scaling": bench_scaling, "small": bench_small, "throughput": bench_throughput}[name]
                module.main(common_args + ["--budget", str(budget)] + extra)
        except Exception:
            failures += 1
            traceback.print_exc()
    print(f"\n=== summary ({time.time() - start:.0f} s) ===\n", flush=True)
    text = summary.render(args.out, "cpu")
    print(text)
    (args.out / "summary_cpu.md").write_text(
        f"Command: `python benchmarks/cpu_suite.py {' '.join(argv or sys.argv[1:])}`\n\n"
        + summary.render(args.out, "cpu", markdown=True))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
