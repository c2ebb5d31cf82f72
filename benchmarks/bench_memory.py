"""Peak memory against n at the default chunk: fm.smoothgrad on the CPU, every call in a fresh process.

torchvision's ResNet-18 (random weights) at 32x32 and 64x64, B=1, n in {8, 32, ..., 1024},
``chunk_size=None``: the chunk is the engine's choice, and with it the peak memory. A server
process imports torch and fastmollify once and runs no tensor op; each call runs in a process
forked from it, which builds the model and inputs, makes one warm call with n=1 (code pages,
thread pools and oneDNN's caches come in here), resets the kernel's peak-RSS mark to its current
RSS (``memory.reset_peak_rss``: gc, ``malloc_trim``, ``/proc/self/clear_refs``) and makes the
measured call. Its peak memory is the peak RSS (``VmHWM``) minus that baseline: everything the
call touched (tensors, oneDNN scratch, the heap's fragmentation), with no earlier call's freed
heap to hide it. torch keeps no allocator statistics on the CPU, and the profiler counts tensors
only. The chunk the engine chose is observed from the model's side: the largest batch a forward
pre-hook sees, over B (``forwards``: how many forward calls the model saw).

    python -m benchmarks.bench_memory                       # writes results/memory_cpu.{json,csv,png}
    python -m benchmarks.bench_memory --quick --out /tmp/m  # seconds: the smoke test

Linux only (``fork``, ``/proc/self/clear_refs``, ``VmHWM``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import RESULTS, ROOT, cli, memory, plotting, results_io, runner, timing, zoo  # noqa: E402

SCRIPT = "memory"
CONFIGS = "resnet18:32,resnet18:64"  # model:image side
NS = (8, 32, 128, 256, 512, 1024)
QUICK = dict(configs="resnet18:32", ns=(4, 8))
MEM_METHOD = "peak RSS (VmHWM) of a forked process above its RSS after set-up and one n=1 call"
FIELDS = ("script", "device", "torch", "method", "model", "image", "B", "n", "chunk_size", "chunk", "forwards",
          "peak_rss_bytes", "baseline_rss_bytes", "seconds", "mem_method", "error", "commit", "timestamp")


def _measure(case: dict, threads: int) -> dict:
    """In the forked child: set up, warm up with n=1, reset the peak-RSS mark, measure one call."""
    import torch

    import fastmollify as fm

    torch.set_num_threads(threads)
    setup = zoo.Setup(zoo.SetupSpec(case["model"], case["B"], "cpu", image_size=case["image_size"]))
    x, target = setup.inputs[0], setup.targets[0]

    def call(n):
        return fm.smoothgrad(setup.model, x, target, n=n, sigma=setup.sigma, seed=0, progress=False)

    call(1)
    batches = []
    hook = setup.model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    found = {"image": setup.image, "device": runner.device_name(setup.device)}
    base = memory.reset_peak_rss()
    if base is None:
        return dict(found, error="the peak-RSS mark cannot be reset here (needs Linux /proc/self/clear_refs)")
    t0 = time.perf_counter()
    call(case["n"])
    seconds = time.perf_counter() - t0
    peak = memory.peak_rss_bytes()
    hook.remove()
    return dict(found, chunk=max(batches) // case["B"], forwards=len(batches), peak_rss_bytes=peak - base,
                baseline_rss_bytes=base, seconds=seconds)


def _in_child(case: dict, threads: int) -> dict:
    """Run ``_measure`` in a process forked from this one; its result, or why there is none."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            result = _measure(case, threads)
        except BaseException as error:
            result = {"error": f"{type(error).__name__}: {error}"[:300]}
        with os.fdopen(write_fd, "w") as f:
            f.write(json.dumps(result))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    return json.loads(text) if text else {"error": f"child died (wait status {status}), e.g. killed for memory"}


def _serve(payload: str) -> None:
    """The server: imports once, then one forked child per case; prints one JSON line per case."""
    import torchvision  # noqa: F401  (imported before forking: the children share it)

    import fastmollify  # noqa: F401

    data = json.loads(payload)
    deadline = data["deadline"] or math.inf
    per_sample = {}  # (model, image size) -> seconds per sample of the last call
    for case in data["cases"]:
        estimate = per_sample.get((case["model"], case["image_size"]), 0.0) * case["n"]
        if time.time() + 1.5 * estimate + 1 > deadline:
            result = {"error": "skipped: time budget"}
        else:
            result = _in_child(case, data["threads"])
            if result.get("seconds"):
                per_sample[(case["model"], case["image_size"])] = result["seconds"] / case["n"]
        print(json.dumps(dict(case, **result)), flush=True)


def configs(text: str) -> list[tuple[str, int]]:
    """'resnet18:32,resnet18:64' -> [('resnet18', 32), ('resnet18', 64)]."""
    return [(name, int(size)) for name, _, size in (item.partition(":") for item in cli.names(text))]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=None, help=f"comma-separated model:image-side (default {CONFIGS})")
    parser.add_argument("--ns", default=None, help="comma-separated sample counts")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in each measured process")
    parser.add_argument("--budget", type=float, default=None, help="seconds this script may take (skips the rest)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="one small configuration (the smoke test)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else dict(configs=CONFIGS, ns=NS)
    ns = cli.ints(args.ns) or list(preset["ns"])
    cases = [dict(model=model, image_size=size, B=args.batch, n=n)
             for model, size in configs(args.configs or preset["configs"]) for n in ns]
    payload = json.dumps({"cases": cases, "threads": args.threads, "deadline": timing.Budget(args.budget).deadline})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS=str(args.threads))
    if not args.quiet:
        print(f"Peak memory vs n (fm.smoothgrad, default chunk, {args.threads} thread(s)): "
              f"{len(cases)} calls, each in a fresh process", flush=True)
    rows = []
    with subprocess.Popen([sys.executable, "-m", "benchmarks.bench_memory", "--serve", payload], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, text=True) as server:
        for line in server.stdout:
            if line.startswith("{"):
                rows.append(_row(json.loads(line)))
                if not args.quiet:
                    print(format_row(rows[-1]), flush=True)
    if server.returncode:
        print(f"bench_memory: the server exited with status {server.returncode}", flush=True)
    path = results_io.write_table(rows, SCRIPT, "cpu", FIELDS, args.out)
    if not args.no_plot:
        plot(rows, path.with_suffix(".png"))
    return rows


def _row(found: dict) -> dict:
    """A result row: the case and what its process measured, plus where and when."""
    import torch

    row = dict.fromkeys(FIELDS)
    row.update(script=SCRIPT, torch=torch.__version__, method="smoothgrad", mem_method=MEM_METHOD,
               image=f"3x{found['image_size']}x{found['image_size']}", commit=runner.commit(),
               timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    row.update(found)
    del row["image_size"]
    return row


def format_row(row: dict) -> str:
    what = row["error"] or (f"chunk {row['chunk']:<5} forwards {row['forwards']:<4} peak "
                            f"+{runner.format_bytes(row['peak_rss_bytes'])} ({row['seconds']:.2f} s)")
    return f"  {row['model']:>10} {row['image']} B={row['B']} n={row['n']:<5} {what}"


def plot(rows, path) -> None:
    plt = plotting.plt()
    good = [r for r in rows if r["peak_rss_bytes"] is not None]
    if plt is None or not good:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for key in dict.fromkeys((r["model"], r["image"], r["B"]) for r in good):
        mine = sorted((r for r in good if (r["model"], r["image"], r["B"]) == key), key=lambda r: r["n"])
        mib = [r["peak_rss_bytes"] / 2**20 for r in mine]
        ax.plot([r["n"] for r in mine], mib, marker="o", label=f"{key[0]} {key[1]} B={key[2]}")
        for r, y in zip(mine, mib):
            ax.annotate(f"chunk {r['chunk']}", (r["n"], y), textcoords="offset points", xytext=(4, -10), fontsize=6)
    ns = sorted({r["n"] for r in good})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set(xlabel="n (samples per example)", ylabel="peak RSS above the warm baseline (MiB)",
           title=f"fm.smoothgrad peak memory vs n, default chunk - {good[0]['device']}")
    ax.title.set_fontsize(9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve(sys.argv[2])
    else:
        main()
