"""The command line every benchmark script shares: its options, and applying them."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from . import RESULTS, timing
from .contenders import available_backends


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (median reported)")
    parser.add_argument("--budget", type=float, default=None, help="seconds this script may take (skips the rest)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated fastmollify backends (default: every available one)")
    parser.add_argument("--fresh-process", action="store_true",
                        help="run every case in a fresh subprocess (CPU peak memory by plain peak RSS)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def start(args) -> str:
    """Apply the shared options; the device to run on."""
    if args.tiny:
        timing.MIN_TIMED_S = 0.0  # the smoke test: the asked rounds only
    if args.threads:
        torch.set_num_threads(args.threads)
    return args.device or default_device()


def ints(text: Optional[str]) -> Optional[list[int]]:
    return None if text is None else [int(v) for v in text.split(",") if v]


def names(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def select_backends(args, device, include_reference: bool = True) -> list[str]:
    chosen = names(args.backends)
    if chosen:
        return chosen
    return available_backends(device, include_reference)
