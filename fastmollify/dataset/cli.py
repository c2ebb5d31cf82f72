"""The command line of data-set runs: ``attribute --data ... --store ...`` and ``show STORE --index I``.

``add_attribute_options`` and ``add_show_parser`` register the arguments on ``fastmollify``'s
parser; ``attribute`` and ``show`` run them. Errors are ``DatasetRunError``: one line, exit 2.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import DatasetRunError


def target_arg(text: str):
    """``--target``: 'label', 'predicted' or a class index."""
    if text in ("label", "predicted"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target must be 'label', 'predicted' or a class index, got {text!r}") \
            from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--target must be >= 0, got {value}")
    return value


def add_attribute_options(parser: argparse.ArgumentParser) -> None:
    """The data-set mode's options of ``attribute`` (besides --model, --method, -o, --size, --mean, --std...)."""
    g = parser.add_argument_group("data-set mode (--data): attributions of every example into a zarr store; "
                                  "run it under torchrun for many processes")
    g.add_argument("--data", help="a folder in torchvision's ImageFolder layout (one sub-folder per class), or "
                   "module:callable returning a Dataset of (image tensor, label)")
    g.add_argument("--store", help="the zarr store to write, e.g. maps.zarr (resumed if it exists)")
    g.add_argument("--batch-size", type=int, default=32, help="examples per method call (default 32)")
    g.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes (default: min(8, CPUs per process - 1))")
    g.add_argument("--map-dtype", choices=("float32", "float16"), default="float32", help="dtype of the stored maps")
    g.add_argument("--channels-reduce", choices=("none", "sum"), default="none",
                   help="'sum' stores [N, H, W] maps summed over channels (default: none, [N, C, H, W])")
    g.add_argument("--limit", type=int, default=None, help="only the first K examples")
    g.add_argument("--block", type=int, default=None,
                   help="examples per store chunk (default: about 16 MiB of maps, at most 64)")
    g.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK when CUDA is available, else cpu), "
                   "cpu, cuda or cuda:K")
    g.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    g.add_argument("--overwrite", action="store_true", help="replace a store that holds other settings")


def _default_workers() -> int:
    per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, per_process - 1))


def attribute(args, load_model, parse_option) -> int:
    """``attribute --data``: ``load_model(spec)`` and ``parse_option(text)`` are the CLI's own helpers."""
    import torch

    from .run import attribute_dataset

    if args.data is None:
        raise DatasetRunError("attribute needs --images FOLDER (PNG overlays per image) or --data FOLDER|"
                              "module:callable with --store PATH (a zarr store of every example's map)")
    if args.store is None:
        raise DatasetRunError("--data needs --store PATH, e.g. --store maps.zarr")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    model = load_model(args.model)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    summary = attribute_dataset(
        model, args.data, store=args.store, method=args.method, batch_size=args.batch_size,
        workers=_default_workers() if args.workers is None else args.workers,
        target="predicted" if args.target is None else args.target, size=args.size, mean=args.mean, std=args.std,
        channels=args.channels, map_dtype=args.map_dtype, channels_reduce=args.channels_reduce, limit=args.limit,
        block=args.block, device=device, strict=args.strict, overwrite=args.overwrite,
        progress=False if args.quiet else None, model_spec=args.model,
        **dict(parse_option(o) for o in args.option or []))
    if summary.rank == 0:
        print(summary.line(), flush=True)
    return 0


def add_show_parser(sub) -> None:
    s = sub.add_parser("show", help="draw one example's map from a store next to its image",
                       description="Render the heatmap overlay of one example of a store written by "
                       "`attribute --data`, next to the image (read again from the store's data set).")
    s.add_argument("store", help="the zarr store, e.g. maps.zarr")
    s.add_argument("--index", type=int, required=True, help="the example's index in the data set")
    s.add_argument("--out", default=None, help="the PNG to write (default: <store name>-<index>.png here)")
    s.add_argument("--absolute", action="store_true", help="draw |map| with a sequential colour map")
    s.set_defaults(func=show)


def show(args) -> int:
    from .. import viz
    from . import data
    from .store import open_store

    st = open_store(args.store)
    if not 0 <= args.index < len(st):
        raise DatasetRunError(f"--index {args.index} is outside the store's {len(st)} examples")
    reason = st.errors[args.index]
    if reason:
        raise DatasetRunError(f"example {args.index} was skipped when the store was written: {reason}")
    if not st.done[args.index]:
        raise DatasetRunError(f"example {args.index} is not computed yet: resume the run that writes {args.store}")
    cfg = st.config["data"]
    if cfg["kind"] == "object":
        raise DatasetRunError(f"the store was written from a Dataset object ({cfg['spec']}) that show cannot load "
                              f"again; draw it with fastmollify.viz.save_overlay(path, image, "
                              f"open_store(...).maps[{args.index}])")
    source = data.source(cfg["spec"], cfg["channels"] or 3)
    if source.fingerprint != cfg["fingerprint"]:
        raise DatasetRunError(f"the data set at {cfg['spec']} is not the one the store was written from (its listing "
                              f"changed)")
    image, label = data.Items(source.dataset, cfg["size"]).image(args.index)
    out = Path(args.out or f"{Path(str(args.store).rstrip('/')).stem}-{args.index}.png")
    target = int(st.targets[args.index])
    title = f"{st.config['method']} · example {args.index} · class {target} (label {label})"
    viz.grid(image[None], {title: st.maps[args.index][None]}, out, signed=None if not args.absolute else False)
    print(f"wrote {out}")
    return 0
