"""Small models, where the element-wise work (noise, accumulation) is a real share of the time.

The AdaptGrad paper's MNIST MLP (784-200-10, B=256), the demo CNN (3x64x64) and a CIFAR-size
ResNet-18 (3x32x32): SmoothGrad (each backend) and AdaptGrad against Captum's NoiseTunnel, the
plain PyTorch loop and the floor, at several N.

    python -m benchmarks.bench_small                      # GPU or CPU defaults
    python -m benchmarks.bench_small --models mlp --ns 10,50

Writes ``results/small_<cpu|gpu>.json|csv|png``.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import cli, plotting, results_io, runner, timing, zoo  # noqa: E402
from .contenders import Case  # noqa: E402

SCRIPT = "small"
# model -> (batch, chunk, Ns) per device type
DEFAULTS = {
    "cuda": {"mlp": (256, 50, (1, 10, 50, 200)), "demo_cnn": (64, 25, (1, 10, 50, 200)),
             "resnet18_cifar": (64, 10, (1, 10, 50, 200))},
    "cpu": {"mlp": (256, 25, (1, 10, 50)), "demo_cnn": (16, 10, (1, 10, 50)), "resnet18_cifar": (4, 10, (1, 10))},
    "tiny": {"mlp": (8, 2, (1, 2)), "demo_cnn": (2, 2, (1, 2)), "resnet18_cifar": (1, 2, (2,))},
}
REPEATS = {"cuda": 5, "cpu": 5, "tiny": 2}


def cases(n, chunk, backends, methods=("smoothgrad", "adaptgrad")):
    chunk = min(chunk, n)
    yield Case("floor", "floor", n=n, chunk=chunk)
    yield Case("captum", "smoothgrad", n=n, chunk=chunk)
    yield Case("plain", "smoothgrad", n=n, chunk=chunk)
    for backend in backends:
        for method in methods if backend == backends[0] else methods[:1]:
            yield Case("fastmollify", method, n=n, chunk=chunk, backend=backend)


def main(argv=None) -> list[dict]:
    parser = cli.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated (mlp,demo_cnn,resnet18_cifar)")
    parser.add_argument("--ns", default=None, help="comma-separated sample counts (all models)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (all models)")
    parser.add_argument("--chunk", type=int, default=None, help="samples per chunk (all models)")
    parser.add_argument("--with-reference", action="store_true", help="also time the reference backend")
    args = parser.parse_args(argv)
    device = cli.start(args)
    kind = "tiny" if args.tiny else "cuda" if device.startswith("cuda") else "cpu"
    presets = DEFAULTS[kind]
    models = cli.names(args.models) or list(presets)
    repeats = args.repeats or REPEATS[kind]
    backends = cli.select_backends(args, device, include_reference=args.with_reference)
    budget = timing.Budget(args.budget)
    rows = []
    for model in models:
        batch, chunk, ns = presets.get(model, (16, 10, (1, 10, 50)))
        batch, chunk, ns = args.batch or batch, args.chunk or chunk, cli.ints(args.ns) or ns
        try:
            setup = zoo.Setup(zoo.SetupSpec(model, batch, device))
        except Exception as error:  # e.g. fastmollify.models not there yet
            print(f"  {model}: set-up failed: {type(error).__name__}: {error}", flush=True)
            continue
        if not args.quiet:
            print(f"Small model {model} {setup.image} B={batch} chunk={chunk} on {runner.device_name(setup.device)} "
                  f"backends={','.join(backends)}", flush=True)
        for n in ns:  # the contenders of one model and N are timed interleaved
            rows += runner.run_cases(SCRIPT, setup, list(cases(n, chunk, backends)), repeats, budget,
                                     args.fresh_process, verbose=not args.quiet)
            results_io.write_rows(rows, SCRIPT, device, args.out)
    return results_io.finish(rows, SCRIPT, device, args, plot)


def plot(rows, path) -> None:
    plt = plotting.plt()
    good = [r for r in rows if r["ratio_to_floor"] is not None]
    if plt is None or not good:
        return
    models = list(dict.fromkeys(r["model"] for r in good))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in good if r["model"] == model]
        for name in sorted({(r["label"], r["method"]) for r in mine}):
            series = sorted((r for r in mine if (r["label"], r["method"]) == name), key=lambda r: r["N"])
            ax.plot([r["N"] for r in series], [r["ratio_to_floor"] for r in series], marker="o",
                    label=f"{name[0]} {name[1]}" if name[0].startswith("fastmollify") else name[0])
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        first = mine[0]
        ax.set(xscale="log", xlabel="N (samples per example)", ylabel="time / floor",
               title=f"{model} {first['image']} B={first['B']}")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.suptitle(f"small models: time relative to the floor (dashed) - {good[0]['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
