"""``python -m fastmollify [demo | attribute | show | evaluate | check | bench]`` (no subcommand: demo).

``attribute --data ... --store ...`` and ``show`` live in ``fastmollify.dataset.cli``.

Bad input (an unreadable image, a ``module:callable`` that does not import, an unknown
method or option) gives one line ``fastmollify: error: ...`` on stderr and exit status 2;
``FASTMOLLIFY_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import runpy
import sys
import time
from pathlib import Path

PROG = "fastmollify"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
METHOD_NAMES = ("gradient", "smoothgrad", "mollify", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad",
                "integrated_gradients", "gradient_x_input")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _threads(n):
    import torch

    if n:
        torch.set_num_threads(int(n))


# --- demo -------------------------------------------------------------------------------------------

def demo(args) -> int:
    import torch

    from . import compose, data, methods, models, viz
    from .gradcam import gradcam

    _threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    print("loading the built-in CNN for the synthetic shapes (its weights ship with the package) ...", flush=True)
    model = models.shapes_model(verbose=args.verbose)
    x, y, _ = data.shapes(max(args.images, 64), seed=7)
    acc = models.accuracy(model, x, y)
    x, y = x[:args.images], y[:args.images]
    print(f"model ready in {time.perf_counter() - start:.1f} s (test accuracy {acc:.3f}); explaining {len(x)} "
          f"images with N = {args.n}", flush=True)
    n, b = args.n, (0.0, 1.0)
    runs = {
        "gradient": lambda: methods.gradient(model, x, y, reduce="stats"),
        "smoothgrad": lambda: methods.smoothgrad(model, x, y, n=n, bounds=b, reduce="stats"),
        "clipgrad": lambda: methods.clipgrad(model, x, y, n=n, bounds=b, reduce="stats"),
        "adaptgrad": lambda: methods.adaptgrad(model, x, y, n=n, bounds=b, reduce="stats"),
        "noisegrad": lambda: methods.noisegrad(model, x, y, m=max(1, n // 2), reduce="stats"),
        "fusiongrad": lambda: methods.fusiongrad(model, x, y, m=max(1, round(n ** 0.5)), n=max(1, round(n ** 0.5)),
                                                 bounds=b, reduce="stats"),
    }
    for kernel in ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular"):
        runs[f"mollify {kernel}"] = (lambda k: lambda: methods.mollify(model, x, y, kernel=k, r=0.4, n=n,
                                                                       reduce="stats"))(kernel)
    runs["IG + adaptgrad"] = lambda: compose.integrated_gradients(model, x, y, inner="adaptgrad", steps=8,
                                                                  n=max(1, n // 8), bounds=b, reduce="stats")
    # Grad-CAM at the last convolution ('6', before its ReLU), plain and with SmoothGrad noise there: [B, H, W] maps
    runs["Grad-CAM"] = lambda: gradcam(model, x, y, layer="6", method="gradient")
    runs["Smooth Grad-CAM"] = lambda: gradcam(model, x, y, layer="6", method="smoothgrad", n=n)
    maps, rows = {}, []
    for name, fn in runs.items():
        t = time.perf_counter()
        stats = fn()
        seconds = time.perf_counter() - t
        if isinstance(stats, torch.Tensor):  # Grad-CAM: a map, no per-pixel statistics
            maps[name] = stats
            rows.append((name, seconds, float("nan"), 1 if name == "Grad-CAM" else n, "-"))
            continue
        maps[name] = stats.mean
        rows.append((name, seconds, float(stats.stderr.mean()), int(stats.n), stats.backend))
    labels = [data.SHAPE_CLASSES[int(c)] for c in y]
    path = viz.grid(x, maps, out / "demo.png", row_labels=labels,
                    title="fastmollify demo: signed maps of the true class (red +, blue −)")
    width = max(len(r[0]) for r in rows)
    print(f"\n{'method':<{width}}  {'seconds':>8}  {'mean std. error':>15}  {'N':>4}  backend")
    for name, seconds, se, count, backend in rows:
        error = f"{se:>15.3e}" if se == se else f"{'undefined (N=1)' if count == 1 else 'n/a':>15}"
        print(f"{name:<{width}}  {seconds:>8.2f}  {error}  {count:>4}  {backend}")
    print(f"\nwrote {path} (total {time.perf_counter() - start:.1f} s)")
    return 0


# --- attribute ----------------------------------------------------------------------------------------

def _load_callable(spec: str):
    if ":" not in spec:
        raise CLIError(f"--model must be 'module:callable' (e.g. fastmollify.models:shapes_model), got {spec!r}")
    module_name, _, attr = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure while importing the user's module is a user error
        raise CLIError(f"cannot import module {module_name!r} for --model: {type(error).__name__}: {error}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"module {module_name!r} has no attribute {attr!r} (--model {spec})")
        obj = getattr(obj, part)
    return obj


def _model(spec: str):
    import torch

    obj = _load_callable(spec)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise CLIError(f"--model {spec} is neither an nn.Module nor a callable returning one")
        obj = obj()
    if not isinstance(obj, torch.nn.Module) and not callable(obj):
        raise CLIError(f"--model {spec} returned {type(obj).__name__}, not a model")
    return obj.eval() if isinstance(obj, torch.nn.Module) else obj


def _parse_option(text: str):
    if "=" not in text:
        raise CLIError(f"--option must be key=value, got {text!r}")
    key, _, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not key.isidentifier():
        raise CLIError(f"--option name {key!r} is not a valid name")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare string, e.g. kernel=poisson


def method_options(method: str, texts) -> dict:
    """The ``-o key=value`` options of ``method``, checked before any work: each must be one the
    method takes (for integrated_gradients/gradient_x_input: theirs or their inner method's), and
    reduce must give a map."""
    from . import compose, methods

    options = dict(_parse_option(t) for t in texts or [])
    if options.get("reduce", "mean") not in ("mean", "sq", "var"):
        raise CLIError(f"-o reduce={options['reduce']}: this command writes maps; use reduce=mean, sq or var")
    checked, method_name = options, method
    if method in ("integrated_gradients", "gradient_x_input"):
        own = [n for n, p in inspect.signature(getattr(compose, method)).parameters.items() if p.kind is p.KEYWORD_ONLY]
        checked = {k: v for k, v in options.items() if k not in own}
        method_name = options.get("inner", "smoothgrad")
        if method_name not in methods.METHODS:
            raise CLIError(f"-o inner={method_name}: choose one of {', '.join(methods.METHODS)}")
    try:
        methods.check_options(method_name, checked)
    except TypeError as error:
        raise CLIError(f"-o: {error}") from None
    return options


def normalisation(mean, std, channels: int):
    """``(mean, std)`` as ``[1, C, 1, 1]`` tensors (or None), refusing a wrong count or a zero std."""
    import torch

    if mean is None and std is None:
        return None
    for name, values in (("--mean", mean), ("--std", std)):
        if values is not None and len(values) not in (1, channels):
            raise CLIError(f"{name} has {len(values)} values for {channels}-channel images: give 1 or {channels}")
    if std is not None and any(v == 0 for v in std):
        raise CLIError("--std has a zero: every channel's std must be non-zero")
    mean = torch.tensor(mean or [0.0]).expand(channels).reshape(1, -1, 1, 1)
    std = torch.tensor(std or [1.0]).expand(channels).reshape(1, -1, 1, 1)
    return mean, std


def _read_image(path: Path, size, channels: int):
    import numpy as np
    import torch

    try:
        from PIL import Image
    except ImportError as error:
        raise CLIError(f"reading images needs Pillow (pip install pillow): {error}") from None
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size:
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(img, dtype=np.float32) / 255.0
    except Exception as error:  # PIL raises many types for a bad file
        raise CLIError(f"cannot read image {path}: {type(error).__name__}: {error}") from None
    t = torch.from_numpy(a.copy())
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def attribute(args) -> int:
    if args.images is None:  # the data-set mode
        from .dataset import cli as dataset_cli

        return dataset_cli.attribute(args, _model, _parse_option)
    import numpy as np
    import torch

    from . import compose, methods, viz

    if isinstance(args.target, str):
        raise CLIError(f"--target {args.target} needs --data; with --images give a class index (default: predicted)")
    _threads(args.threads)
    if args.method not in METHOD_NAMES:
        raise CLIError(f"unknown method {args.method!r}; choose one of {', '.join(METHOD_NAMES)}")
    options = method_options(args.method, args.option)
    norm = normalisation(args.mean, args.std, args.channels)
    fn = getattr(compose if args.method in ("integrated_gradients", "gradient_x_input") else methods, args.method)
    folder = Path(args.images)
    if folder.is_file():
        paths = [folder]
    elif folder.is_dir():
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise CLIError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    else:
        raise CLIError(f"--images {folder}: no such file or folder")
    model = _model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = [(p, _read_image(p, args.size, args.channels)) for p in paths]  # fail before any work
    from tqdm.auto import tqdm

    bar = tqdm(images, desc=f"{args.method}", unit="image", disable=args.quiet or None)
    for path, img in bar:
        x = img[None]
        if norm is not None:
            x = (x - norm[0]) / norm[1]
        with torch.no_grad():
            scores = model(x)
        target = args.target if args.target is not None else (int(scores.argmax(1)) if scores.dim() == 2 else None)
        attribution = fn(model, x, target, **options)
        a = attribution[0].detach().float().cpu()
        np.save(out / f"{path.stem}.npy", a.numpy())
        viz.save_overlay(out / f"{path.stem}.png", img, a, signed=None if not args.absolute else False,
                         title=f"{args.method} · class {target}")
    print(f"wrote {len(images)} overlays (.png) and raw maps (.npy) to {out}")
    return 0


# --- evaluate / check / bench -------------------------------------------------------------------------

def _default_evaluation_out() -> Path:
    if (SOURCE_ROOT / "pyproject.toml").is_file():  # a source checkout (not an installed copy)
        return SOURCE_ROOT / "docs" / "evaluation"
    return Path("fastmollify-out") / "evaluation"


def evaluate_cmd(args) -> int:
    from . import evaluate

    _threads(args.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    out = Path(args.out) if args.out else _default_evaluation_out()
    if args.verify:
        if args.model or args.quick or args.retrain:
            raise CLIError("--verify reruns the committed settings: drop --model, --quick and --retrain")
        results = Path(args.results) if args.results else out / "results.json"
        differences = evaluate.verify(results, images=args.images, rows=args.rows or None, log=log)
        for line in differences:
            print(f"differs: {line}", file=sys.stderr)
        print("verify: " + ("all values agree" if not differences else f"{len(differences)} values differ"))
        return 1 if differences else 0
    if args.model:
        if not args.data or not args.data.startswith("imagefolder:"):
            raise CLIError("--model needs --data imagefolder:PATH (a folder with one sub-folder per class)")
        from .evaluation.user import run_user

        run_user(Path(args.out or "fastmollify-out/evaluation"), arch=args.model, weights=args.weights,
                 folder=args.data[len("imagefolder:"):], images=args.images or 32, protocol=args.protocol or "default",
                 log=log)
        return 0
    default_out = not args.out and out == SOURCE_ROOT / "docs" / "evaluation" and not args.quick
    protocols = [args.protocol] if args.protocol else ["default", "authors"]
    evaluate.run(out, quick=args.quick, log=log, retrain=args.retrain, protocols=protocols,
                 docs=out.parent / "evaluation.md" if default_out and len(protocols) == 2 else None,
                 readme=SOURCE_ROOT / "README.md" if default_out and len(protocols) == 2 else None)
    return 0


def check(args) -> int:
    """Each backend's availability, and an agreement test of every available one against the reference."""
    import torch

    from . import kernels
    from .ops import ADAPTIVE, FIXED, RANGE, dispatch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    reference = dispatch.load("reference")
    failed = []
    for device in devices:
        print(f"{device}:")
        for name, reason in dispatch.availability(device).items():
            if reason is not None:
                print(f"  {name:<10} unavailable: {reason}")
                continue
            if name == "reference":
                print(f"  {name:<10} available (the oracle)")
                continue
            problems = _agreement(dispatch.load(name), reference, device, kernels, (FIXED, RANGE, ADAPTIVE))
            if problems:
                failed.append(f"{name} on {device}")
                print(f"  {name:<10} available, DISAGREES with the reference: {problems[0]}"
                      + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
            else:
                print(f"  {name:<10} available, agrees with the reference (perturb, accumulate, perturb_weights)"
                      + (f"; Philox path: {_philox_path()}" if name == "cpu" else ""))
    if failed:
        print(f"{PROG}: error: backend(s) disagree with the reference: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _philox_path() -> str:
    from . import _C

    return {2: "AVX-512", 1: "AVX2", 0: "scalar"}.get(_C.philox_path(), "unknown")


def _agreement(backend, reference, device, kernels, modes) -> list:
    import torch

    g = torch.Generator().manual_seed(0)
    problems = []
    b, d, s = 3, 37, 5
    x = torch.rand(b, d, generator=g).to(device)
    lo, hi = torch.zeros(1, device=device), torch.ones(1, device=device)

    def close(name, got, want, rtol=1e-4, atol=1e-5):
        try:
            torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
        except AssertionError as error:
            problems.append(f"{name}: {str(error).splitlines()[0]}")

    # every kernel with a fixed scale; every sigma mode and clipping with the Gaussian
    cases = [(k, modes[0], False) for k in ("poisson", "hyperbolic", "sigmoid", "rectangular")]
    cases += [("gaussian", mode, clip) for mode in modes for clip in (False, True)]
    for kernel_name, mode, clip in cases:
        kid = kernels.get(kernel_name).id
        args = dict(seed=1234, stream=0, sample_start=3, example_offset=2, kernel=kid, scale=0.3,
                    sigma_mode=mode, clip=clip)
        got, want = torch.empty(s, b, d, device=device), torch.empty(s, b, d, device=device)
        try:
            backend.perturb(x, got, lo, hi, **args)
        except Exception as error:  # report, do not crash the check
            problems.append(f"perturb {kernel_name} mode {mode}: raised {type(error).__name__}: {error}")
            continue
        reference.perturb(x, want, lo, hi, **args)
        close(f"perturb {kernel_name} mode {mode} clip {clip}", got, want)
    grads = torch.randn(2 * s, b, d, generator=g).to(device)
    weights = (torch.rand(s, generator=g) + 0.5).to(device)
    states = []
    for ops in (backend, reference):
        mean, m2 = torch.zeros(b, d, device=device), torch.zeros(b, d, device=device)
        try:
            ops.accumulate(mean, m2, grads[:s], None, 0.0)
            ops.accumulate(mean, m2, grads[s:], weights, float(s))
        except Exception as error:
            problems.append(f"accumulate raised {type(error).__name__}: {error}")
            return problems
        states.append((mean, m2))
    close("accumulate mean", states[0][0], states[1][0])
    close("accumulate m2", states[0][1], states[1][1])
    clean = torch.randn(4, 9, generator=g).to(device)
    got, want = torch.empty_like(clean), torch.empty_like(clean)
    try:
        backend.perturb_weights(clean, got, seed=7, draw=2, index=1, sigma=0.2)
        reference.perturb_weights(clean, want, seed=7, draw=2, index=1, sigma=0.2)
        close("perturb_weights", got, want)
    except Exception as error:
        problems.append(f"perturb_weights raised {type(error).__name__}: {error}")
    return problems


def bench(args) -> int:
    script = SOURCE_ROOT / "benchmarks" / "cpu_suite.py"
    if not script.is_file():
        raise CLIError(f"the benchmark suite needs a source checkout: {script} not found")
    sys.argv = [str(script)] + list(args.rest)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:  # the suite's own exit status
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


# --- the parser ---------------------------------------------------------------------------------------

def _size(text: str):
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be H,W or HxW or one number, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be H,W or HxW or one number, got {text!r}")
    return tuple(parts)


def _floats(text: str):
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Fused gradient-smoothing attributions for PyTorch. "
                                "With no subcommand: the demo.")
    from .dataset import cli as dataset_cli

    sub = p.add_subparsers(dest="command", metavar="{demo,attribute,show,evaluate,check,bench}")

    d = sub.add_parser("demo", help="load the built-in model, explain a few images with every method, write a PNG",
                       description="Load the built-in CNN for synthetic shapes (shipped weights), explain a few test "
                       "images with every method, write a PNG grid and print (method, seconds, mean standard error).")
    d.add_argument("--out", default="fastmollify-out", help="output folder (default: ./fastmollify-out)")
    d.add_argument("--images", type=int, default=4, help="images to explain (default 4)")
    d.add_argument("-n", "--n", type=int, default=50, help="samples per image (default 50)")
    d.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    d.add_argument("--verbose", action="store_true", help="print training progress")
    d.set_defaults(func=demo)

    a = sub.add_parser("attribute", help="explain the images of a folder with any model and method",
                       description="Explain images with a model given as module:callable (an nn.Module, or a "
                       "callable returning one). Writes <image>.png (heatmap overlay) and <image>.npy (raw map, "
                       "[C, H, W]) per image. Example: python -m fastmollify attribute --model "
                       "fastmollify.models:shapes_model --images pics/ --method adaptgrad --option n=50 "
                       "--option 'bounds=(0, 1)'")
    a.add_argument("--model", required=True, help="module:callable giving an nn.Module (module found on "
                   "sys.path or in the current folder)")
    a.add_argument("--images", help="a folder of images (or one image file); or --data (below)")
    a.add_argument("--method", default="smoothgrad", help=f"one of {', '.join(METHOD_NAMES)} (default smoothgrad)")
    a.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="a method option (repeatable), value as a Python literal: n=50, c=0.99, kernel=poisson, "
                   "'bounds=(0, 1)', inner=adaptgrad")
    a.add_argument("--target", type=dataset_cli.target_arg, default=None,
                   help="class to explain: an index, or with --data also 'label' (default: the predicted class)")
    a.add_argument("--size", type=_size, default=None, help="resize images to H,W (default: keep)")
    a.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 (grey) or 3 (RGB, default)")
    a.add_argument("--mean", type=_floats, default=None, help="per-channel mean to subtract, e.g. 0.485,0.456,0.406")
    a.add_argument("--std", type=_floats, default=None, help="per-channel std to divide by")
    a.add_argument("--absolute", action="store_true", help="draw |map| with a sequential colour map")
    a.add_argument("--out", default="fastmollify-out", help="output folder (default: ./fastmollify-out)")
    a.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    dataset_cli.add_attribute_options(a)
    a.set_defaults(func=attribute)
    dataset_cli.add_show_parser(sub)

    e = sub.add_parser("evaluate", help="paper-style tables and plots on the built-in data",
                       description="Reproduce the papers' tables (kernels; methods), the N-sweep of the Monte Carlo "
                       "error and a check of the papers' claims, on the built-in data. Writes markdown and PNGs.")
    e.add_argument("--out", default=None, help="output folder (default: docs/evaluation in a source checkout, "
                   "else ./fastmollify-out/evaluation)")
    e.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests, numbers meaningless)")
    e.add_argument("--protocol", choices=("default", "authors"), default=None,
                   help="only this protocol (default: both; 'authors' follows the AdaptGrad authors' code)")
    e.add_argument("--retrain", action="store_true", help="train the built-in models instead of loading the "
                   "shipped weights (bit-identical only on the same CPU and torch build)")
    e.add_argument("--verify", action="store_true", help="rerun a representative subset in a fresh cache and "
                   "compare with results.json; exit 1 naming the values that differ")
    e.add_argument("--results", default=None, help="--verify: the results.json to check (default: OUT/results.json)")
    e.add_argument("--rows", nargs="*", default=None, help="--verify: only these rows (e.g. default/paper2/Grad)")
    e.add_argument("--images", type=int, default=None, help="--verify: first images per row (default: all kept); "
                   "--model: images of the folder (default 32)")
    e.add_argument("--model", default=None, help="a torchvision architecture (e.g. resnet50) with --weights and "
                   "--data imagefolder:PATH: the tables its data allow (sparseness, faithfulness)")
    e.add_argument("--weights", default=None, help="--model: a state_dict file (nothing is downloaded)")
    e.add_argument("--data", default=None, help="--model: imagefolder:PATH")
    e.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the many small batches "
                   "gain nothing from more, and extra threads lose badly on busy shared cores)")
    e.set_defaults(func=evaluate_cmd)

    c = sub.add_parser("check", help="backend availability and agreement with the reference backend",
                       description="Print each backend's availability and test every available backend's "
                       "perturb/accumulate/perturb_weights against fastmollify.ops.reference on random data. "
                       "Exit status 1 if an available backend disagrees.")
    c.set_defaults(func=check)

    b = sub.add_parser("bench", help="run the CPU benchmark suite (benchmarks/cpu_suite.py of a source checkout)",
                       description="Run benchmarks/cpu_suite.py from the source checkout; extra arguments go to it.")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the suite")
    b.set_defaults(func=bench)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args, unknown = p.parse_known_args(argv)
    if args.command == "bench":  # everything after 'bench' belongs to the suite
        args.rest = argv[argv.index("bench") + 1:]
    elif unknown:
        p.parse_args(argv)  # argparse's usual one-line error for the unknown arguments (exit 2)
    if args.command is None:
        args = p.parse_args(["demo"])
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, ImportError, OSError, RuntimeError) as error:
        if os.environ.get("FASTMOLLIFY_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
