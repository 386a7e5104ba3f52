#!/usr/bin/env bash
# shellcheck disable=SC2329  # the step functions are called by name, through run
# GPU check of eps-harness: PAMR on CUDA, where a stage-1 training step goes (float32 and mixed
# precision, paper size), and the wall time of the bundled trial. For a GPU node that has
# Python 3 with torch (CUDA build), numpy, opencv, scipy and matplotlib, but no internet.
#
# 1. On a machine with internet, fill a wheelhouse folder for the node's Python (3.12 here):
#
#      mkdir wheelhouse
#      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d wheelhouse \
#          mmengine==0.10.7 mmsegmentation==1.2.2 addict termcolor yapf platformdirs \
#          prettytable wcwidth ftfy regex rich markdown-it-py mdurl pygments pyyaml \
#          'setuptools<81' ninja cython==0.29.36
#      python3 -m pip download --no-deps --no-binary=:all: -d wheelhouse pydensecrf2==1.1
#      # mmcv's setup.py imports torch even to be downloaded: use a Python that has torch.
#      python -m pip download --no-deps --no-binary=:all: --no-build-isolation -d wheelhouse \
#          mmcv==2.1.0
#
#    (about 11 MB; every *.whl in it is installed, so leave out what the node must keep its own
#    copy of, e.g. torch or numpy. The sdists (*.tar.gz) are compiled on the node; a wheel of the
#    same name and version there, e.g. from an earlier run's GPU_CHECK_SITE.build folder, is
#    used instead.)
# 2. Copy the wheelhouse and this project to the node and run, from anywhere:
#
#      bash benchmarks/gpu_check.sh WHEELHOUSE_DIR
#
# It installs the OpenMMLab stack and pydensecrf2 into a folder of its own (GPU_CHECK_SITE,
# default /tmp/eps-harness-site; nothing is installed into the node's Python), compiling mmcv
# 2.1.0 with its CPU ops only (the method needs none of its CUDA ops; about 2 minutes on 16
# cores, once: a second run reuses the folder), then prints
#   - benchmarks/bench_pamr.py --device cuda: PAMR's paths against the conv reference, at the
#     pseudo-mask and the IRD shape;
#   - benchmarks/bench_step.py --size paper: the phases of a stage-1 step of the VOC config
#     (ResNet-101, batch 8, 448x448), in float32 and with --amp;
#   - benchmarks/bench_startup.py --stage 2 --repeat 2: where stage 2's start-up goes on the VOC
#     configs (Runner, datasets, weight init, first batch, first iteration), twice in one process;
#   - the wall time of `python -m harness.trial` with its default settings (bundled data).
# Everything it prints also goes to GPU_CHECK_LOG (default /tmp/gpu_check-<time>.log). The
# whole check is meant to fit in 8 minutes: each step gets what is left of that budget (at
# most its own cap) and a step that runs out is reported and the next one starts.
#
# GPU_CHECK_DEVICE=cpu runs the same steps on CPU at the small size, as a rehearsal of the
# script itself on a machine without a GPU (without the amp step, which needs CUDA).
set -uo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: bash $0 WHEELHOUSE_DIR   (see the instructions at the top of $0)" >&2
    exit 2
fi
WHEELHOUSE=$(cd "$1" && pwd)
PROJECT=$(cd "$(dirname "$0")/.." && pwd)
SITE=${GPU_CHECK_SITE:-/tmp/eps-harness-site}
LOG=${GPU_CHECK_LOG:-/tmp/gpu_check-$(date -u +%Y%m%dT%H%M%S).log}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
PYTHON=${PYTHON:-python3}
STAGE1_PAPER=mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py
STAGE1_SMALL=mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py

exec > >(tee -a "$LOG") 2>&1
START=$(date +%s)
cd "$PROJECT" || exit 2
export PYTHONPATH="$SITE:$PROJECT${PYTHONPATH:+:$PYTHONPATH}"
failures=0

# run NAME CAP_S COMMAND...: runs COMMAND (a program or one of the functions below) for at most
# CAP_S seconds, and never past the budget.
run() {
    local name=$1 cap=$2
    shift 2
    if declare -F "$1" >/dev/null; then
        set -- bash -c '"$@"' "$1" "$@"
    fi
    local left=$((BUDGET_S - ($(date +%s) - START)))
    local limit=$((left < cap ? left : cap))
    echo
    echo "=== $name ($(date -u +%H:%M:%S), $((BUDGET_S - left)) s into the check, limit $limit s)"
    if [ "$limit" -le 0 ]; then
        echo "--- $name: skipped, the ${BUDGET_S} s budget is spent"
        failures=$((failures + 1))
        return
    fi
    local begin=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    local status=$?
    local took=$((SECONDS - begin))
    case $status in
        0) echo "--- $name: done in $took s" ;;
        124) echo "--- $name: stopped after $limit s (time limit)"; failures=$((failures + 1)) ;;
        *) echo "--- $name: FAILED with status $status after $took s"; failures=$((failures + 1)) ;;
    esac
}

# Not scripts/install.sh: that installs the whole project into a venv (`pip install -e .[dev]`:
# Ray, MLflow, openmim and pytest too, all of which its wheelhouse must hold) and then imports
# ray and mlflow to check it. This node keeps its own torch and libraries, and harness.trial needs
# only the OpenMMLab stack and pydensecrf2: those alone go into a --target folder on PYTHONPATH.
# Every wheel of the wheelhouse goes into $SITE; every sdist is compiled first, all at once (mmcv
# with its CPU ops only, the GPU hidden; pydensecrf2 from its Cython sources), unless the
# wheelhouse has a wheel of the same name and version (built against the node's torch).
install_stack() {
    if [ -f "$SITE/.complete" ]; then
        echo "reusing $SITE"
        return
    fi
    local build="$SITE.build" sdist name index failed=0 pids=() names=()
    rm -rf "$SITE" "$build"
    mkdir -p "$SITE" "$build"
    "$PYTHON" -m pip install --no-index --no-deps --target "$SITE" "$WHEELHOUSE"/*.whl || return 1
    for sdist in "$WHEELHOUSE"/*.tar.gz; do
        [ -e "$sdist" ] || continue
        name=$(basename "$sdist" .tar.gz)
        compgen -G "$WHEELHOUSE/$name-*.whl" >/dev/null && continue
        echo "compiling $name on $(nproc) cores (log $build/$name.log)"
        # setuptools < 81 (pkg_resources), ninja (parallel compiles) and Cython come from $SITE.
        CUDA_VISIBLE_DEVICES='' MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) PATH="$SITE/bin:$PATH" \
            "$PYTHON" -m pip wheel --no-build-isolation --no-deps --no-index -w "$build" \
            "$sdist" >"$build/$name.log" 2>&1 &
        pids+=($!)
        names+=("$name")
    done
    for index in "${!pids[@]}"; do
        if wait "${pids[$index]}"; then
            echo "compiled ${names[$index]}"
        else
            echo "compiling ${names[$index]} failed; the end of its log:"
            tail -n 30 "$build/${names[$index]}.log"
            failed=1
        fi
    done
    [ "$failed" = 0 ] || return 1
    if compgen -G "$build/*.whl" >/dev/null; then
        "$PYTHON" -m pip install --no-index --no-deps --target "$SITE" "$build"/*.whl || return 1
    fi
    touch "$SITE/.complete"
}

check_imports() {
    # harness.trial must not need ray or mlflow: the node has neither.
    "$PYTHON" - <<'EOF'
import importlib
import importlib.metadata
import sys

missing = []
for name in ('yaml', 'rich', 'addict', 'termcolor', 'yapf', 'prettytable', 'ftfy', 'regex',
             'cv2', 'scipy', 'matplotlib', 'PIL', 'mmengine', 'mmcv', 'mmseg', 'pydensecrf'):
    try:
        importlib.import_module(name)
    except ImportError as error:
        missing.append(f'{name} ({error})')
if missing:
    sys.exit('missing modules, add their wheels to the wheelhouse: ' + ', '.join(missing))
import harness.eps
import harness.trial
import mmcv
import mmengine
import mmseg
import torch
from harness.eps.pamr import triton_kernels
for name in ('ray', 'mlflow'):
    assert name not in sys.modules, f'harness.trial imported {name}'
triton = importlib.metadata.version('triton') if triton_kernels() else 'not importable'
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, triton {triton}')
EOF
}

run_trial() {
    local work_dir
    work_dir=$(mktemp -d /tmp/gpu_check_trial.XXXXXX)
    local begin
    begin=$(date +%s%N)
    "$PYTHON" -m harness.trial --work-dir "$work_dir" "$@" || return 1
    echo "trial wall time: $((($(date +%s%N) - begin) / 1000000)) ms (work dir $work_dir)"
}
# `timeout` runs the functions in a child bash, which needs them and their settings exported.
export -f install_stack check_imports run_trial
export WHEELHOUSE PROJECT SITE PYTHON

echo "eps-harness GPU check: project $PROJECT ($(git -C "$PROJECT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')), wheelhouse $WHEELHOUSE, device $DEVICE, log $LOG"
"$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
nproc
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null

run "install the OpenMMLab stack into $SITE" 300 install_stack
run "imports" 60 check_imports
if [ "$DEVICE" = cuda ]; then
    run "bench_pamr --device cuda" 120 "$PYTHON" benchmarks/bench_pamr.py --device cuda
    run "bench_step float32 (paper size)" 120 "$PYTHON" benchmarks/bench_step.py \
        "$STAGE1_PAPER" --size paper --device cuda
    run "bench_step amp (paper size)" 120 "$PYTHON" benchmarks/bench_step.py \
        "$STAGE1_PAPER" --size paper --device cuda --amp
    run "bench_startup stage 2 (VOC configs, started twice in one process)" 120 \
        "$PYTHON" benchmarks/bench_startup.py --stage 2 --repeat 2
    run "trial (python -m harness.trial, default settings)" 300 run_trial
else
    run "bench_pamr --device cpu (pseudo-mask shape)" 300 "$PYTHON" benchmarks/bench_pamr.py \
        --device cpu --shape pseudo-mask --repeats 1
    run "bench_step float32 (small size)" 120 "$PYTHON" benchmarks/bench_step.py \
        "$STAGE1_SMALL" --size small --device cpu --iters 2 --warmup 1
    run "trial (python -m harness.trial, 2 iterations per stage)" 600 run_trial \
        --set stage1.train_cfg.max_iters=2 --set stage2.train_cfg.max_iters=2
fi
echo
echo "=== gpu_check finished in $(($(date +%s) - START)) s with $failures failed step(s); log $LOG"
exit $((failures > 0))
