"""SASS instructions per output element of the GPU kernels, compiled for sm_90 without a GPU.

    python -m benchmarks.isa_report            # a Markdown table
    python -m benchmarks.isa_report --json     # {"cuda": {"perturb/gaussian/float32": 41.5, ...}, "triton": {...}}

CUDA: ``csrc/cuda/kernels.cu`` is compiled with nvcc (``-cubin -arch=sm_90``, the flags of setup.py and
torch's extension build) and disassembled with cuobjdump. Triton: the kernels of
``fastmollify/ops/triton.py`` go through ``triton.compile`` with ``GPUTarget("cuda", 90, 32)`` and the
configuration the backend launches (pointers and the row length 16-divisible, as torch's allocations
and image rows are), and their cubin is disassembled the same way.

The count is static and follows the steady-state path: the innermost loop that moves the op's data
(stores for perturb and perturb_weights, vector loads of at least 8 bytes for accumulate), or the
whole kernel if it has no such loop; inside it, the cheapest path from the loop head to its back edge
(or from the entry to an EXIT) per element moved, so out-of-line slow paths (IEEE division and
square-root fix-ups, 64-bit division) and the tail code are not counted; a CALL adds the cheapest path
of its callee. Elements = bytes stored (loaded, for accumulate) on that path / the element size.
Registers per thread and spills (STL instructions) come from the same cubin.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = ("float32", "float16", "bfloat16")
KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular")
TARGETS = {"perturb/gaussian": 64, "perturb/rectangular": 24, "perturb_weights/gaussian": 64, "accumulate": 16}
OTHER_TARGET = 48  # the other kernels of perturb
GPUS = {"H100 SXM": 3.35e12, "H200": 4.8e12}  # DRAM bytes/s
# Both are GH100 chips: 132 SMs x 4 schedulers x 32 lanes x 1.98 GHz = 3.3e13 thread-instructions/s.
THREAD_INSTRUCTIONS_PER_S = 132 * 4 * 32 * 1.98e9

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_FUNCTION = re.compile(r"Function : (\S+)")


def element_size(dtype: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}[dtype]


# ----------------------------------------------------------------------------------------------
# SASS parsing and the steady-state path
# ----------------------------------------------------------------------------------------------
def _access_bytes(opcode: str) -> int:
    parts = opcode.split(".")
    for width, size in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if width in parts:
            return size
    return 4


def parse_sass(text: str) -> dict[str, list[tuple[int, str | None, str, str]]]:
    """{function: [(address, guard predicate such as "!P1" or None, opcode, operands)]} from cuobjdump -sass."""
    functions: dict[str, list] = {}
    current = None
    for line in text.splitlines():
        match = _FUNCTION.search(line)
        if match:
            current = functions.setdefault(match.group(1), [])
            continue
        match = _LINE.search(line)
        if match and current is not None:
            address, predicate, opcode, operands = match.groups()
            guard = predicate.strip()[1:] if predicate else None
            current.append((int(address, 16), guard, opcode, operands.strip()))
    return functions


def _target(operands: str):
    match = re.search(r"0x([0-9a-f]+)", operands)
    return int(match.group(1), 16) if match else None


def _guard_value(guard, known):
    """True/False if the path fixes the guard predicate, None if it does not (or there is no guard)."""
    if guard is None:
        return True
    name = guard.lstrip("!")
    if name == "PT":
        return not guard.startswith("!")
    if name not in known:
        return None
    return known[name] != guard.startswith("!")


def _written_predicates(operands: str) -> set:
    """Predicates an instruction sets: those among its first two operands (ISETP P0, PT, ...; IADD3 R1, P2, ...)."""
    return {token.strip() for token in operands.split(",")[:2] if re.fullmatch(r"U?P\d", token.strip())}


def _settle(moved: int, pending: dict, name: str, value) -> int:
    """``moved`` plus the bytes of the guarded accesses on ``name`` that run when it is ``value``
    (None: its value is lost, count them all); those entries leave ``pending``."""
    for key in [k for k in pending if k[0] == name]:
        if value is None or key[1] == value:
            moved += pending[key]
        del pending[key]
    return moved


def _cheapest(code, start: int, stop_at, data_bytes, call_cost) -> dict[int, int]:
    """{bytes moved: fewest instructions} over the paths from index ``start`` to a stop.

    ``stop_at(i)`` says whether instruction i ends a path (counted). Forward control flow only;
    the caller picks a region whose paths are acyclic. Instructions are visited in address order,
    which is a topological order of forward branches. A path remembers the predicates its branches
    fixed: an access guarded by a predicate the path has ruled out moves nothing, and one guarded by
    a predicate not yet known waits for a later branch on it (``@!P1 STG.128; @!P1 BRA skip``: the
    vector store and the element-wise stores it skips are never both counted).
    """
    index = {address: i for i, (address, *_rest) in enumerate(code)}
    states: dict[int, dict[tuple, int]] = {start: {(0, (), ()): 0}}
    done: dict[int, int] = {}

    def push(i, moved, known, pending, count):
        if i is None or i >= len(code):
            return
        key = (moved, tuple(sorted(known.items())), tuple(sorted(pending.items())))
        bucket = states.setdefault(i, {})
        if count < bucket.get(key, 1 << 30):
            bucket[key] = count

    for i in range(start, len(code)):
        bucket = states.pop(i, None)
        if not bucket:
            continue
        address, guard, opcode, operands = code[i]
        base = opcode.split(".")[0]
        cost = 0 if base == "NOP" else 1
        if base == "CALL":
            cost += call_cost(_target(operands))
        size = data_bytes(opcode)
        name = guard.lstrip("!") if guard else None
        for (before, known_items, pending_items), count in bucket.items():
            known, pending = dict(known_items), dict(pending_items)
            runs = _guard_value(guard, known)
            total = count + cost
            if runs is False:  # ruled out on this path: a no-op
                push(i + 1, before, known, pending, total)
                continue
            moved = before
            if size and runs is None:  # waits for the path to fix its predicate
                key = (name, not guard.startswith("!"))
                pending[key] = pending.get(key, 0) + size
            else:
                moved += size
            for written in _written_predicates(operands):
                known.pop(written, None)
                moved = _settle(moved, pending, written, None)
            if stop_at(i):
                final = moved + sum(pending.values())
                if total < done.get(final, 1 << 30):
                    done[final] = total
                if runs:
                    continue
            if base in ("EXIT", "RET", "BRX", "JMX", "BRA", "JMP"):
                target = _target(operands) if base in ("BRA", "JMP") else None
                if target is not None and target > address:  # taken: the guard held
                    taken, held = dict(known), dict(pending)
                    if runs is None:
                        taken[name] = not guard.startswith("!")
                    push(index.get(target), _settle(moved, held, name, taken.get(name)) if runs is None else moved,
                         taken, held, total)
                if not runs:  # fall through: the guard failed
                    fallthrough, failed = dict(known), dict(pending)
                    fallthrough[name] = guard.startswith("!")
                    push(i + 1, _settle(moved, failed, name, fallthrough[name]), fallthrough, failed, total)
            else:
                push(i + 1, moved, known, pending, total)
    return done


def steady_state(code, moved_bytes) -> tuple[int, int]:
    """(instructions, bytes moved) of the cheapest steady-state path per byte (see the module docstring)."""
    index = {address: i for i, (address, *_rest) in enumerate(code)}

    def call_cost(target):
        if target is None or target not in index:
            return 0
        found = _cheapest(code, index[target], lambda i: code[i][2].startswith("RET"), lambda op: 0,
                          lambda t: 0)
        return min(found.values()) if found else 0

    loops = []  # (head index, back-edge index) of backward branches
    for i, (address, _guard, opcode, operands) in enumerate(code):
        if opcode.split(".")[0] == "BRA":
            target = _target(operands)
            if target is not None and target <= address and target in index:
                loops.append((index[target], i))
    moving = [(head, back) for head, back in loops if any(moved_bytes(code[j][2]) for j in range(head, back + 1))]
    moving = [(h, b) for h, b in moving if not any(h2 > h and b2 < b for h2, b2 in moving)]  # innermost
    candidates = []
    if moving:
        for head, back in moving:
            found = _cheapest(code, head, lambda i, back=back: i == back, moved_bytes, call_cost)
            candidates += [(count, moved) for moved, count in found.items() if moved]
    else:
        found = _cheapest(code, 0, lambda i: code[i][2].split(".")[0] == "EXIT", moved_bytes, call_cost)
        candidates += [(count, moved) for moved, count in found.items() if moved]
    if not candidates:
        raise ValueError("no path moves data")
    return min(candidates, key=lambda c: c[0] / c[1])


def store_bytes(opcode: str) -> int:
    return _access_bytes(opcode) if opcode.startswith(("STG", "ST.E")) else 0


def wide_load_bytes(opcode: str) -> int:
    if not opcode.startswith("LDG"):
        return 0
    size = _access_bytes(opcode)
    return size if size >= 8 else 0


def resources(tool: str, cubin: str) -> dict[str, int]:
    """{function: registers per thread} from cuobjdump -res-usage."""
    text = subprocess.run([tool, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    registers, name = {}, None
    for line in text.splitlines():
        match = re.search(r"Function (\S+):", line)
        if match:
            name = match.group(1)
        match = re.search(r"REG:(\d+)", line)
        if match and name:
            registers[name] = int(match.group(1))
    return registers


def disassemble(cubin: str):
    tool = cuobjdump()
    sass = subprocess.run([tool, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    return parse_sass(sass), resources(tool, cubin)


def measure(code, registers: int, op: str, dtype: str) -> dict:
    moved = wide_load_bytes if op == "accumulate" else store_bytes
    count, nbytes = steady_state(code, moved)
    elements = nbytes / element_size(dtype)
    return {"per_element": round(count / elements, 2), "instructions": count, "elements": elements,
            "registers": registers, "spills": sum(1 for _a, _p, opcode, _o in code if opcode.startswith("STL"))}


# ----------------------------------------------------------------------------------------------
# Tools and compilers
# ----------------------------------------------------------------------------------------------
def cuda_home() -> str:
    return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"


def cuobjdump() -> str:
    """cuobjdump from the CUDA toolkit, else the one triton ships."""
    candidates = [os.path.join(cuda_home(), "bin", "cuobjdump"), shutil.which("cuobjdump") or ""]
    try:
        import triton
        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("cuobjdump not found (CUDA toolkit or triton's NVIDIA backend)")


_CUDA_TYPES = {"f": "float32", "N3c104HalfE": "float16", "N3c108BFloat16E": "bfloat16", "d": "float64"}
_CUDA_NAMES = [
    ("perturb", re.compile(r"perturb_kernelI(f|d|N3c104HalfE|N3c108BFloat16E)Li(\d)ELb1E")),
    ("accumulate", re.compile(r"accumulate_kernelI(f|d|N3c104HalfE|N3c108BFloat16E)ffLb1E")),
    ("perturb_weights", re.compile(r"perturb_weights_many_kernelI(f|d|N3c104HalfE|N3c108BFloat16E)E")),
]


def compile_cuda(workdir: str) -> str:
    """kernels.cu -> a sm_90 cubin, with the flags of setup.py and torch's CUDA extension build."""
    from torch.utils import cpp_extension

    nvcc = os.path.join(cuda_home(), "bin", "nvcc")
    if not os.access(nvcc, os.X_OK):
        raise RuntimeError(f"nvcc not found under CUDA_HOME={cuda_home()}")
    os.environ.setdefault("CUDA_HOME", cuda_home())
    includes = [f"-I{path}" for path in cpp_extension.include_paths()] + [f"-I{os.path.join(ROOT, 'csrc')}"]
    cubin = os.path.join(workdir, "kernels.cubin")
    command = [nvcc, "-cubin", "-arch=sm_90", "-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo",
               "-DFASTMOLLIFY_WITH_CUDA", *cpp_extension.COMMON_NVCC_FLAGS, *includes, "-o", cubin,
               os.path.join(ROOT, "csrc", "cuda", "kernels.cu")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError("nvcc failed:\n" + result.stderr[-4000:])
    return cubin


def cuda_report(workdir: str) -> dict[str, dict]:
    functions, registers = disassemble(compile_cuda(workdir))
    rows = {}
    for name, code in functions.items():
        for op, pattern in _CUDA_NAMES:
            match = pattern.search(name)
            if not match:
                continue
            dtype = _CUDA_TYPES[match.group(1)]
            if dtype not in DTYPES:
                continue
            kernel = KERNELS[int(match.group(2))] if op == "perturb" else ("gaussian" if op != "accumulate" else "")
            key = "/".join(part for part in (op, kernel, dtype) if part)
            rows[key] = measure(code, registers.get(name, 0), op, dtype)
    return rows


_TRITON_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def triton_report(workdir: str) -> dict[str, dict]:
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastmollify.ops import triton as backend

    if backend.triton is None:
        raise RuntimeError(f"the Triton backend is unavailable: {backend._IMPORT_ERROR}")
    target = GPUTarget("cuda", 90, 32)
    rows = {}
    for spec in backend.isa_specs():
        fn, signature, constants, options, aligned = (spec[k] for k in ("fn", "signature", "constants", "options",
                                                                       "aligned"))
        names = list(signature)
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
        signature = dict(signature, **{n: "constexpr" for n in constants})
        compiled = triton.compile(ASTSource(fn, signature, constants, attrs), target=target, options=options)
        path = os.path.join(workdir, spec["key"].replace("/", "_") + ".cubin")
        with open(path, "wb") as handle:
            handle.write(compiled.asm["cubin"])
        functions, registers = disassemble(path)
        (name, code), = functions.items()
        rows[spec["key"]] = measure(code, registers.get(name, 0), spec["op"], spec["dtype"])
    return rows


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def target_of(key: str):
    op, *rest = key.split("/")
    if op == "accumulate":
        return TARGETS["accumulate"]
    prefix = f"{op}/{rest[0]}"
    if prefix in TARGETS:
        return TARGETS[prefix]
    return OTHER_TARGET if op == "perturb" else None


def bound_gbps(per_element: float, dtype: str) -> float:
    """GB/s of output the instruction count allows: thread instructions/s / per element x element size."""
    return THREAD_INSTRUCTIONS_PER_S / per_element * element_size(dtype) / 1e9


def _traffic(key: str) -> float:
    """DRAM bytes per output byte: perturb writes (x read once per chunk is amortised over the samples),
    perturb_weights reads and writes, accumulate reads the gradients (statistics stay in registers)."""
    return 2.0 if key.startswith("perturb_weights") else 1.0


def markdown(report: dict) -> str:
    lines = ["| backend | op/kernel/dtype | SASS / element | target (fp32) | met | registers | spills | "
             "issue bound GB/s | " + " | ".join(f"bound / {g} DRAM" for g in GPUS) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(GPUS)]
    for backend_name in ("cuda", "triton"):
        for key, row in sorted(report.get(backend_name, {}).items()):
            dtype = key.split("/")[-1]
            target = target_of(key) if dtype == "float32" else None
            met = "-" if target is None else ("yes" if row["per_element"] <= target else "NO")
            bound = bound_gbps(row["per_element"], dtype)
            shares = " | ".join(f"{min(1.0, bound * 1e9 * _traffic(key) / GPUS[g]):.0%}" for g in GPUS)
            lines.append(f"| {backend_name} | {key} | {row['per_element']} | {target if target else '-'} | {met} | "
                         f"{row['registers']} | {row['spills']} | {bound:,.0f} | {shares} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print {backend: {op/kernel/dtype: SASS per element}}")
    parser.add_argument("--details", action="store_true", help="with --json: every field, not just the count")
    parser.add_argument("--only", choices=("cuda", "triton"), help="one backend")
    parser.add_argument("--write", type=Path, default=None, metavar="DIR",
                        help="also write DIR/isa_sm90.json (every field, toolchain) and DIR/isa_sm90.md")
    args = parser.parse_args(argv)
    report = {}
    with tempfile.TemporaryDirectory(prefix="fastmollify_isa_") as workdir:
        if args.only in (None, "cuda"):
            report["cuda"] = cuda_report(workdir)
        if args.only in (None, "triton"):
            report["triton"] = triton_report(workdir)
    counts = {b: {k: r["per_element"] for k, r in sorted(rows.items())} for b, rows in report.items()}
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / "isa_sm90.json").write_text(json.dumps(dict(counts, details=report, toolchain=toolchain()),
                                                             indent=1) + "\n")
        (args.write / "isa_sm90.md").write_text(f"SASS per element for sm_90 ({toolchain_line()}); "
                                                "`python -m benchmarks.isa_report`\n\n" + markdown(report) + "\n")
    print(json.dumps(report if args.details else counts, indent=1) if args.json else markdown(report))
    return 0


def toolchain() -> dict:
    import torch
    import triton

    nvcc = subprocess.run([os.path.join(cuda_home(), "bin", "nvcc"), "--version"], capture_output=True, text=True)
    release = re.search(r"release ([\d.]+)", nvcc.stdout)
    return {"nvcc": release.group(1) if release else None, "triton": triton.__version__, "torch": torch.__version__,
            "target": "sm_90"}


def toolchain_line() -> str:
    return ", ".join(f"{k} {v}" for k, v in toolchain().items() if k != "target")


if __name__ == "__main__":
    sys.exit(main())
