"""N-scaling: time and peak memory against the sample count N, for every backend, the peers and the floor.

SmoothGrad with N in {1, 2, 5, 10, 20, 50, 100, 200, 500} samples in chunks of ``--chunk``:
fastmollify with each available backend, Captum's NoiseTunnel, the plain PyTorch loop and the
floor. Time must grow linearly in N; peak memory must stay flat (it is set by the chunk).
The pure-PyTorch ``reference`` backend (the oracle, not a fast path) runs up to
``--reference-max-n`` only.

    python -m benchmarks.bench_scaling            # GPU: ResNet-18 (CIFAR), B=64; CPU: the MLP, B=256
    python -m benchmarks.bench_scaling --model demo_cnn --batch 16 --ns 1,10,100

Writes ``results/scaling_<cpu|gpu>.json|csv|png``.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_scaling.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import cli, plotting, results_io, runner, timing, zoo  # noqa: E402
from .contenders import Case  # noqa: E402

SCRIPT = "scaling"
NS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
DEFAULTS = {  # device type -> settings
    "cuda": dict(model="resnet18_cifar", batch=64, chunk=10, repeats=3, reference_max_n=50),
    "cpu": dict(model="mlp", batch=256, chunk=10, repeats=3, reference_max_n=5),
    "tiny": dict(model="mlp", batch=4, chunk=2, repeats=2, reference_max_n=2, ns=(1, 2, 5)),
}


def cases(n: int, chunk: int, backends, reference_max_n: int, peers: bool = True):
    chunk = min(chunk, n)
    yield Case("floor", "floor", n=n, chunk=chunk)
    for backend in backends:
        if backend != "reference" or n <= reference_max_n:
            yield Case("fastmollify", "smoothgrad", n=n, chunk=chunk, backend=backend)
    if peers:
        yield Case("captum", "smoothgrad", n=n, chunk=chunk)
        yield Case("plain", "smoothgrad", n=n, chunk=chunk)


def main(argv=None) -> list[dict]:
    parser = cli.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, choices=sorted(zoo.MODELS))
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--ns", default=None, help="comma-separated sample counts")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--reference-max-n", type=int, default=None)
    parser.add_argument("--no-peers", action="store_true", help="skip Captum and the plain loop")
    args = parser.parse_args(argv)
    device = cli.start(args)
    preset = dict(DEFAULTS["tiny" if args.tiny else "cuda" if device.startswith("cuda") else "cpu"])
    model = args.model or preset["model"]
    batch = args.batch or preset["batch"]
    chunk = args.chunk or preset["chunk"]
    ns = cli.ints(args.ns) or list(preset.get("ns", NS))
    repeats = args.repeats or preset["repeats"]
    reference_max_n = preset["reference_max_n"] if args.reference_max_n is None else args.reference_max_n
    budget = timing.Budget(args.budget)
    backends = cli.select_backends(args, device)
    setup = zoo.Setup(zoo.SetupSpec(model, batch, device, args.dtype, args.channels_last, args.image_size))
    if not args.quiet:
        print(f"N-scaling on {runner.device_name(setup.device)}: {model} {setup.image} B={batch} chunk={chunk} "
              f"{args.dtype} backends={','.join(backends)}", flush=True)
    rows = []
    for n in ns:  # the contenders of one N are timed interleaved
        rows += runner.run_cases(SCRIPT, setup, list(cases(n, chunk, backends, reference_max_n, not args.no_peers)),
                                 repeats, budget, args.fresh_process, verbose=not args.quiet)
        results_io.write_rows(rows, SCRIPT, device, args.out)
    return results_io.finish(rows, SCRIPT, device, args, plot)


def plot(rows, path) -> None:
    plt = plotting.plt()
    good = [r for r in rows if r["median_s"] is not None]
    if plt is None or not good:
        return
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.6))
    labels = sorted({r["label"] for r in good}, key=lambda s: (s != "floor", s))
    for name in labels:
        mine = sorted((r for r in good if r["label"] == name), key=lambda r: r["N"])
        style = dict(marker="o", lw=2.2 if name == "floor" else 1.4, ls="--" if name == "floor" else "-")
        ax_time.plot([r["N"] for r in mine], [r["median_s"] for r in mine], label=name, **style)
        mem = [(r["N"], r["peak_mem_bytes"] / 2**20) for r in mine if r["peak_mem_bytes"] is not None]
        if mem:
            ax_mem.plot(*zip(*mem), label=name, **style)
    floor = sorted((r for r in good if r["label"] == "floor"), key=lambda r: r["N"])
    if floor:  # the linear law through the floor's largest N
        last = floor[-1]
        xs = [r["N"] for r in floor]
        ax_time.plot(xs, [last["median_s"] * x / last["N"] for x in xs], color="grey", lw=0.8, ls=":",
                     label="linear in N")
    first = good[0]
    title = (f"{first['model']} {first['image']} B={first['B']} chunk<={max(r['chunk'] for r in good)} "
             f"{first['dtype']} - {first['device']}")
    ax_time.set(xscale="log", yscale="log", xlabel="N (samples per example)", ylabel="median time (s)",
                title="time vs N")
    ax_mem.set(xscale="log", xlabel="N (samples per example)", ylabel="peak memory (MiB)",
               title=f"peak memory vs N ({first['mem_method'].split(' ')[0]})")
    ax_mem.set_ylim(bottom=0)
    ax_time.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
