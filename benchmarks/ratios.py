"""Ratios to the floor: each row's time (and peak memory) over its floor's, paired by round where possible."""
from __future__ import annotations

import statistics
from typing import Sequence

from .contenders import WEIGHT_METHODS


def config_key(row: dict) -> tuple:
    """What makes two rows the same configuration: script, device, model, precision, image size, batch."""
    return (row["script"], row["device"], row["model"], row["dtype"], row["channels_last"], row["image"], row["B"])


def paired_ratio(row: dict, parts: Sequence[dict]) -> tuple[float, str]:
    """``row``'s time over the summed time of ``parts``, and how it was formed.

    ``"paired"``: rows timed interleaved (one group, one call each per round) give the median over
    rounds of ``t_row[r] / sum(t_part[r])``; calls made side by side see the same machine load, so
    this ratio holds where absolute times drift (a shared CPU). Otherwise ``"medians"``: the ratio
    of the medians.
    """
    rounds = round_ratios(row, parts)
    if rounds:
        return statistics.median(rounds), "paired"
    return row["median_s"] / sum(p["median_s"] for p in parts), "medians"


def round_ratios(row: dict, parts: Sequence[dict]) -> list:
    """``t_row[r] / sum(t_part[r])`` for every round r, where the rows were timed interleaved; else []."""
    series = [row.get("times_s") or []] + [p.get("times_s") or [] for p in parts]
    if row.get("group") is None or any(p.get("group") != row["group"] for p in parts) \
            or not series[0] or len({len(s) for s in series}) != 1:
        return []
    return [t / sum(rest) for t, *rest in zip(*series)]


def attach_ratios(rows: Sequence[dict]) -> None:
    """Fill each row's floor time, ratio to the floor (``paired_ratio``), and memory ratio, in place.

    Input-noise methods and the peers: the floor of the same N and chunk, preferably from the
    row's own interleaved group. NoiseGrad and FusionGrad (ours and the authors'): the floor of
    the same draws (and chunks) plus the weight writes of the row's backend (the authors' rows:
    the first compiled backend's writes); their memory floor adds one copy of the model's weights
    (clean and noisy weights must both exist). ``ratio_of_mins`` is the same ratio from each
    row's fastest call, the least disturbed one.
    """
    floors, writes = {}, {}
    for row in rows:
        if row["median_s"] is None:
            continue
        if row["impl"] == "floor":
            floors.setdefault((config_key(row), row["method"], row["n"], row["m"]), []).append(row)
        elif row["method"] == "weight_writes":
            writes.setdefault((config_key(row), row["m"]), []).append(row)

    def closest(candidates, row):  # same group first, then same chunk
        return min(candidates, key=lambda c: (c.get("group") != row.get("group"), c["chunk"] != row["chunk"]),
                   default=None)

    for row in rows:
        if row["median_s"] is None or row["impl"] == "floor" or row["method"] == "weight_writes":
            continue
        key = config_key(row)
        parts = []
        if row["method"] in WEIGHT_METHODS:
            n = row["n"] if row["method"] == "fusiongrad" else 1
            floor = closest(floors.get((key, f"floor-{row['method']}", n, row["m"]), []), row)
            by_backend = writes.get((key, row["m"]), [])
            mine = [w for w in by_backend if w["backend"] == row["backend"]] or [
                w for b in ("cuda", "cpu", "triton", "reference") for w in by_backend if w["backend"] == b]
            write = closest(mine, row)
            parts = [floor, write] if write else [floor]
        else:
            floor = closest(floors.get((key, "floor", row["n"], 0), []), row)
            parts = [floor]
        if floor is None:
            continue
        row["floor_s"] = sum(p["median_s"] for p in parts)
        row["ratio_to_floor"], row["ratio_kind"] = paired_ratio(row, parts)
        row["ratio_of_mins"] = row["min_s"] / sum(p["min_s"] for p in parts)
        if floor["peak_mem_bytes"] and row["peak_mem_bytes"] is not None:
            # weight noise holds a second copy of the weights (our noisy buffer; the authors' saved state_dict)
            copy = row.get("weights_bytes") or 0 if row["method"] in WEIGHT_METHODS else 0
            row["floor_mem_bytes"] = floor["peak_mem_bytes"] + copy
            row["mem_ratio_to_floor"] = row["peak_mem_bytes"] / row["floor_mem_bytes"]


def without_repeated_floors(rows: Sequence[dict]) -> list:
    """The rows with each floor (and weight-write timing) once: later passes re-time them only to pair."""
    seen, kept = set(), []
    for row in rows:
        if row["impl"] == "floor" or row["method"] == "weight_writes":
            key = (config_key(row), row["method"], row["n"], row["m"], row["chunk"], row["backend"])
            if key in seen:
                continue
            seen.add(key)
        kept.append(row)
    return kept
