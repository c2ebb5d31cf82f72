"""ImageNet-size throughput: ResNet50 and VGG16 (random weights), 3x224x224, B=64, N=50.

Samples x images per second and peak memory for SmoothGrad, AdaptGrad, ClipGrad, mollification
with each kernel, NoiseGrad and FusionGrad, against Captum's NoiseTunnel, the plain PyTorch
loop, the NoiseGrad authors' algorithm and the floor; in fp32 and in bf16 autocast with
channels_last. NoiseGrad runs ``--noisegrad-m`` weight draws (N = m gradients per example) and
FusionGrad ``--fusion`` m x n, with the floor of the same draws and chunks plus the weight writes
as its floor.

Cases run in passes so a time budget (``--budget``) drops the least important ones first:
(1) floor, peers, SmoothGrad, NoiseGrad, FusionGrad with the preferred backend, on every model and
precision; (2) the other input-noise methods; (3) the other backends.

    python -m benchmarks.bench_throughput                     # GPU defaults above
    python -m benchmarks.bench_throughput --models resnet50 --dtypes fp32 --batch 8 --n 10

Writes ``results/throughput_<cpu|gpu>.json|csv|png``.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import cli, plotting, ratios, results_io, runner, timing, zoo  # noqa: E402
from .contenders import INPUT_METHODS, Case  # noqa: E402

SCRIPT = "throughput"
DEFAULTS = {
    "cuda": dict(models="resnet50,vgg16", dtypes="fp32,bf16+cl", batch=64, n=50, chunk=5, noisegrad_m=10,
                 fusion="5x10", repeats=3, image_size=None),
    "cpu": dict(models="resnet50", dtypes="fp32", batch=2, n=5, chunk=5, noisegrad_m=2, fusion="2x5", repeats=7,
                image_size=112),
    "tiny": dict(models="demo_cnn", dtypes="fp32,bf16+cl", batch=2, n=2, chunk=2, noisegrad_m=1, fusion="1x2",
                 repeats=2, image_size=None),
}


def core_cases(n, chunk, m, fusion, backend):
    fm, fn = fusion
    yield Case("floor", "floor", n=n, chunk=chunk)
    yield Case("captum", "smoothgrad", n=n, chunk=chunk)
    yield Case("plain", "smoothgrad", n=n, chunk=chunk)
    yield Case("fastmollify", "smoothgrad", n=n, chunk=chunk, backend=backend)
    yield Case("floor", "floor-noisegrad", m=m, chunk=1)
    yield Case("fastmollify", "weight_writes", m=m, chunk=1, backend=backend)
    yield Case("fastmollify", "noisegrad", m=m, chunk=1, backend=backend)
    yield Case("authors", "noisegrad", m=m, chunk=1)
    yield Case("floor", "floor-fusiongrad", n=fn, m=fm, chunk=min(chunk, fn))
    yield Case("fastmollify", "fusiongrad", n=fn, m=fm, chunk=min(chunk, fn), backend=backend)
    yield Case("authors", "fusiongrad", n=fn, m=fm, chunk=1)


def other_method_cases(n, chunk, backend):
    yield Case("floor", "floor", n=n, chunk=chunk)  # every pass times its own floor: ratios pair by round
    for method in INPUT_METHODS:
        if method != "smoothgrad":
            yield Case("fastmollify", method, n=n, chunk=chunk, backend=backend)


def other_backend_cases(n, chunk, m, fusion, backend):
    fm, fn = fusion
    yield Case("floor", "floor", n=n, chunk=chunk)
    for method in INPUT_METHODS:
        yield Case("fastmollify", method, n=n, chunk=chunk, backend=backend)
    yield Case("floor", "floor-noisegrad", m=m, chunk=1)
    yield Case("fastmollify", "weight_writes", m=m, chunk=1, backend=backend)
    yield Case("fastmollify", "noisegrad", m=m, chunk=1, backend=backend)
    yield Case("floor", "floor-fusiongrad", n=fn, m=fm, chunk=min(chunk, fn))
    yield Case("fastmollify", "fusiongrad", n=fn, m=fm, chunk=min(chunk, fn), backend=backend)


def parse_dtype(text: str):
    """'fp32', 'bf16', with '+cl' for channels_last."""
    dtype, _, suffix = text.partition("+")
    if dtype not in ("fp32", "bf16") or suffix not in ("", "cl"):
        raise ValueError(f"dtype must be fp32 or bf16, optionally +cl, got {text!r}")
    return dtype, suffix == "cl"


def main(argv=None) -> list[dict]:
    parser = cli.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated (resnet50,vgg16)")
    parser.add_argument("--dtypes", default=None, help="comma-separated: fp32, bf16, with +cl for channels_last")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--n", type=int, default=None, help="samples per example (input-noise methods)")
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--noisegrad-m", type=int, default=None, help="NoiseGrad weight draws")
    parser.add_argument("--fusion", default=None, help="FusionGrad draws as MxN")
    parser.add_argument("--image-size", type=int, default=None)
    args = parser.parse_args(argv)
    device = cli.start(args)
    preset = dict(DEFAULTS["tiny" if args.tiny else "cuda" if device.startswith("cuda") else "cpu"])
    models = cli.names(args.models or preset["models"])
    dtypes = [parse_dtype(d) for d in cli.names(args.dtypes or preset["dtypes"])]
    batch, n = args.batch or preset["batch"], args.n or preset["n"]
    chunk = min(args.chunk or preset["chunk"], n)
    m = args.noisegrad_m or preset["noisegrad_m"]
    fusion = tuple(int(v) for v in (args.fusion or preset["fusion"]).lower().split("x"))
    repeats = args.repeats or preset["repeats"]
    image_size = args.image_size or preset["image_size"]
    backends = cli.select_backends(args, device, include_reference=False)
    budget = timing.Budget(args.budget)
    setups = {}
    for model in models:
        for dtype, channels_last in dtypes:
            setups[(model, dtype, channels_last)] = zoo.Setup(
                zoo.SetupSpec(model, batch, device, dtype, channels_last, image_size))
    first = next(iter(setups.values()))
    if not args.quiet:
        print(f"Throughput on {runner.device_name(first.device)}: {','.join(models)} {first.image} B={batch} "
              f"N={n} chunk={chunk} noisegrad m={m} fusiongrad {fusion[0]}x{fusion[1]} "
              f"backends={','.join(backends)}", flush=True)
    passes = [lambda: core_cases(n, chunk, m, fusion, backends[0]),
              lambda: other_method_cases(n, chunk, backends[0])]
    for other in backends[1:]:
        passes.append(lambda other=other: other_backend_cases(n, chunk, m, fusion, other))
    rows = []
    for make_cases in passes:
        for setup in setups.values():  # the cases of one pass, model and precision are timed interleaved
            rows += runner.run_cases(SCRIPT, setup, list(make_cases()), repeats, budget, args.fresh_process,
                                     verbose=not args.quiet)
            results_io.write_rows(rows, SCRIPT, device, args.out)
    return results_io.finish(rows, SCRIPT, device, args, plot)


def plot(rows, path) -> None:
    plt = plotting.plt()
    good = [r for r in ratios.without_repeated_floors(rows) if r["median_s"] is not None
            and r["method"] != "weight_writes"]
    if plt is None or not good:
        return
    configs = sorted({(r["model"], r["dtype"], r["channels_last"]) for r in good})
    fig, axes = plt.subplots(1, len(configs), figsize=(max(8.0, 5.2 * len(configs)), 8.2), squeeze=False)
    for ax, config in zip(axes[0], configs):
        mine = [r for r in good if (r["model"], r["dtype"], r["channels_last"]) == config]
        mine.sort(key=lambda r: (r["method"].replace("floor-", ""), r["impl"] != "floor", r["label"]))
        names = [f"{r['method']} | {r['label']}" for r in mine]
        colors = ["grey" if r["impl"] == "floor" else "tab:blue" if r["impl"] == "fastmollify" else "tab:orange"
                  for r in mine]
        ax.barh(range(len(mine)), [r["throughput"] for r in mine], color=colors)
        ax.set_yticks(range(len(mine)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("samples x images / s")
        ax.set_title(f"{config[0]} {config[1]}{'+channels_last' if config[2] else ''}", fontsize=9)
        for y, r in enumerate(mine):
            if r["ratio_to_floor"]:
                ax.text(r["throughput"], y, f" {r['ratio_to_floor']:.2f}x", va="center", fontsize=6)
    first = good[0]
    fig.suptitle(f"throughput, B={first['B']} {first['image']} - {first['device']}\n"
                 f"(bar labels: time / floor; grey: floor, blue: fastmollify, orange: peers)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
