#!/usr/bin/env bash
# Fills a wheelhouse: a folder with every file that scripts/install.sh needs to install
# eps-harness on machines without internet. Run it where there is internet, carry the folder over:
#
#     WHEELHOUSE=/shared/wheelhouse bash scripts/wheelhouse.sh     # here: downloads
#     WHEELHOUSE=/shared/wheelhouse bash scripts/install.sh        # there: pip never asks an index
#
# The folder holds wheels for the target's Python version and platform (which may differ from this
# machine's), the mmcv source (mmcv has no wheels for recent torch: install.sh compiles it on the
# target against the target's torch) and the build tools that compile uses. Its last step resolves
# the whole install from the folder alone, offline, and fails if anything is missing.
#
# Environment knobs:
#   WHEELHOUSE      folder to fill (required); files already in it are kept
#   PYTHON_VERSION  the target's Python, major.minor                           (3.11)
#   PLATFORM        the target's pip platform tag; wheels of older manylinux   (manylinux_2_28_x86_64)
#                   tags of the same architecture are taken too. Grace Hopper nodes:
#                   manylinux_2_28_aarch64
#   TORCH_SPEC      torch requirement and pip options, as for install.sh       (torch==2.13.0)
#                   On PyPI, torch for Linux x86_64 is a CUDA build (with its nvidia-* wheels, a few
#                   GB). Another CUDA: "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126".
#                   Empty: no torch; the target reuses its own (REUSE_TORCH=1 at install time).
#   PYTHON          interpreter that runs pip here                             (python$PYTHON_VERSION)
#
# pip evaluates environment markers (python_version, platform_machine) for PYTHON on this machine:
# use a PYTHON of the target's version, on a machine of the target's CPU architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cd - >/dev/null

WHEELHOUSE=${WHEELHOUSE:-}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
PLATFORM=${PLATFORM:-manylinux_2_28_x86_64}
TORCH_SPEC=${TORCH_SPEC-torch==2.13.0}
PYTHON=${PYTHON:-python$PYTHON_VERSION}
# Tools that install.sh installs before compiling mmcv, beyond the project's own dependencies.
BUILD_TOOLS=(wheel ninja)
MMCV_VERSION=$(sed -n 's/^MMCV_VERSION=//p' "$repo/scripts/install.sh")

fail() { echo "wheelhouse.sh: $*" >&2; exit 1; }
[ -n "$WHEELHOUSE" ] || fail "set WHEELHOUSE to the folder to fill, e.g. WHEELHOUSE=/shared/wheelhouse"
[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] ||
    fail "PYTHON_VERSION=$PYTHON_VERSION: give the target's Python as major.minor, e.g. 3.11"
[[ $MMCV_VERSION =~ ^[0-9.]+$ ]] || fail "no MMCV_VERSION=<version> line in $repo/scripts/install.sh"
command -v "$PYTHON" >/dev/null ||
    fail "PYTHON=$PYTHON: no such interpreter; set PYTHON to a Python $PYTHON_VERSION (or 3.11+)"
"$PYTHON" -c 'import sys, tomllib' 2>/dev/null ||
    fail "PYTHON=$PYTHON is older than 3.11 (tomllib, to read pyproject.toml): set PYTHON to a newer one"
here_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$here_version" = "$PYTHON_VERSION" ] || echo "wheelhouse.sh: note: PYTHON is $here_version, the" \
    "target $PYTHON_VERSION; dependencies with python_version markers follow $here_version" >&2

# pip accepts a manylinux_2_X tag only literally: list the older glibc tags of the same
# architecture as well (manylinux2014 = manylinux_2_17, whose older aliases pip adds itself).
platforms=("$PLATFORM")
if [[ $PLATFORM =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
    for ((minor = BASH_REMATCH[1] - 1; minor >= 17; minor--)); do
        platforms+=("manylinux_2_${minor}_${BASH_REMATCH[2]}")
    done
    platforms+=("manylinux2014_${BASH_REMATCH[2]}")
fi
target=(--only-binary=:all: --implementation cp --python-version "$PYTHON_VERSION")
for platform in "${platforms[@]}"; do target+=(--platform "$platform"); done

mkdir -p "$WHEELHOUSE"
WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
started=$SECONDS

# A venv of our own for pip: a recent pip, and the setuptools that mmcv's setup.py needs
# (pkg_resources, gone in setuptools 81) to describe its source.
"$PYTHON" -m venv "$tools/venv"
pip() { "$tools/venv/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip "setuptools>=77.0.3,<81" wheel packaging

echo "mmcv $MMCV_VERSION source"
pip download -q --no-deps --no-binary=:all: --no-build-isolation "mmcv==$MMCV_VERSION" \
    --dest "$WHEELHOUSE"

# Everything else as one requirement list: the project's dependencies (its dev extra and build
# system included) and those of mmcv, without torch and mmcv themselves.
"$tools/venv/bin/python" - "$repo/pyproject.toml" "$WHEELHOUSE/mmcv-$MMCV_VERSION.tar.gz" \
    "${BUILD_TOOLS[@]}" >"$tools/requirements.txt" <<'EOF'
import re
import sys
import tarfile
import tomllib

pyproject, mmcv_sdist, *build_tools = sys.argv[1:]
with open(pyproject, 'rb') as handle:
    project = tomllib.load(handle)
requirements = (project['project']['dependencies'] + project['project']['optional-dependencies']['dev']
                + project['build-system']['requires'] + build_tools)
with tarfile.open(mmcv_sdist) as sdist:
    requires = next(member for member in sdist.getmembers()
                    if member.name.endswith('.egg-info/requires.txt'))
    lines = sdist.extractfile(requires).read().decode().splitlines()
# The lines before the first [extra] section are mmcv's install requirements.
requirements += [line for line in lines[:next((i for i, line in enumerate(lines)
                                              if line.startswith('[')), len(lines))] if line]
for requirement in requirements:
    if re.split(r'[\s\[<>=!~;]', requirement, maxsplit=1)[0].lower() not in ('torch', 'mmcv'):
        print(requirement)
EOF
# Resolved once here, with sources allowed, so that a dependency without wheels (built at install
# time) is found; then each pinned release is downloaded for the target.
pip install -q --dry-run --ignore-installed --report "$tools/report.json" -r "$tools/requirements.txt"
"$tools/venv/bin/python" - "$tools" <<'EOF'
import json
import sys
from pathlib import Path

tools = Path(sys.argv[1])
pins = {'wheels': [], 'sdists': []}
for item in json.loads((tools / 'report.json').read_text())['install']:
    name, version = item['metadata']['name'], item['metadata']['version']
    if name.lower() != 'torch':  # TORCH_SPEC's, or the target's own
        kind = 'wheels' if item['download_info']['url'].endswith('.whl') else 'sdists'
        pins[kind].append(f'{name}=={version}\n')
for kind, lines in pins.items():
    (tools / f'{kind}.txt').write_text(''.join(lines))
EOF
echo "$(wc -l <"$tools/requirements.txt") requirements: $(wc -l <"$tools/wheels.txt") wheels for" \
    "Python $PYTHON_VERSION on $PLATFORM, $(wc -l <"$tools/sdists.txt") source release(s)"
pip download -q --no-deps "${target[@]}" --dest "$WHEELHOUSE" -r "$tools/wheels.txt"
check=(-r "$tools/wheels.txt")
if [ -s "$tools/sdists.txt" ]; then
    # install.sh builds these in an isolated environment: their build requirements come along.
    pip download -q --no-deps --no-binary=:all: --dest "$WHEELHOUSE" -r "$tools/sdists.txt"
    "$tools/venv/bin/python" - "$WHEELHOUSE" "$tools/sdists.txt" >"$tools/build.txt" <<'EOF'
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename

wheelhouse, pins = Path(sys.argv[1]), Path(sys.argv[2]).read_text().split()
wanted = {(canonicalize_name(name), version) for name, version in (pin.split('==') for pin in pins)}
for path in sorted(wheelhouse.iterdir()):
    if not path.name.endswith(('.tar.gz', '.zip')):
        continue
    name, version = parse_sdist_filename(path.name)
    if (name, str(version)) not in wanted:
        continue
    if path.name.endswith('.zip'):
        archive = zipfile.ZipFile(path)
        members, read = archive.namelist(), archive.read
    else:
        archive = tarfile.open(path)
        members, read = archive.getnames(), lambda member: archive.extractfile(member).read()
    pyproject = min((member for member in members if member.endswith('/pyproject.toml')),
                    key=len, default=None)
    build_system = tomllib.loads(read(pyproject).decode()).get('build-system', {}) if pyproject else {}
    # Without [build-system], PEP 517 builds with setuptools and wheel.
    for requirement in build_system.get('requires', ['setuptools>=40.8.0', 'wheel']):
        print(requirement)
EOF
    echo "$(wc -l <"$tools/build.txt") build requirement(s) of the source release(s)"
    pip download -q "${target[@]}" --dest "$WHEELHOUSE" -r "$tools/build.txt"
    check+=(-r "$tools/build.txt")
fi

if [ -n "$TORCH_SPEC" ]; then
    echo "torch: $TORCH_SPEC"
    # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options such as --index-url.
    pip download -q "${target[@]}" --dest "$WHEELHOUSE" $TORCH_SPEC
    check+=(torch)
fi

# The proof: the wheels resolve, with their dependencies, from the folder alone for the target.
pip install -q --dry-run --ignore-installed --no-index --find-links "$WHEELHOUSE" "${target[@]}" \
    --target "$tools/check" "${check[@]}" ||
    fail "the requirements above do not resolve from $WHEELHOUSE alone"

if [ -n "$TORCH_SPEC" ]; then
    install="WHEELHOUSE=$WHEELHOUSE TORCH_SPEC=\"$TORCH_SPEC\" bash scripts/install.sh"
else
    install="WHEELHOUSE=$WHEELHOUSE REUSE_TORCH=1 bash scripts/install.sh   # no torch in it"
fi
echo "$WHEELHOUSE: $(find "$WHEELHOUSE" -maxdepth 1 -type f | wc -l) files," \
    "$(du -sh "$WHEELHOUSE" | cut -f1), in $((SECONDS - started)) s. Install with"
echo "  $install"
