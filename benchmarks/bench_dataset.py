"""Data-set throughput on the CPU: the engine alone, the whole pipeline with 1 and with 2 processes.

A generated ImageFolder (random PNGs in 4 classes) is attributed with SmoothGrad by the built-in
CNN (seeded, untrained: only the work matters here):

* ``engine``: ``fm.smoothgrad`` on the same batches, images already in memory (one process);
* ``pipeline-1``: ``fm.attribute_dataset`` in one process (reading PNGs, writing the zarr store);
* ``pipeline-2``: the same under torchrun with 2 gloo processes.

Every process runs one torch thread, so the 2-process row uses twice the cores. images/s is over
the attribution loop (set-up and process start excluded; ``wall_s`` includes them), the median of
``--rounds`` interleaved rounds (each round runs the three once, so load from other users of a shared
machine hits all three alike; every round's value is kept in ``rounds``); scaling
efficiency = pipeline-2 / (2 x pipeline-1); ``pipeline_vs_engine`` = pipeline-1 / engine. Writes
``dataset_cpu.json`` and ``dataset_cpu.png`` under ``--out`` (default benchmarks/results).

    python benchmarks/bench_dataset.py [--tiny] [--rounds R] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FULL = dict(examples=256, size=64, n=16, batch_size=16)
TINY = dict(examples=8, size=16, n=2, batch_size=4)


def model():
    """The built-in CNN with seeded weights (the same on every rank)."""
    from fastmollify import models

    torch.manual_seed(0)
    return models.demo_cnn().eval()


def make_folder(root: Path, examples: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(examples):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return root


def engine_alone(folder: Path, n: int, batch_size: int) -> dict:
    """fm.smoothgrad over the data set's batches, the images decoded beforehand."""
    import fastmollify as fm
    from fastmollify.dataset import data

    items = data.Items(data.source(str(folder)).dataset)
    x = torch.stack([items[i][1] for i in range(len(items))])
    net = model()
    with torch.no_grad():
        targets = net(x).argmax(1)
    fm.smoothgrad(net, x[:batch_size], targets[:batch_size], n=n, bounds=(0, 1))  # warm-up
    start = time.perf_counter()
    for s in range(0, len(x), batch_size):
        fm.smoothgrad(net, x[s:s + batch_size], targets[s:s + batch_size], n=n, bounds=(0, 1), example_offset=s)
    seconds = time.perf_counter() - start
    return dict(contender="engine", processes=1, examples=len(x), seconds=seconds, images_per_s=len(x) / seconds)


def child(args) -> None:
    """One rank of a pipeline run (started by ``pipeline``); rank 0 writes the run's summary as JSON."""
    import fastmollify as fm

    torch.set_num_threads(1)
    summary = fm.attribute_dataset(model(), args.folder, store=args.store, method="smoothgrad", n=args.samples,
                                   bounds=(0, 1), batch_size=args.batch_size, workers=0, progress=False)
    if summary.rank == 0:
        Path(args.summary).write_text(json.dumps(dict(examples=summary.computed, seconds=summary.seconds,
                                                      images_per_s=summary.images_per_s)))


def pipeline(folder: Path, work: Path, processes: int, n: int, batch_size: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    summary = work / f"summary-{processes}.json"
    launch = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                       "--nproc-per-node", str(processes)]
    command = launch + [str(Path(__file__).resolve()), "--child", "--folder", str(folder), "--store",
                        str(work / f"p{processes}.zarr"), "--summary", str(summary), "--samples", str(n),
                        "--batch-size", str(batch_size)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"the {processes}-process run failed:\n{done.stderr[-3000:]}")
    row = json.loads(summary.read_text())
    return dict(contender=f"pipeline-{processes}", processes=processes, wall_s=wall, **row)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    bars = ax.bar([r["contender"] for r in rows], [r["images_per_s"] for r in rows],
                  color=["#888888", "#4477aa", "#228833"])
    for bar, r in zip(bars, rows):
        ax.annotate(f"{r['images_per_s']:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("images / s")
    ax.set_title(f"SmoothGrad N={result['n']} over {result['examples']} PNGs {result['image_size']}px, CPU, "
                 f"1 thread/process\nscaling efficiency {result['scaling_efficiency']:.2f}, pipeline/engine "
                 f"{result['pipeline_vs_engine']:.2f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes (seconds; for tests, numbers meaningless)")
    p.add_argument("--out", default=str(RESULTS), help="folder for dataset_cpu.json and .png")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --tiny)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--folder", "--store", "--summary"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    sizes = TINY if args.tiny else FULL
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_folder(work / "images", sizes["examples"], sizes["size"])
        rounds = []
        for r in range(args.rounds or (1 if args.tiny else 3)):
            rounds.append([engine_alone(folder, sizes["n"], sizes["batch_size"])])
            rounds[-1] += [pipeline(folder, work / f"round{r}", k, sizes["n"], sizes["batch_size"]) for k in (1, 2)]
    rows = []
    for k, first in enumerate(rounds[0]):
        values = [round_[k] for round_ in rounds]
        median = sorted(values, key=lambda v: v["images_per_s"])[len(values) // 2]
        rows.append(dict(median, rounds=[v["images_per_s"] for v in values]))
    speed = {r["contender"]: r["images_per_s"] for r in rows}
    result = dict(device="cpu", cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                  examples=sizes["examples"], image_size=sizes["size"], n=sizes["n"], batch_size=sizes["batch_size"],
                  method="smoothgrad", threads_per_process=1, rows=rows,
                  scaling_efficiency=speed["pipeline-2"] / (2 * speed["pipeline-1"]),
                  pipeline_vs_engine=speed["pipeline-1"] / speed["engine"])
    (out / "dataset_cpu.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "dataset_cpu.png")
    for r in rows:
        print(f"{r['contender']:<11} {r['processes']} process(es)  {r['images_per_s']:8.1f} images/s")
    print(f"scaling efficiency {result['scaling_efficiency']:.2f}; "
          f"pipeline / engine {result['pipeline_vs_engine']:.2f}")
    return result


if __name__ == "__main__":
    main()
