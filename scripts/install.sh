#!/usr/bin/env bash
# Creates a virtual environment (.venv in the repo root) and installs eps-harness with its stack:
# torch, mmcv (compiled with its CPU ops against that torch), mmengine, mmsegmentation, openmim,
# ray[train,tune,default], mlflow and the dev extra (pytest, ...). Offline: see WHEELHOUSE.
#
# Environment knobs (the defaults suit a CPU machine with internet):
#   PYTHON        interpreter that creates the venv                  (python3.11)
#   VENV          the virtual environment to create or update        (.venv in the repo root)
#   TORCH_SPEC    pip requirement for torch; PyPI's for Linux x86_64 is a CUDA build (torch==2.13.0)
#                 e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
#   REUSE_TORCH   1: install no torch but use the one PYTHON has (a GPU node's container, module
#                 or conda torch): the venv sees PYTHON's site-packages after its own, as with
#                 `venv --system-site-packages`, also when PYTHON is itself a venv         (0)
#   WHEELHOUSE    a folder filled by scripts/wheelhouse.sh: install from it alone; pip never
#                 contacts an index (nodes without internet)                              (unset)
#   WHEEL_CACHE   where the compiled mmcv wheel is kept, per torch   (~/.cache/eps-harness/wheels)
#   MMCV_CUDA_OPS 1: compile mmcv's CUDA ops as well (needs nvcc; tens of minutes, and mmcv
#                 2.1.0's CUDA sources predate CUDA 13). Nothing in eps-harness uses them   (0)
#   MAX_JOBS      parallel compiler jobs for mmcv                     (all cores)
#
# mmcv has no wheels for recent torch, so it is built from source once (about 25 minutes on
# 2 cores, 2 on 16) and cached per torch version: re-running the install takes seconds. It is built
# with its CPU ops only, the GPU hidden from the build, also on GPU nodes: the method runs on CUDA
# with that build (mmcv compiles its CUDA ops whenever torch sees a GPU or FORCE_CUDA=1).
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."

fail() { echo "install.sh: $*" >&2; exit 1; }
absolute() { case $1 in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }

PYTHON=${PYTHON:-python3.11}
VENV=$(absolute "${VENV:-$PWD/.venv}")
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
REUSE_TORCH=${REUSE_TORCH:-0}
WHEELHOUSE=${WHEELHOUSE:-}
WHEEL_CACHE=$(absolute "${WHEEL_CACHE:-$HOME/.cache/eps-harness/wheels}")
MMCV_CUDA_OPS=${MMCV_CUDA_OPS:-0}
MMCV_VERSION=2.1.0

[[ $REUSE_TORCH =~ ^[01]$ ]] || fail "REUSE_TORCH=$REUSE_TORCH: use 1 (reuse PYTHON's torch) or 0"
[[ $MMCV_CUDA_OPS =~ ^[01]$ ]] || fail "MMCV_CUDA_OPS=$MMCV_CUDA_OPS: use 1 (compile CUDA ops) or 0"
command -v "$PYTHON" >/dev/null || fail "PYTHON=$PYTHON: no such interpreter; set PYTHON to" \
    "a Python 3.11 (a name on PATH or a path)"
pip_source=()
if [ -n "$WHEELHOUSE" ]; then
    WHEELHOUSE=$(absolute "$WHEELHOUSE")
    [ -d "$WHEELHOUSE" ] || fail "WHEELHOUSE=$WHEELHOUSE is not a folder: fill one with" \
        "scripts/wheelhouse.sh on a machine with internet, or unset WHEELHOUSE to use the index"
    compgen -G "$WHEELHOUSE/*.whl" >/dev/null || fail "WHEELHOUSE=$WHEELHOUSE holds no wheels" \
        "(*.whl): fill it with scripts/wheelhouse.sh on a machine with internet"
    pip_source=(--no-index --find-links "$WHEELHOUSE")
fi

remove_unfinished_venv() {
    local status=$?
    [ "$status" = 0 ] || { rm -rf "$VENV"; echo "install.sh: removed the unfinished $VENV" >&2; }
}
# A venv this run creates is removed again if the install fails: no half-made venv is left.
[ -e "$VENV" ] || trap remove_unfinished_venv EXIT
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip's index options follow the command (install, wheel); a wheelhouse replaces the index.
pip() {
    local command=$1
    shift
    "$VENV/bin/python" -m pip --disable-pip-version-check "$command" \
        ${pip_source[@]+"${pip_source[@]}"} "$@"
}

reuse_pth="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/eps_harness_reuse_torch.pth"
torch_spec=()
if [ "$REUSE_TORCH" = 1 ]; then
    # Lines of a .pth file that start with "import" run at start-up: each of PYTHON's
    # site-packages becomes a site dir of the venv, after the venv's own.
    "$PYTHON" -c 'import site; print("\n".join("import site; site.addsitedir(%r)" % d
                                               for d in site.getsitepackages()))' >"$reuse_pth"
    "$VENV/bin/python" -c 'import torch' 2>/dev/null || fail "REUSE_TORCH=1 but torch does not" \
        "import from PYTHON=$PYTHON (site-packages: $("$PYTHON" -c 'import site
print(" ".join(site.getsitepackages()))')): set PYTHON to the interpreter that has the node's" \
        "torch, or unset REUSE_TORCH to install TORCH_SPEC"
else
    rm -f "$reuse_pth"
    # shellcheck disable=SC2206  # TORCH_SPEC may carry pip options such as --index-url.
    torch_spec=($TORCH_SPEC)
fi

# setuptools < 81 still ships pkg_resources, which mmcv's setup.py and mim import; torch wants
# >= 77. Without ninja, torch compiles mmcv's sources one at a time.
pip install -q ${torch_spec[@]+"${torch_spec[@]}"} numpy wheel "setuptools>=77.0.3,<81" ninja

torch_version=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
python_tag=$("$VENV/bin/python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
mmcv_cache="$WHEEL_CACHE/torch-$torch_version"
[ "$MMCV_CUDA_OPS" = 0 ] || mmcv_cache+="-cuda-ops"
if ! compgen -G "$mmcv_cache/mmcv-$MMCV_VERSION-$python_tag-*.whl" >/dev/null; then
    (
        export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
        if [ "$MMCV_CUDA_OPS" = 1 ]; then
            echo "Building mmcv $MMCV_VERSION with its CPU and CUDA ops against torch $torch_version (once; tens of minutes)"
            export FORCE_CUDA=1
        else
            echo "Building mmcv $MMCV_VERSION with its CPU ops against torch $torch_version (once; ~25 min on 2 cores)"
            unset FORCE_CUDA
            export CUDA_VISIBLE_DEVICES=
        fi
        pip wheel -q --no-build-isolation --no-deps "mmcv==$MMCV_VERSION" -w "$mmcv_cache"
    )
fi
pip install -q "$mmcv_cache/mmcv-$MMCV_VERSION-$python_tag-"*.whl
pip install -q -e ".[dev]"
"$VENV/bin/python" -c 'import harness.eps, mmseg, mmcv.ops, ray, mlflow, torch; print("eps-harness installed: mmseg", mmseg.__version__, "mmcv", __import__("mmcv").__version__, "ray", ray.__version__, "mlflow", mlflow.__version__, "torch", torch.__version__, "from", torch.__path__[0])'
