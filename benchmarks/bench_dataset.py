"""Data-set throughput: the engine alone, the whole pipeline with 1 and with several processes.

A generated ImageFolder (random PNGs in 4 classes) is attributed with SmoothGrad by a seeded,
untrained model (only the work matters here): the built-in CNN on the CPU, ResNet-18 at 224 px on
a GPU.

* ``engine``: ``fm.smoothgrad`` on the same batches, images already decoded (in GPU memory on a GPU);
* ``pipeline-1``: ``fm.attribute_dataset`` in one process (reading PNGs, writing the zarr store);
* ``pipeline-K``: the same under torchrun with K processes: 2 gloo processes on the CPU, one per GPU
  (NCCL) when several GPUs are at hand.

On the CPU every process runs one torch thread and reads its images itself, so the 2-process row
uses twice the cores; on a GPU each process has DataLoader workers. images/s is over
the attribution loop (set-up and process start excluded; ``wall_s`` includes them), the median of
``--rounds`` interleaved rounds (each round runs the three once, so load from other users of a shared
machine hits all three alike; every round's value is kept in ``rounds``); scaling
efficiency = pipeline-K / (K x pipeline-1); ``pipeline_vs_engine`` = pipeline-1 / engine (on a GPU:
how far the pipeline keeps the GPU fed). Writes ``dataset_<cpu|gpu>.json`` and ``.png`` under
``--out`` (default benchmarks/results).

    python benchmarks/bench_dataset.py [--device cpu|cuda] [--tiny] [--rounds R] [--out DIR]
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
SIZES = {("cpu", False): dict(examples=256, size=64, n=16, batch_size=16),
         ("cuda", False): dict(examples=2048, size=224, n=16, batch_size=64),
         ("cpu", True): dict(examples=8, size=16, n=2, batch_size=4),
         ("cuda", True): dict(examples=16, size=32, n=2, batch_size=4)}
GPU_WORKERS = 6


def model(device: str = "cpu"):
    """Seeded weights (the same on every rank): the built-in CNN on the CPU, ResNet-18 on a GPU."""
    torch.manual_seed(0)
    if device == "cpu":
        from fastmollify import models

        return models.demo_cnn().eval()
    from torchvision.models import resnet18

    return resnet18(weights=None).eval().to(device)


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def make_folder(root: Path, examples: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(examples):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return root


def engine_alone(folder: Path, device: str, n: int, batch_size: int) -> dict:
    """fm.smoothgrad over the data set's batches, the images decoded (and on the device) beforehand."""
    import fastmollify as fm
    from fastmollify.dataset import data

    items = data.Items(data.source(str(folder)).dataset)
    x = torch.stack([items[i][1] for i in range(len(items))]).to(device)
    net = model(device)
    with torch.no_grad():
        targets = net(x[:batch_size]).argmax(1)
    fm.smoothgrad(net, x[:batch_size], targets, n=n, bounds=(0, 1))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for s in range(0, len(x), batch_size):
        with torch.no_grad():
            targets = net(x[s:s + batch_size]).argmax(1)  # as the pipeline: the clean pass picks the target
        fm.smoothgrad(net, x[s:s + batch_size], targets, n=n, bounds=(0, 1), example_offset=s)
    _sync(device)
    seconds = time.perf_counter() - start
    return dict(contender="engine", processes=1, examples=len(x), seconds=seconds, images_per_s=len(x) / seconds)


def child(args) -> None:
    """One rank of a pipeline run (started by ``pipeline``); rank 0 writes the run's summary as JSON."""
    import fastmollify as fm

    if args.device == "cpu":
        torch.set_num_threads(1)
        device, workers = "cpu", 0
    else:
        device, workers = f"cuda:{os.environ.get('LOCAL_RANK', '0')}", GPU_WORKERS
    summary = fm.attribute_dataset(model(device), args.folder, store=args.store, method="smoothgrad", n=args.samples,
                                   bounds=(0, 1), batch_size=args.batch_size, workers=workers, device=device,
                                   progress=False)
    if summary.rank == 0:
        Path(args.summary).write_text(json.dumps(dict(examples=summary.computed, seconds=summary.seconds,
                                                      images_per_s=summary.images_per_s)))


def pipeline(folder: Path, work: Path, device: str, processes: int, n: int, batch_size: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    summary = work / f"summary-{processes}.json"
    launch = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                       "--nproc-per-node", str(processes)]
    command = launch + [str(Path(__file__).resolve()), "--child", "--folder", str(folder), "--store",
                        str(work / f"p{processes}.zarr"), "--summary", str(summary), "--samples", str(n),
                        "--batch-size", str(batch_size), "--device", device]
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
    scaling = result["scaling_efficiency"]
    ax.set_title(f"SmoothGrad N={result['n']} over {result['examples']} PNGs {result['image_size']}px, "
                 f"{result['model']} on {result['device']}\n"
                 f"scaling efficiency {'-' if scaling is None else f'{scaling:.2f}'}, pipeline/engine "
                 f"{result['pipeline_vs_engine']:.2f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes (seconds; for tests, numbers meaningless)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu (default) or cuda")
    p.add_argument("--out", default=str(RESULTS), help="folder for dataset_<cpu|gpu>.json and .png")
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
    sizes = SIZES[args.device, args.tiny]
    if args.device == "cpu":
        torch.set_num_threads(1)
        counts = (1, 2)
    else:
        counts = (1, torch.cuda.device_count()) if torch.cuda.device_count() > 1 else (1,)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_folder(work / "images", sizes["examples"], sizes["size"])
        rounds = []
        for r in range(args.rounds or (1 if args.tiny else 3)):
            rounds.append([engine_alone(folder, args.device, sizes["n"], sizes["batch_size"])])
            rounds[-1] += [pipeline(folder, work / f"round{r}", args.device, k, sizes["n"], sizes["batch_size"])
                           for k in counts]
    rows = []
    for k, first in enumerate(rounds[0]):
        values = [round_[k] for round_ in rounds]
        median = sorted(values, key=lambda v: v["images_per_s"])[len(values) // 2]
        rows.append(dict(median, rounds=[v["images_per_s"] for v in values]))
    speed = {r["contender"]: r["images_per_s"] for r in rows}
    most = counts[-1]
    gpu = args.device != "cpu"
    result = dict(device=torch.cuda.get_device_name() if gpu else "cpu", gpus=torch.cuda.device_count() if gpu else 0,
                  cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                  model="ResNet-18" if gpu else "demo CNN", examples=sizes["examples"], image_size=sizes["size"],
                  n=sizes["n"], batch_size=sizes["batch_size"], method="smoothgrad",
                  threads_per_process=None if gpu else 1, workers_per_process=GPU_WORKERS if gpu else 0, rows=rows,
                  scaling_efficiency=speed[f"pipeline-{most}"] / (most * speed["pipeline-1"]) if most > 1 else None,
                  pipeline_vs_engine=speed["pipeline-1"] / speed["engine"])
    name = f"dataset_{'gpu' if gpu else 'cpu'}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result, out / f"{name}.png")
    for r in rows:
        print(f"{r['contender']:<11} {r['processes']} process(es)  {r['images_per_s']:8.1f} images/s")
    if result["scaling_efficiency"] is not None:
        print(f"scaling efficiency {result['scaling_efficiency']:.2f}")
    print(f"pipeline / engine {result['pipeline_vs_engine']:.2f}")
    return result


if __name__ == "__main__":
    main()
