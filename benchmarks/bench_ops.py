"""Op bandwidth: each backend's perturb / accumulate / perturb_weights(_many) against a plain copy.

Throughput is counted in GB/s of the traffic no implementation can avoid:
* perturb: read x ``[B, D]`` once + write out ``[S, B, D]``;
* accumulate: read grads ``[S, B, D]`` + read and write the float32 mean and m2 ``[B, D]``;
* perturb_weights: read the clean weights + write the perturbed ones (``B * D`` elements);
* perturb_weights_many: the same ``B * D`` elements split into 161 tensors of ResNet50-like, growing
  sizes (not all multiples of 4), perturbed by one call (one launch on the CUDA backend).
The yardstick is the machine's copy bandwidth: ``torch`` ``copy_`` moving the same number of
bytes (half read, half written), timed the same way. ``fraction_of_copy`` = op GB/s / copy GB/s.

Every backend that can serve the device is timed (``dispatch.why_not`` says which; Triton only
on a GPU: its CPU interpreter is a test tool). Timing: warm-up calls, then the median of
repeated calls (at least --repeats, and at least --min-time seconds of them; CUDA-synchronised on a GPU).
The 1-minute load average is recorded with each row: on a shared machine, other work slows
both the ops and the copy yardstick.

    python benchmarks/bench_ops.py                     # small size on the CPU (or the GPU if any)
    python benchmarks/bench_ops.py --size imagenet     # B=64, D=3x224x224, S=8
    python benchmarks/bench_ops.py --quick             # tiny smoke run, writes nothing
    python benchmarks/bench_ops.py --kernel poisson --ops perturb   # one op, another kernel's noise

Results: ``benchmarks/results/ops_<device>.json`` (rows of device, backend, op, dtype, B, D, S,
median_s, GBps, copy_GBps, fraction_of_copy, ...; rows of other sizes are kept) and a bar plot
``ops_<device>.png`` of every size in it. On a CPU the small size is cache-resident, so its copy
yardstick is a cache bandwidth; the imagenet size measures DRAM.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from fastmollify import kernels
from fastmollify.ops import FIXED, dispatch

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {  # name: (B, D, S)
    "quick": (2, 1000, 2),
    "small": (8, 3 * 32 * 32, 8),
    "imagenet": (64, 3 * 224 * 224, 8),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
OPS = ("perturb", "accumulate", "perturb_weights", "perturb_weights_many")
WEIGHT_TENSORS = 161  # ResNet50's parameter count


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, warmup: int, repeats: int, budget_s: float, min_s: float = 0.5):
    """(median seconds, number of timed calls, fastest call) of ``fn()`` after warm-up calls.

    At least ``repeats`` timed calls, and more (up to 2000) until ``min_s`` has passed, so that
    the median of short calls is not at the mercy of a burst of load on a shared machine.
    ``budget_s`` bounds slow calls: warm-up stops after a quarter of it, timing after all of it
    once 3 calls are in (after twice it, whatever the count).
    """
    start_all = time.perf_counter()
    for _ in range(warmup):
        fn()
        _sync(device)
        if time.perf_counter() - start_all > budget_s / 4:
            break
    times = []
    start_timed = time.perf_counter()
    while True:
        start = time.perf_counter()
        fn()
        _sync(device)
        now = time.perf_counter()
        times.append(now - start)
        if (len(times) >= 3 and now - start_timed > budget_s) or now - start_all > 2 * budget_s:
            break
        if len(times) >= repeats and (now - start_timed > min_s or len(times) >= 2000):
            break
    return statistics.median(times), len(times), min(times)


def traffic_bytes(op: str, B: int, D: int, S: int, dtype: torch.dtype) -> int:
    size = torch.tensor([], dtype=dtype).element_size()
    if op == "perturb":
        return B * D * size + S * B * D * size
    if op == "accumulate":
        return S * B * D * size + 2 * 2 * B * D * 4
    return 2 * B * D * size  # perturb_weights, perturb_weights_many


def copy_bandwidth(nbytes: int, device, warmup: int, repeats: int, min_s: float) -> float:
    """GB/s of ``dst.copy_(src)`` moving ``nbytes`` in all (``nbytes / 2`` read and written)."""
    half = max(1, nbytes // 2)
    src = torch.empty(half, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    seconds, _, _ = time_call(lambda: dst.copy_(src), device, warmup, max(repeats, 5), 5.0, min_s)
    return 2 * half / seconds / 1e9


def make_call(backend, op: str, B: int, D: int, S: int, dtype, device, kernel: str):
    if op == "perturb":
        x = torch.randn(B, D, dtype=dtype, device=device)
        out = torch.empty(S, B, D, dtype=dtype, device=device)
        kwargs = dict(seed=2**40 + 3, stream=0, sample_start=0, example_offset=0, kernel=kernels.get(kernel).id,
                      scale=0.15, sigma_mode=FIXED, clip=False)
        return lambda: backend.perturb(x, out, None, None, **kwargs)
    if op == "accumulate":
        grads = torch.randn(S, B, D, dtype=dtype, device=device)
        mean = torch.zeros(B, D, dtype=torch.float32, device=device)
        m2 = torch.zeros_like(mean)
        return lambda: backend.accumulate(mean, m2, grads, None, 8.0)
    clean = torch.randn(B * D, dtype=dtype, device=device)
    out = torch.empty_like(clean)
    if op == "perturb_weights":
        return lambda: backend.perturb_weights(clean, out, seed=2**40 + 3, draw=1, index=7, sigma=0.05)
    cleans, outs = weight_tensors(clean), weight_tensors(out)
    return lambda: backend.perturb_weights_many(cleans, outs, seed=2**40 + 3, draw=1, indices=range(len(cleans)),
                                                sigma=0.05)


def weight_tensors(flat: torch.Tensor) -> list:
    """``flat`` cut into WEIGHT_TENSORS consecutive views of geometrically growing sizes (a model's parameters)."""
    growth = [1.04**i for i in range(WEIGHT_TENSORS)]
    sizes = [max(1, int(flat.numel() * g / sum(growth))) for g in growth]
    sizes[-1] += flat.numel() - sum(sizes)
    return list(flat.split(sizes))


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def backends_for(device, dtype, kernel) -> tuple[list[str], dict[str, str]]:
    chosen, skipped = [], {}
    for name in dispatch.NAMES:
        if name == "triton" and device.type != "cuda":
            skipped[name] = "timed on a GPU only (its CPU interpreter is a test tool)"
            continue
        reason = dispatch.why_not(name, device, dtype, kernel)
        if reason is None:
            chosen.append(name)
        else:
            skipped[name] = reason
    return chosen, skipped


def plot(rows, path: Path, title: str) -> None:
    """Bars of GB/s per op and backend (and copy_), one panel per (dtype, B, D, S) configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["dtype"], r["B"], r["D"], r["S"]) for r in rows}, key=lambda c: (c[0], c[1] * c[2] * c[3]))
    fig, axes = plt.subplots(1, len(configs), figsize=(6.5 * len(configs), 4.5), squeeze=False)
    for ax, config in zip(axes[0], configs):
        subset = [r for r in rows if (r["dtype"], r["B"], r["D"], r["S"]) == config]
        backends = [b for b in dispatch.NAMES if any(r["backend"] == b for r in subset)]
        ops = [op for op in OPS if any(r["op"] == op for r in subset)]
        width = 0.8 / (len(backends) + 1)
        for i, name in enumerate(backends + ["copy"]):
            values = []
            for op in ops:
                match = [r for r in subset if r["op"] == op and (name == "copy" or r["backend"] == name)]
                values.append((match[0]["copy_GBps"] if name == "copy" else match[0]["GBps"]) if match else 0.0)
            xs = [j + (i - len(backends) / 2) * width for j in range(len(ops))]
            bars = ax.bar(xs, values, width, label="copy_ (same bytes)" if name == "copy" else name,
                          color="lightgray" if name == "copy" else None, edgecolor="gray" if name == "copy" else None)
            for bar, value in zip(bars, values):
                if value:
                    ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                                va="bottom", fontsize=7)
        ax.set_xticks(range(len(ops)), ops)
        ax.set_yscale("log")
        top = max([r["GBps"] for r in subset] + [r["copy_GBps"] for r in subset])
        ax.set_ylim(top=top * 30)  # room for the legend above the bars
        ax.set_ylabel("GB/s of unavoidable traffic (log)")
        ax.set_title("%s, B=%d D=%d S=%d" % config, fontsize=9)
        ax.legend(fontsize=8, loc="upper left", ncol=len(backends) + 1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _key(row):
    return row["backend"], row["op"], row["dtype"], row.get("kernel"), row["B"], row["D"], row["S"]


def save(rows, folder: Path, device) -> tuple[Path, list]:
    """Write ``rows`` to ``folder/ops_<device>.json``, keeping the file's rows of other configurations."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ops_{device.type}.json"
    new_keys = {_key(r) for r in rows}
    keep = []
    if path.exists():
        try:
            keep = [r for r in json.loads(path.read_text()) if _key(r) not in new_keys]
        except (ValueError, KeyError, TypeError):
            keep = []
    everything = keep + rows
    path.write_text(json.dumps(everything, indent=1) + "\n")
    return path, everything


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("small", "imagenet"), default="small")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; writes no results unless --out")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", help="comma list of " + ", ".join(DTYPES))
    parser.add_argument("--kernel", default="gaussian", choices=kernels.BUILTIN)
    parser.add_argument("--ops", default=",".join(OPS), help="comma list of " + ", ".join(OPS) + " (default: all)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per measurement before cutting repeats")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per measurement (at least)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    ops = tuple(op.strip() for op in args.ops.split(",") if op.strip())
    unknown = sorted(set(ops) - set(OPS))
    if unknown or not ops:
        parser.error(f"--ops: unknown op(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(OPS)}")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    B, D, S = SIZES["quick" if args.quick else args.size]
    repeats, warmup, min_s = (2, 1, 0.02) if args.quick else (args.repeats, args.warmup, args.min_time)
    rows = []
    for dtype_name in args.dtype.split(","):
        dtype = DTYPES[dtype_name.strip()]
        names, skipped = backends_for(device, dtype, args.kernel)
        for name, reason in skipped.items():
            print(f"# {name}: not timed ({reason})")
        for op in ops:
            nbytes = traffic_bytes(op, B, D, S, dtype)
            copy_gbps = copy_bandwidth(nbytes, device, warmup, repeats, min_s)
            for name in names:
                call = make_call(dispatch.load(name), op, B, D, S, dtype, device, args.kernel)
                seconds, done, fastest = time_call(call, device, warmup, repeats, args.budget, min_s)
                gbps = nbytes / seconds / 1e9
                rows.append(dict(device=device.type, device_name=device_name(device), backend=name, op=op,
                                 dtype=dtype_name.strip(), kernel=args.kernel, B=B, D=D, S=S, bytes=nbytes,
                                 threads=torch.get_num_threads(), median_s=seconds, min_s=fastest, repeats=done, GBps=gbps, copy_GBps=copy_gbps,
                                 fraction_of_copy=gbps / copy_gbps, torch=torch.__version__,
                                 load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None))
                if not (args.quick and args.out is None):
                    save(rows, args.out or RESULTS, device)  # as we go: a run stopped by a timeout keeps its rows
                print(f"{device.type:4s} {name:9s} {op:15s} {dtype_name:8s} B={B} D={D} S={S}: "
                      f"{seconds * 1e3:9.2f} ms  {gbps:8.3f} GB/s  ({gbps / copy_gbps:6.1%} of copy "
                      f"{copy_gbps:.2f} GB/s)", flush=True)
        for op in ops:
            by = {r["backend"]: r for r in rows if r["op"] == op and r["dtype"] == dtype_name.strip()}
            if "reference" in by:
                for name, row in by.items():
                    if name != "reference":
                        print(f"# {op}: {name} is {by['reference']['median_s'] / row['median_s']:.1f}x the reference")

    if args.quick and args.out is None:
        return 0
    path, everything = save(rows, args.out or RESULTS, device)
    everything = [r for r in everything if r.get("kernel", args.kernel) == args.kernel]
    plot(everything, path.with_suffix(".png"),
         f"fastmollify ops ({args.kernel} noise) on {device_name(device)}, torch {torch.__version__}; "
         f"median of repeats")
    print(f"# wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
