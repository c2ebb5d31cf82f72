#!/usr/bin/env bash
# fastmollify's two set-up commands (and a few more):
#   ./run.sh demo    load the built-in model and explain a few images with every method
#   ./run.sh test    run the test suite
#   ./run.sh bench   the CPU benchmark suite;  ./run.sh <args>  any `python -m fastmollify` subcommand
# Each creates .venv (or $FASTMOLLIFY_VENV) on first use and installs the pinned torch 2.14.1
# and the package (with its compiled extension) into it; later runs rebuild only on change.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${FASTMOLLIFY_VENV:-.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.fastmollify-installed"

if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ -n "$(find setup.py pyproject.toml csrc -newer "$STAMP" 2>/dev/null | head -1)" ]; then
    "$PY" -m pip install -q --upgrade pip setuptools wheel
    "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
    "$PY" -m pip install -q numpy tqdm zarr pytest hypothesis captum==0.9.0 scikit-learn matplotlib quantus ninja \
        transformers==5.24.0 xarray dask
    export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
        MAX_JOBS="${MAX_JOBS:-2}"
    "$PY" -m pip install -q --no-build-isolation --no-deps -e .
    touch "$STAMP"
fi

command="${1:-demo}"
shift || true
case "$command" in
    test)
        # the compiled CPU backend and the Triton interpreter must serve here: a failed build fails the tests
        export FASTMOLLIFY_REQUIRE_BACKENDS="${FASTMOLLIFY_REQUIRE_BACKENDS:-cpu,triton}"
        # where a CUDA toolkit exists the CUDA part must have compiled too (even with no GPU to run it)
        if [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then export FASTMOLLIFY_EXPECT_CUDA_BUILD=1; fi
        exec "$PY" -m pytest -q "$@" ;;
    *)
        exec "$PY" -m fastmollify "$command" "$@" ;;
esac
