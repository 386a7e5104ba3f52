#!/usr/bin/env bash
# Creates the virtual environment .venv in the repo root and installs eps-harness with its stack:
# torch, mmcv (compiled with its ops against that torch), mmengine, mmsegmentation, openmim,
# ray[train,tune,default], mlflow and pytest.
#
# Environment knobs (defaults suit a CPU machine):
#   PYTHON        interpreter that creates the venv         (python3.11)
#   TORCH_SPEC    pip requirement for torch                  (torch==2.13.0, the CPU build)
#                 e.g. TORCH_SPEC="torch==2.1.2 --index-url https://download.pytorch.org/whl/cu121"
#   WHEEL_CACHE   where the compiled mmcv wheel is kept      (~/.cache/eps-harness/wheels)
#
# mmcv has no wheels for recent torch, so it is built from source once (about 25 minutes on
# 2 cores) and cached per torch version: re-running the install takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WHEEL_CACHE=${WHEEL_CACHE:-$HOME/.cache/eps-harness/wheels}
MMCV_VERSION=2.1.0

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }

# setuptools < 81 still ships pkg_resources, which mmcv's setup.py and mim import; torch
# wants >= 77.
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options such as --index-url.
pip install -q $TORCH_SPEC numpy wheel "setuptools>=77.0.3,<81"

torch_version=$(.venv/bin/python -c 'import torch; print(torch.__version__)')
mmcv_cache="$WHEEL_CACHE/torch-$torch_version"
if ! compgen -G "$mmcv_cache/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    echo "Building mmcv $MMCV_VERSION with its ops against torch $torch_version (once; ~25 min on 2 cores)"
    MAX_JOBS=${MAX_JOBS:-$(nproc)} pip wheel -q --no-build-isolation --no-deps \
        "mmcv==$MMCV_VERSION" -w "$mmcv_cache"
fi
pip install -q "$mmcv_cache"/mmcv-$MMCV_VERSION-*.whl
pip install -q -e ".[dev]"
.venv/bin/python -c 'import harness.eps, mmseg, mmcv.ops, ray, mlflow; print("eps-harness installed: mmseg", mmseg.__version__, "mmcv", __import__("mmcv").__version__, "ray", ray.__version__, "mlflow", mlflow.__version__)'
