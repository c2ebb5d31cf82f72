#!/usr/bin/env bash
# The GPU suite, one command on a fresh GPU machine with torch installed and no network:
#   bash benchmarks/gpu_suite.sh
# 1. builds fastmollify against the installed torch (pip install --no-build-isolation --no-deps -e .)
#    and stops if the CUDA part of the extension did not build (setup.py would fall back quietly),
# 2. runs the tests with the cpu, cuda and triton backends required (FASTMOLLIFY_REQUIRE_BACKENDS,
#    FASTMOLLIFY_EXPECT_CUDA_BUILD: a backend that cannot serve fails its tests instead of skipping
#    them) and the Triton configurations pinned (no autotuning): the backend tests first, then the
#    rest, all within $TEST_BUDGET seconds,
# 3. runs every benchmark at full size (N-scaling, small models, op bandwidth, ImageNet-size
#    throughput), each inside its share of the time left,
# 4. prints the summary table last.
# The whole suite ends within $SUITE_BUDGET seconds (default 510, under 9 minutes): each benchmark
# skips what no longer fits (its rows say "skipped: time budget") and the summary lists the skips.
# Results: benchmarks/results/*_gpu.{json,csv,png}, ops_cuda.*, summary_gpu.md; when $OUT is set
# (the device tool's output folder) they are also packed into $OUT/gpu_results.tgz.
# Captum is pure Python: if it is not installed, a wheel in $WHEELS (default .whl) is installed
# offline; without one the Captum rows record the import error.
# Options (environment): PYTHON, SUITE_BUDGET, TEST_BUDGET, SKIP_BUILD=1, SKIP_TESTS=1, SANITIZE=1 (memcheck
# the cuda ops: benchmarks/sanitize_ops.py), MAX_JOBS,
# TORCH_CUDA_ARCH_LIST, CUDA_HOME, WHEELS, RESULTS_DIR (default benchmarks/results).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
PY=${PYTHON:-python3}
SUITE_BUDGET=${SUITE_BUDGET:-510}
TEST_BUDGET=${TEST_BUDGET:-170}
RESULTS=${RESULTS_DIR:-benchmarks/results}
DEADLINE=$((START + SUITE_BUDGET - 15))   # benchmarks stop here; the summary needs a few seconds
export PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
log() { echo "[gpu_suite $(( $(date +%s) - START ))s] $*"; }
left() { echo $(( DEADLINE - $(date +%s) )); }

log "python: $($PY -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU")')"

if ! $PY -c "import captum" 2>/dev/null; then
    wheel=$(ls "${WHEELS:-.whl}"/captum-*.whl 2>/dev/null | head -1)
    if [ -n "$wheel" ]; then
        log "installing $wheel (offline)"
        $PY -m pip install -q --no-index --no-deps "$wheel" || log "captum install failed"
    else
        log "captum is not installed and no wheel in ${WHEELS:-.whl}: Captum rows will record the error"
    fi
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building the extension (MAX_JOBS=${MAX_JOBS:-16})"
    CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
        MAX_JOBS=${MAX_JOBS:-16} $PY -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -25
fi
$PY -c "import fastmollify; print('backends on cuda:', fastmollify.availability('cuda'))"
if ! $PY -c "import sys; from fastmollify import _C; sys.exit(0 if _C.WITH_CUDA == 1 else 1)"; then
    log "FATAL: fastmollify._C has no CUDA part (see the build log above): the cuda backend cannot be measured"
    exit 1
fi

if [ "${SKIP_TESTS:-0}" != 1 ]; then
    export FASTMOLLIFY_REQUIRE_BACKENDS=cpu,cuda,triton FASTMOLLIFY_EXPECT_CUDA_BUILD=1
    test_deadline=$(( $(date +%s) + TEST_BUDGET ))
    backend_tests="tests/test_backends.py tests/test_triton.py"
    log "backend tests (cpu, cuda, triton required; Triton configs pinned)"
    FASTMOLLIFY_TRITON_CONFIGS=pinned timeout --signal=INT "$TEST_BUDGET" \
        $PY -m pytest -q -p no:cacheprovider $backend_tests 2>&1 | tail -30
    status=${PIPESTATUS[0]}
    log "backend tests: pytest exit status $status"
    rest=$(( test_deadline - $(date +%s) ))
    if [ "$rest" -gt 10 ]; then
        log "other tests (at most ${rest}s)"
        FASTMOLLIFY_TRITON_CONFIGS=pinned timeout --signal=INT "$rest" $PY -m pytest -q -p no:cacheprovider tests/ \
            $(for f in $backend_tests; do echo --ignore=$f; done) 2>&1 | tail -30
        status=${PIPESTATUS[0]}
        [ "$status" = 124 ] && log "tests stopped at ${TEST_BUDGET}s (not all ran)" || log "pytest exit status $status"
    else
        log "no time left for the other tests"
    fi
    unset FASTMOLLIFY_REQUIRE_BACKENDS FASTMOLLIFY_EXPECT_CUDA_BUILD
fi

if [ "${SANITIZE:-0}" = 1 ]; then  # memcheck over the CUDA ops on awkward shapes (index math, tails)
    sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
    if [ -x "$sanitizer" ]; then
        log "compute-sanitizer memcheck on the cuda ops (at most 150s)"
        timeout 150 "$sanitizer" --tool memcheck --error-exitcode 1 $PY -m benchmarks.sanitize_ops --backends cuda \
            2>&1 | tail -15
        log "memcheck exit status ${PIPESTATUS[0]}"
    else
        log "SANITIZE=1 but no compute-sanitizer found"
    fi
fi

bench() {  # log-name share-of-what-is-left command... (each case's line goes to the log)
    local name=$1 share=$2; shift 2
    local budget=$(( $(left) * share / 100 ))
    if [ "$budget" -le 5 ]; then log "$name: no time left, skipped"; return; fi
    log "$name (budget ${budget}s, log $RESULTS/gpu_log_$name.txt)"
    FASTMOLLIFY_BENCH_DEADLINE=$DEADLINE timeout $((budget + 60)) "$@" --budget "$budget" \
        > "$RESULTS/gpu_log_$name.txt" 2>&1 || log "$name exit status $?"
    tail -4 "$RESULTS/gpu_log_$name.txt"
}
bench scaling 22 $PY -m benchmarks.bench_scaling --out "$RESULTS"
bench small 25 $PY -m benchmarks.bench_small --out "$RESULTS"
if [ -f benchmarks/bench_ops.py ]; then
    budget=$(( $(left) * 10 / 100 ))
    log "op bandwidth (about ${budget}s, log $RESULTS/gpu_log_ops.txt)"
    # every op with Gaussian noise (targets: perturb >= 50% of copy bandwidth, accumulate >= 80%), then
    # perturb alone with the other kernels (rectangular >= 80%; the rest against their ISA bound)
    timeout $((budget / 2 + 30)) $PY benchmarks/bench_ops.py --size imagenet --kernel gaussian \
        --budget $((budget / 32 + 1)) --out "$RESULTS" >> "$RESULTS/gpu_log_ops.txt" 2>&1 || log "ops exit status $?"
    for kernel in rectangular poisson hyperbolic sigmoid; do
        timeout $((budget / 8 + 30)) $PY benchmarks/bench_ops.py --size imagenet --kernel $kernel --ops perturb \
            --budget $((budget / 32 + 1)) --out "$RESULTS" >> "$RESULTS/gpu_log_ops.txt" 2>&1 || log "ops exit status $?"
    done
    tail -4 "$RESULTS/gpu_log_ops.txt"
fi
bench throughput 85 $PY -m benchmarks.bench_throughput --out "$RESULTS"
budget=$(left)
if [ "$budget" -gt 30 ]; then  # data-set pipeline: ResNet-18, one process per GPU (a multi-GPU row when several)
    log "data set (at most ${budget}s, log $RESULTS/gpu_log_dataset.txt)"
    timeout "$budget" $PY benchmarks/bench_dataset.py --device cuda --rounds 1 --out "$RESULTS" \
        > "$RESULTS/gpu_log_dataset.txt" 2>&1 || log "dataset exit status $?"
    tail -4 "$RESULTS/gpu_log_dataset.txt"
fi

log "summary"
$PY -m benchmarks.summary --tag gpu --out "$RESULTS" --markdown > "$RESULTS/summary_gpu.md" 2>/dev/null
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    tar czf "$OUT/gpu_results.tgz" $RESULTS/*_gpu.* $RESULTS/gpu_log_* $RESULTS/ops_cuda.* 2>/dev/null && log "results packed in \$OUT/gpu_results.tgz"
fi
echo
echo "================================ SUMMARY ($(( $(date +%s) - START ))s) ================================"
$PY -m benchmarks.summary --tag gpu --out "$RESULTS"
