"""Summary tables of the benchmark results, and the targets measured (reported, never asserted).

    python -m benchmarks.summary                 # the newest device's results (gpu if present, else cpu)
    python -m benchmarks.summary --tag cpu --markdown   # markdown, for docs/performance.md

Reads ``results/{scaling,throughput,small,memory,convergence}_<tag>.json`` and any ``results/ops_*.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import RESULTS, ratios, results_io  # noqa: E402
from .contenders import INPUT_METHODS, WEIGHT_METHODS  # noqa: E402

SCRIPTS = ("throughput", "small", "scaling")
PREFERRED = ("cuda", "triton", "cpu", "reference")


def load(out: Path, tag: str) -> dict[str, list[dict]]:
    found = {}
    for script in SCRIPTS:
        path = out / f"{script}_{tag}.json"
        if path.exists():
            rows = results_io.read_rows(path)
            ratios.attach_ratios(rows)
            found[script] = rows
    return found


def load_memory(out: Path, tag: str) -> list[dict]:
    """The rows of ``benchmarks/bench_memory.py`` (peak memory vs n at the default chunk), if any."""
    path = out / f"memory_{tag}.json"
    return results_io.read_rows(path) if path.exists() else []


def load_convergence(out: Path, tag: str) -> list[dict]:
    """The rows of ``benchmarks/bench_convergence.py`` (tol= sample counts, antithetic efficiency), if any."""
    path = out / f"convergence_{tag}.json"
    return results_io.read_rows(path) if path.exists() else []


class Table:
    def __init__(self, title: str, headers: list[str]):
        self.title, self.headers, self.rows = title, headers, []

    def add(self, *cells) -> None:
        self.rows.append(["-" if c is None else str(c) for c in cells])

    def render(self, markdown: bool) -> str:
        if not self.rows:
            return ""
        if markdown:
            lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
                     "|" + "|".join("---" for _ in self.headers) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in self.rows]
            return "\n".join(lines) + "\n"
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) for i, h in enumerate(self.headers)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [self.title, fmt.format(*self.headers), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in self.rows]
        return "\n".join(lines) + "\n"


def x(value, digits: int = 2):
    return None if value is None else f"{value:.{digits}f}x"


def ms(value):
    return None if value is None else f"{value * 1e3:.1f}" if value < 10 else f"{value * 1e3:.0f}"


def mib(value):
    return None if value is None else f"{value / 2**20:.1f}"


def config_name(row) -> str:
    return f"{row['model']} {row['dtype']}{'+cl' if row['channels_last'] else ''}"


def preferred(rows):
    """Among fastmollify rows of one configuration: the one from the preferred compiled backend."""
    rank = {b: i for i, b in enumerate(PREFERRED)}
    return min(rows, key=lambda r: rank.get(r["backend"], 9), default=None)


def throughput_table(rows) -> Table:
    table = Table("ImageNet-size throughput (samples x images / s; x = time / floor, paired by round; fastest = "
                  "from each contender's fastest call; NoiseGrad/FusionGrad: floor + weight writes)",
                  ["model", "method", "contender", "N", "ms", "img/s", "x floor", "x floor (fastest)", "peak MiB",
                   "mem x floor"])
    for r in ratios.without_repeated_floors(rows):
        if r["median_s"] is None:
            continue
        table.add(config_name(r), r["method"], r["label"], r["N"], ms(r["median_s"]), f"{r['throughput']:.0f}",
                  x(r["ratio_to_floor"]), x(r["ratio_of_mins"]), mib(r["peak_mem_bytes"]), x(r["mem_ratio_to_floor"]))
    return table


def small_table(rows) -> Table:
    table = Table("Small models (x = time / floor; 'vs Captum' = Captum time / fastmollify time)",
                  ["model", "B", "N", "floor ms", "fastmollify", "adaptgrad", "Captum", "plain loop", "vs Captum",
                   "peak MiB fm/floor"])
    for key in dict.fromkeys((r["model"], r["B"], r["N"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["B"], r["N"]) == key and r["median_s"] is not None]
        floor = next((r for r in mine if r["impl"] == "floor"), None)
        fm = preferred([r for r in mine if r["impl"] == "fastmollify" and r["method"] == "smoothgrad"])
        ag = preferred([r for r in mine if r["impl"] == "fastmollify" and r["method"] == "adaptgrad"])
        captum = next((r for r in mine if r["impl"] == "captum"), None)
        plain = next((r for r in mine if r["impl"] == "plain"), None)
        if floor is None:
            continue
        table.add(key[0], key[1], key[2], ms(floor["median_s"]),
                  f"{x(fm['ratio_to_floor'])} [{fm['backend']}]" if fm else None,
                  x(ag["ratio_to_floor"]) if ag else None, x(captum["ratio_to_floor"]) if captum else None,
                  x(plain["ratio_to_floor"]) if plain else None,
                  x(speedup(captum, fm), 1) if captum and fm else None,
                  f"{mib(fm['peak_mem_bytes'])}/{mib(floor['peak_mem_bytes'])}" if fm else None)
    return table


def scaling_table(rows) -> Table:
    labels = list(dict.fromkeys(r["label"] for r in rows if r["impl"] != "floor"))
    table = Table("N-scaling (floor: ms; others: time / floor; then peak MiB per contender)",
                  ["N", "floor ms"] + labels + ["floor MiB"] + [f"{name} MiB" for name in labels])
    for n in sorted({r["N"] for r in rows}):
        mine = {r["label"]: r for r in rows if r["N"] == n and r["median_s"] is not None}
        floor = mine.get("floor")
        table.add(n, ms(floor["median_s"]) if floor else None,
                  *(x(mine[name]["ratio_to_floor"]) if name in mine else None for name in labels),
                  mib(floor["peak_mem_bytes"]) if floor else None,
                  *(mib(mine[name]["peak_mem_bytes"]) if name in mine else None for name in labels))
    return table


def memory_config(row) -> str:
    return f"{row['model']} {row['image']} B={row['B']}"


def memory_table(rows) -> Table:
    configs = list(dict.fromkeys(memory_config(r) for r in rows))
    table = Table("Peak memory vs n (fm.smoothgrad, default chunk: peak RSS above the warm baseline, "
                  "each call in a fresh process; chunk: the engine's choice)",
                  ["n"] + [f"{c} {what}" for c in configs for what in ("MiB", "chunk")])
    for n in sorted({r["n"] for r in rows}):
        mine = {memory_config(r): r for r in rows if r["n"] == n and r["peak_rss_bytes"] is not None}
        table.add(n, *(cell for c in configs for cell in (
            (mib(mine[c]["peak_rss_bytes"]), mine[c]["chunk"]) if c in mine else (None, None))))
    return table


def memory_targets(rows) -> list:
    """(config, max/min peak over the top octave of n, low, high, its rows) per configuration.

    Flat in n means that doubling a large n costs no memory: true once the engine's chunk stops
    growing with n below half the largest n (the table shows the chunks)."""
    found = []
    for config in dict.fromkeys(memory_config(r) for r in rows):
        mine = [r for r in rows if memory_config(r) == config and r["peak_rss_bytes"]]
        top = [r for r in mine if r["n"] * 2 >= max((r["n"] for r in mine), default=0)]
        if len(top) >= 2:
            low, high = min(r["peak_rss_bytes"] for r in top), max(r["peak_rss_bytes"] for r in top)
            found.append((config, high / low, low, high, top))
    return found


def _tol_cells(row) -> list:
    """n_b mean/max, the fixed n of the same worst-case error, fixed time / tol time."""
    if row is None or row.get("n_mean") is None:
        return [None, None, None]
    n = f"{row['n_mean']:.0f}/{row['n_max']:.0f}"
    if row["reached"] < 1:  # capped: how many examples got there, and the 1/sqrt(n) estimate of the need
        n += f" ({row['reached']:.0%} reached; est. {row['n_est_mean']:.0f}/{row['n_est_max']:.0f})"
    if row.get("n_fixed") is None:
        return [n, f">{row['cap_samples']}", None]
    return [n, f"{row['n_fixed']:.0f}", x(row["time_saving"])]


def convergence_tables(rows) -> list[Table]:
    tol_rows = [r for r in rows if r["part"] == "tol"]
    tols = sorted({r["tol"] for r in tol_rows if r["tol"] is not None}, reverse=True)
    tables = []
    if tol_rows:
        table = Table("Samples for a relative error ||stderr|| / ||mean|| <= tol per example (tol=, default chunk; "
                      "n: samples per example, mean/max over the batch; fixed: the smallest n of 16, 32, ... whose "
                      "worst example reaches tol; saving: fixed-n time / tol time; NoiseGrad n = m draws, "
                      "FusionGrad n = 4 m; est.: the 1/sqrt(n) estimate where the cap stopped examples)",
                      ["model", "B", "method"] + [f"tol {t} {what}" for t in tols for what in ("n", "fixed", "saving")])
        def key_of(r):  # tol runs with a chunk_size are rows of their own
            chunk = r.get("chunk_size")
            return r["model"], r["B"], r["method"] + (f" (chunk_size={chunk})" if chunk else "")

        for key in dict.fromkeys(key_of(r) for r in tol_rows):
            mine = {r["tol"]: r for r in tol_rows if key_of(r) == key}
            table.add(*key, *(cell for t in tols for cell in _tol_cells(mine.get(t))))
        tables.append(table)
    anti = [r for r in rows if r["part"] == "antithetic"]
    if anti:
        models = list(dict.fromkeys(r["model"] for r in anti))
        table = Table("Antithetic pairs: efficiency = (var x time) plain / (var x time) antithetic (variance "
                      "ratio; seeds: the same ratio from the spread of the map over seeds); above 1x pairs give "
                      "more accuracy per second",
                      ["method"] + [f"{m} ({next(r['activation'] for r in anti if r['model'] == m)})" for m in models])
        for method in dict.fromkeys(r["method"] for r in anti):
            cells = []
            for model in models:
                r = next((r for r in anti if r["model"] == model and r["method"] == method), None)
                seeds = f"; seeds {x(r['var_ratio_seeds'])}" if r and r.get("var_ratio_seeds") else ""
                cells.append(None if r is None or r.get("efficiency") is None
                             else f"{x(r['efficiency'])} ({x(r['var_ratio'])}{seeds})")
            table.add(method, *cells)
        tables.append(table)
    return tables


def speedup(peer, fm) -> float:
    """Peer time / fastmollify time, paired by round where they were timed together."""
    return ratios.paired_ratio(peer, [fm])[0]


def at_least(value: float, goal: float, peer, fm) -> str:
    """'yes', 'NO', or 'tie' where the value misses the goal of 1x but its rounds straddle it
    (the upper quartile of the per-round ratios reaches 1: a difference inside the timing noise)."""
    if value >= goal:
        return "yes"
    rounds = ratios.round_ratios(peer, [fm])
    if goal == 1 and len(rounds) >= 3 and statistics.quantiles(rounds, n=4, method="inclusive")[2] >= 1:
        return "tie"
    return "NO"


def _speedups(peers, fast, matcher) -> list:
    """``(peer time / fastmollify time, fastmollify row, peer row)`` for every peer row that has a
    fastmollify row ``matcher(peer)`` accepts (the preferred backend's)."""
    found = []
    for peer in peers:
        match = matcher(peer)
        fm = preferred([f for f in fast if match(f)])
        if fm:
            found.append((speedup(peer, fm), fm, peer))
    return found


def _worst(rows, key="ratio_to_floor"):
    rows = [r for r in rows if r.get(key) is not None]
    return max(rows, key=lambda r: r[key], default=None)


def _describe(r) -> str:
    return f"{config_name(r)} B={r['B']} N={r['N']} {r['method']} [{r['backend']}]"


def targets_table(found, memory=()) -> Table:
    table = Table("Targets (measured, not asserted)", ["target", "goal", "measured", "where", "met"])
    every = [r for rows in found.values() for r in rows if r["median_s"] is not None]
    fast = [r for r in every if r["impl"] == "fastmollify" and r["backend"] != "reference"
            and r["method"] != "weight_writes"]

    def add(name, goal, value, where, ok):
        verdict = ok if isinstance(ok, str) else None if ok is None else "yes" if ok else "NO"
        table.add(name, goal, value, where, verdict)

    conv = [r for r in fast if r["method"] in INPUT_METHODS and r["N"] >= 10 and r["model"] != "mlp"]
    worst = _worst(conv)
    if worst:
        add("input-noise methods / floor, N>=10, conv models", "<= 1.05x", x(worst["ratio_to_floor"], 3),
            _describe(worst), worst["ratio_to_floor"] <= 1.05)
    worst = _worst([r for r in fast if r["method"] in WEIGHT_METHODS])
    if worst:
        add("noisegrad/fusiongrad / (floor + weight writes)", "<= 1.10x", x(worst["ratio_to_floor"], 3),
            _describe(worst), worst["ratio_to_floor"] <= 1.10)
    for impl, goal in (("captum", "~3.9x (issue)"), ("plain", "-")):
        r = next((r for r in every if r["impl"] == impl and r["model"] == "mlp" and r["B"] == 256 and r["N"] == 50
                  and r["ratio_to_floor"] is not None), None)
        if r:
            add(f"MLP B=256 N=50: {r['label']} / floor", goal, x(r["ratio_to_floor"]), _describe(r), None)
    mlp = preferred([r for r in fast if r["model"] == "mlp" and r["B"] == 256 and r["N"] == 50
                     and r["method"] == "smoothgrad"])
    if mlp and mlp["ratio_to_floor"]:
        goal = 1.5 if mlp["device_type"] == "cpu" else 1.2
        add("MLP B=256 N=50: fastmollify / floor", f"<= {goal}x", x(mlp["ratio_to_floor"]), _describe(mlp),
            mlp["ratio_to_floor"] <= goal)
    worst = _worst([r for r in fast if r["model"] == "mlp" and r["method"] in INPUT_METHODS])
    if worst:
        add("MLP, every B, N and input-noise method: fastmollify / floor", "-", x(worst["ratio_to_floor"]),
            _describe(worst), None)

    def smoothgrad_of(peer):  # fastmollify's SmoothGrad row timed with the peer's configuration and N
        return lambda f: (f["method"] == "smoothgrad" and ratios.config_key(f) == ratios.config_key(peer)
                          and f["N"] == peer["N"])

    captum = [r for r in every if r["impl"] == "captum"]
    speedups = _speedups([r for r in captum if r["script"] in ("small", "scaling")], fast, smoothgrad_of)
    if speedups:
        low = min(speedups, key=lambda s: s[0])
        add("small models: Captum time / fastmollify time, every size", ">= 1x", x(low[0]), _describe(low[1]),
            at_least(low[0], 1, low[2], low[1]))
        mlp50 = [s for s in speedups if s[1]["model"] == "mlp" and s[1]["N"] == 50 and s[1]["B"] == 256]
        if mlp50:
            add("MLP B=256 N=50: Captum / fastmollify", ">= 2.5x", x(mlp50[0][0]), _describe(mlp50[0][1]),
                mlp50[0][0] >= 2.5)
    res50 = _speedups([r for r in captum if r["model"] == "resnet50"], fast, smoothgrad_of)
    if res50:
        low = min(res50, key=lambda s: s[0])
        add("ResNet50: Captum / fastmollify", ">= 1x", x(low[0]), _describe(low[1]),
            at_least(low[0], 1, low[2], low[1]))
    authors = _speedups([r for r in every if r["impl"] == "authors"], fast, lambda peer: lambda f: (
        f["method"] == peer["method"] and ratios.config_key(f) == ratios.config_key(peer)
        and f["m"] == peer["m"] and f["n"] == peer["n"]))
    if authors:
        low = min(authors, key=lambda s: s[0])
        add("NoiseGrad authors' time / fastmollify time", ">= 10x", x(low[0], 1), _describe(low[1]), low[0] >= 10)
    scaling = [r for r in found.get("scaling", []) if r["median_s"] is not None and r["peak_mem_bytes"]]
    for label in dict.fromkeys(r["label"] for r in scaling):
        full = [r for r in scaling if r["label"] == label and r["N"] >= r["chunk"] and r["N"] >= 10]
        if len(full) >= 2:
            low, high = min(r["peak_mem_bytes"] for r in full), max(r["peak_mem_bytes"] for r in full)
            add(f"peak memory flat in N: {label}", "max/min <= 1.1", x(high / low),
                f"N={min(r['N'] for r in full)}..{max(r['N'] for r in full)}, {mib(low)}..{mib(high)} MiB",
                high / low <= 1.1 if label.startswith("fastmollify") else None)
        if len(full) >= 2 and label.startswith("fastmollify"):
            slope = _loglog_slope([(r["N"], r["median_s"]) for r in full])
            add(f"time linear in N: {label}", "slope ~1", f"{slope:.2f}", "log-log slope, N>=10", abs(slope - 1) < 0.15)
    sized = [r for r in fast if r["mem_ratio_to_floor"] is not None and (r["floor_mem_bytes"] or 0) >= 8 << 20]
    worst = _worst(sized, "mem_ratio_to_floor")
    if worst:
        add("peak memory / floor (floor >= 8 MiB)", "<= 1.10x", x(worst["mem_ratio_to_floor"]), _describe(worst),
            worst["mem_ratio_to_floor"] <= 1.10)
    for config, ratio, low, high, top in memory_targets(memory):
        add(f"peak memory flat in n, default chunk: {config}", "max/min <= 1.1", x(ratio),
            f"n={min(r['n'] for r in top)}..{max(r['n'] for r in top)}, {mib(low)}..{mib(high)} MiB, "
            f"chunk {'/'.join(str(r['chunk']) for r in top)}", ratio <= 1.1)
    return table


def _loglog_slope(points) -> float:
    import math

    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((a - mx) ** 2 for a in xs)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / den if den else float("nan")


def ops_tables(out: Path, tag: str) -> list[Table]:
    """Op bandwidth rows written by benchmarks/bench_ops.py (any list of flat dicts)."""
    tables = []
    for path in sorted(out.glob(f"ops_{'cuda' if tag == 'gpu' else 'cpu'}*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows = data.get("rows", data) if isinstance(data, dict) else data
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
            continue
        wanted = ("backend", "op", "dtype", "kernel", "B", "D", "S", "median_s", "GBps", "fraction_of_copy")
        keys = [k for k in wanted if k in rows[0]] or [
            k for k, v in rows[0].items() if isinstance(v, (int, float, str, bool)) and k not in
            ("device", "device_name", "torch", "commit", "timestamp")][:10]
        table = Table(f"Op bandwidth ({path.name})", keys)
        for row in rows:
            table.add(*(f"{row.get(k):.4g}" if isinstance(row.get(k), float) else row.get(k) for k in keys))
        tables.append(table)
    return tables


def skipped(found, memory=(), convergence=()) -> str:
    lines = []
    measured = {"memory": "peak_rss_bytes", "convergence": "n_mean"}
    for script, rows in list(found.items()) + [("memory", memory), ("convergence", convergence)]:
        bad = [r for r in rows if r[measured.get(script, "median_s")] is None
               and (script != "convergence" or r.get("efficiency") is None)]
        if bad:
            reasons = sorted({(r["error"] or "no timing").split(" (")[0] for r in bad})
            lines.append(f"{script}: {len(bad)} case(s) without timing: {'; '.join(reasons)[:400]}")
    return "\n".join(lines)


def render(out: Path, tag: str, markdown: bool = False) -> str:
    found = load(out, tag)
    memory = load_memory(out, tag)
    convergence = load_convergence(out, tag)
    parts = []
    every = [r for rows in found.values() for r in rows] + memory + convergence
    devices = sorted({r["device"] for r in every if r["device"]})
    if devices:
        parts.append(f"Device: {'; '.join(devices)}  (torch {every[0]['torch']})\n")
    if "scaling" in found:
        parts.append(scaling_table(found["scaling"]).render(markdown))
    if "small" in found:
        parts.append(small_table(found["small"]).render(markdown))
    if "throughput" in found:
        parts.append(throughput_table(found["throughput"]).render(markdown))
    parts += [t.render(markdown) for t in ops_tables(out, tag)]
    if memory:
        parts.append(memory_table(memory).render(markdown))
    if found or memory:
        parts.append(targets_table(found, memory).render(markdown))
    parts += [t.render(markdown) for t in convergence_tables(convergence)]
    note = skipped(found, memory, convergence)
    if note:
        parts.append(note + "\n")
    return "\n".join(p for p in parts if p)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", choices=("cpu", "gpu"), default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    tag = args.tag or ("gpu" if any(args.out.glob("*_gpu.json")) else "cpu")
    text = render(args.out, tag, args.markdown)
    print(text or f"no results for {tag} in {args.out}")
    return text


if __name__ == "__main__":
    main()
