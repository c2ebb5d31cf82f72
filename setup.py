"""Build script: the pure-Python package plus the compiled extension ``fastmollify._C``.

``fastmollify._C`` (csrc/) always gets its CPU part (OpenMP C++) and gets the CUDA part when
torch has CUDA and a CUDA toolkit is found. The install never fails because of it: if the
extension cannot be built, a warning is printed and the package installs without it (the
reference backend then serves every call).

Environment:
  FASTMOLLIFY_NO_EXTENSION=1  skip the compiled extension entirely (pure-Python install)
  FASTMOLLIFY_NO_CUDA=1       build the CPU part only
  CUDA_HOME                   CUDA toolkit (default /usr/local/cuda when it exists)
  TORCH_CUDA_ARCH_LIST        GPU architectures (default "9.0" when no GPU is visible)
  MAX_JOBS                    parallel compile jobs (default 2)

Install with ``pip install --no-build-isolation -e .`` (build isolation would pull a second torch).
"""
import os
import sys
import traceback

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_SOURCES = ["csrc/ops.cpp", "csrc/cpu/ops_cpu.cpp"]
CUDA_SOURCES = ["csrc/cuda/ops_cuda.cpp", "csrc/cuda/kernels.cu"]


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _say(message):
    print(f"fastmollify setup: {message}", file=sys.stderr, flush=True)


def _warn_fallback(reason):
    _say("WARNING: " + "=" * 60)
    _say(f"WARNING: the compiled extension fastmollify._C was not built: {reason}")
    _say("WARNING: installing pure Python; the 'reference' backend serves every call (slow).")
    _say("WARNING: " + "=" * 60)


def _extensions():
    """(ext_modules, build_ext class); ([], plain build_ext) when the extension is skipped."""
    if _flag("FASTMOLLIFY_NO_EXTENSION"):
        _say("FASTMOLLIFY_NO_EXTENSION is set: pure-Python install")
        return [], build_ext
    os.environ.setdefault("MAX_JOBS", "2")
    bin_dir = os.path.dirname(sys.executable)  # a virtual environment's ninja
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ and os.path.isdir("/usr/local/cuda"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"  # else torch guesses from a wrapper nvcc
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as error:  # noqa: BLE001 - no torch, or a broken one: still install
        _warn_fallback(f"torch.utils.cpp_extension is unusable ({error!r})")
        return [], build_ext

    with_cuda = False
    if _flag("FASTMOLLIFY_NO_CUDA"):
        _say("FASTMOLLIFY_NO_CUDA is set: CPU part only")
    elif not torch.version.cuda:
        _say("this torch has no CUDA: CPU part only")
    elif cpp_extension.CUDA_HOME is None or not os.path.exists(os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")):
        _say(f"no CUDA toolkit found (CUDA_HOME={cpp_extension.CUDA_HOME}): CPU part only")
    else:
        with_cuda = True
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"  # no GPU to ask; torch's helper needs a list
        _say(f"building the CUDA part (CUDA_HOME={cpp_extension.CUDA_HOME}, "
             f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<detected>')})")

    def make(cuda):
        # -fno-math-errno / -fno-trapping-math change no computed value (every op still rounds
        # separately: no -ffast-math, no contraction); they let GCC if-convert and vectorise the
        # noise loops (sqrtf without an errno branch, a division speculated past a select).
        cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-Wall",
               "-Wno-unknown-pragmas"]
        kwargs = dict(name="fastmollify._C", sources=list(CPU_SOURCES), include_dirs=[os.path.join(HERE, "csrc")],
                      extra_link_args=["-fopenmp"])
        if not cuda:
            return cpp_extension.CppExtension(extra_compile_args={"cxx": cxx}, **kwargs)
        kwargs["sources"] += CUDA_SOURCES
        define = ["-DFASTMOLLIFY_WITH_CUDA"]
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"] + define
        return cpp_extension.CUDAExtension(extra_compile_args={"cxx": cxx + define, "nvcc": nvcc}, **kwargs)

    class BuildExt(cpp_extension.BuildExtension):
        """Builds _C; on failure retries without CUDA, then gives up with a warning (never fails)."""

        def build_extension(self, ext):
            try:
                return super().build_extension(ext)
            except Exception as error:  # noqa: BLE001 - compiler or linker failure
                traceback.print_exc()
                if any(source.endswith(".cu") for source in ext.sources):
                    _say(f"WARNING: building the CUDA part failed ({error!r}); retrying with the CPU part only")
                    cpu = make(cuda=False)
                    # Turn this (already set-up) extension into the CPU-only one, keeping the flags
                    # torch's BuildExtension added to it (C++ ABI, extension name).
                    added = [flag for flag in ext.extra_compile_args.get("cxx", []) if flag.startswith("-D")
                             and "FASTMOLLIFY_WITH_CUDA" not in flag and flag not in cpu.extra_compile_args["cxx"]]
                    for attribute in ("sources", "include_dirs", "library_dirs", "libraries", "runtime_library_dirs",
                                      "define_macros", "extra_link_args"):
                        setattr(ext, attribute, getattr(cpu, attribute))
                    ext.extra_compile_args = {"cxx": cpu.extra_compile_args["cxx"] + added}
                    try:
                        return super().build_extension(ext)
                    except Exception as second:  # noqa: BLE001
                        traceback.print_exc()
                        error = second
                _warn_fallback(repr(error))

        def run(self):
            try:
                super().run()
            except Exception as error:  # noqa: BLE001 - e.g. no working C++ compiler at all
                traceback.print_exc()
                _warn_fallback(repr(error))

    return [make(with_cuda)], BuildExt.with_options(use_ninja=True)


ext_modules, build_ext_class = _extensions()
setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext_class})
