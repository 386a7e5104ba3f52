"""scripts/install.sh on a node without internet, and the knobs of install.sh and wheelhouse.sh.

The offline test builds what such a node has: a Python whose site-packages hold torch and most of
the stack (links into this test's venv), a wheelhouse with the packages that Python lacks (wheels
repacked from this venv, as scripts/wheelhouse.sh would have downloaded them) and the compiled mmcv
wheel in WHEEL_CACHE. It runs install.sh with WHEELHOUSE, REUSE_TORCH=1 and a fresh VENV while
pip's index is a local server that records every request: the install must finish without one,
put the wheelhouse's packages and the cached mmcv into the new venv and leave torch where it was.
"""
import contextlib
import http.server
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / 'scripts' / 'install.sh'
WHEELHOUSE_SCRIPT = REPO / 'scripts' / 'wheelhouse.sh'
# Installed into the new venv from the wheelhouse: pure-Python packages that the final import
# check of install.sh needs (mmseg imports mmengine, which imports addict and yapf), and the
# setuptools < 81 that mmcv's build and mim need.
FROM_WHEELHOUSE = ('mmengine', 'mmsegmentation', 'addict', 'yapf', 'setuptools')
# The node lacks those, mmcv (from WHEEL_CACHE) and eps-harness (editable, from the checkout).
HIDDEN_FROM_NODE = FROM_WHEELHOUSE + ('mmcv', 'eps-harness')
MMCV_VERSION = '2.1.0'
SCRIPT_KNOBS = ('PYTHON', 'VENV', 'TORCH_SPEC', 'REUSE_TORCH', 'WHEELHOUSE', 'WHEEL_CACHE',
                'MMCV_CUDA_OPS', 'MAX_JOBS', 'PYTHON_VERSION', 'PLATFORM')


def site_distributions(site: Path) -> Dict[str, importlib.metadata.Distribution]:
    """The distributions installed in ``site``, by lower-case name."""
    return {dist.metadata['Name'].lower(): dist
            for dist in importlib.metadata.distributions(path=[str(site)])}


def top_level_entries(dist: importlib.metadata.Distribution) -> Set[str]:
    """The names in site-packages that belong to ``dist`` (packages, modules, .pth, dist-info)."""
    return {file.parts[0] for file in dist.files or []
            if file.parts[0] not in ('..', '__pycache__')}


def repack_wheel(dist: importlib.metadata.Distribution, folder: Path) -> Path:
    """A wheel of the installed pure-Python ``dist``, rebuilt from the files its RECORD lists."""
    unpacked = folder / 'unpacked' / dist.metadata['Name']
    for file in dist.files or []:
        installer_only = file.parts[0].endswith('.dist-info') and file.name in (
            'RECORD', 'INSTALLER', 'REQUESTED', 'direct_url.json')
        if file.parts[0] == '..' or '__pycache__' in file.parts or installer_only:
            continue  # scripts in bin/ are made again from entry_points.txt
        target = unpacked / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dist.locate_file(file), target)
    before = set(folder.glob('*.whl'))
    subprocess.run([sys.executable, '-m', 'wheel', 'pack', str(unpacked), '--dest-dir',
                    str(folder)], check=True, capture_output=True)
    (wheel,) = set(folder.glob('*.whl')) - before
    return wheel


class RecordingIndex(http.server.ThreadingHTTPServer):
    """A package index on 127.0.0.1 that has nothing and records every request."""

    def __init__(self) -> None:
        self.requests: List[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                self.requests.append(handler.path)
                handler.send_error(404)

            def log_message(handler, *args) -> None:
                pass

        super().__init__(('127.0.0.1', 0), Handler)

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.server_address[1]}/simple/'


@contextlib.contextmanager
def recording_index() -> Iterator[RecordingIndex]:
    index = RecordingIndex()
    thread = threading.Thread(target=index.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        index.shutdown()
        index.server_close()


def offline_environment(index: RecordingIndex, **knobs: str) -> Dict[str, str]:
    """This process's environment without pip settings, a venv or the scripts' knobs, plus
    ``knobs``: pip's index is ``index`` and no pip configuration file is read (a machine's may
    name extra indexes and find-links)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('PIP_') and key not in SCRIPT_KNOBS + ('VIRTUAL_ENV', 'PYTHONPATH')}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index.url, PIP_RETRIES='0',
               PIP_TIMEOUT='5', **knobs)
    return env


def run_script(script: Path, env: Dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(script)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def make_node_python(folder: Path, installed_site: Path, hidden: Set[str]) -> Path:
    """A venv whose site-packages link to every entry of ``installed_site`` except ``hidden``:
    a node's Python with torch and most of the stack. Returns its interpreter."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(folder)], check=True)
    python = folder / 'bin' / 'python'
    node_site = Path(subprocess.run(
        [str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip())
    for entry in installed_site.iterdir():
        if entry.name not in hidden and entry.name != '__pycache__':
            (node_site / entry.name).symlink_to(entry)
    return python


@pytest.fixture(scope='module')
def cached_mmcv_wheel() -> Path:
    """The mmcv wheel that scripts/install.sh compiled for this venv's torch."""
    cache = Path(os.environ.get('WHEEL_CACHE', Path.home() / '.cache' / 'eps-harness' / 'wheels'))
    folder = cache / f"torch-{importlib.metadata.version('torch')}"
    tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
    wheels = sorted(folder.glob(f'mmcv-{MMCV_VERSION}-{tag}-*.whl'))
    if not wheels:
        pytest.fail(f'no mmcv-{MMCV_VERSION}-{tag}-*.whl in {folder}: scripts/install.sh builds '
                    'it there (or set WHEEL_CACHE to where it did)')
    return wheels[-1]


@pytest.mark.slow
def test_offline_install_from_wheelhouse_reusing_torch(tmp_path, cached_mmcv_wheel):
    installed_site = Path(sysconfig.get_paths()['purelib'])
    distributions = site_distributions(installed_site)
    hidden = set().union(*(top_level_entries(distributions[name]) for name in HIDDEN_FROM_NODE))
    node_python = make_node_python(tmp_path / 'node', installed_site, hidden)
    wheelhouse = tmp_path / 'wheelhouse'
    wheelhouse.mkdir()
    for name in FROM_WHEELHOUSE:
        repack_wheel(distributions[name], wheelhouse)
    wheel_cache = tmp_path / 'wheel-cache'
    (wheel_cache / cached_mmcv_wheel.parent.name).mkdir(parents=True)
    (wheel_cache / cached_mmcv_wheel.parent.name / cached_mmcv_wheel.name).symlink_to(
        cached_mmcv_wheel)
    venv = tmp_path / 'venv'

    with recording_index() as index:
        env = offline_environment(index, PYTHON=str(node_python), VENV=str(venv), REUSE_TORCH='1',
                                  WHEELHOUSE=str(wheelhouse), WHEEL_CACHE=str(wheel_cache))
        result = run_script(INSTALL, env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert index.requests == [], f'install.sh asked the index for {index.requests}:\n{output}'
        assert 'Building mmcv' not in output

        # The sensor works: pip in the same environment, without --no-index, asks the index.
        probe = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'download', '--no-deps',
                                '--dest', str(tmp_path / 'probe'), 'addict'],
                               env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and index.requests, probe.stdout + probe.stderr

    locations = json.loads(subprocess.run(
        [str(venv / 'bin' / 'python'), '-c',
         'import json, os, importlib; print(json.dumps({name: os.path.realpath('
         'importlib.import_module(name).__file__) for name in ("torch", "mmcv", "mmcv.ops", '
         '"mmengine", "mmseg", "addict", "yapf", "setuptools", "harness.eps")}))'],
        check=True, capture_output=True, text=True).stdout)
    venv_site = str(next((venv / 'lib').glob('python3.*/site-packages')).resolve())
    assert locations['torch'].startswith(str(installed_site.resolve())), locations
    for module in ('mmcv', 'mmcv.ops', 'mmengine', 'mmseg', 'addict', 'yapf', 'setuptools'):
        assert locations[module].startswith(venv_site), (module, locations)
    assert locations['harness.eps'].startswith(str(REPO)), locations
    installed_from = json.loads(next(Path(venv_site).glob(
        f'mmcv-{MMCV_VERSION}.dist-info')).joinpath('direct_url.json').read_text())['url']
    assert installed_from.endswith(cached_mmcv_wheel.name), installed_from


@pytest.mark.parametrize('knobs, message', [
    ({'REUSE_TORCH': 'yes'}, 'REUSE_TORCH=yes: use 1'),
    ({'MMCV_CUDA_OPS': 'true'}, 'MMCV_CUDA_OPS=true: use 1'),
    ({'WHEELHOUSE': '/nonexistent/wheelhouse'}, 'WHEELHOUSE=/nonexistent/wheelhouse is not a folder'),
])
def test_install_refuses_bad_knobs(tmp_path, knobs, message):
    with recording_index() as index:
        result = run_script(INSTALL, offline_environment(index, VENV=str(tmp_path / 'venv'), **knobs))
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not (tmp_path / 'venv').exists()


def test_reuse_torch_needs_a_python_with_torch(tmp_path):
    bare = tmp_path / 'bare'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(bare)], check=True)
    wheelhouse = tmp_path / 'wheelhouse'
    wheelhouse.mkdir()
    (wheelhouse / 'placeholder-1.0-py3-none-any.whl').write_bytes(b'')  # a wheelhouse has wheels
    with recording_index() as index:
        result = run_script(INSTALL, offline_environment(
            index, PYTHON=str(bare / 'bin' / 'python'), VENV=str(tmp_path / 'venv'),
            REUSE_TORCH='1', WHEELHOUSE=str(wheelhouse)))
    assert result.returncode != 0, result.stdout + result.stderr
    assert 'REUSE_TORCH=1 but torch does not import from PYTHON=' in result.stderr, result.stderr


@pytest.mark.parametrize('knobs, message', [
    ({}, 'set WHEELHOUSE to the folder to fill'),
    ({'WHEELHOUSE': 'wh', 'PYTHON_VERSION': '3'}, 'PYTHON_VERSION=3: give'),
    ({'WHEELHOUSE': 'wh', 'PYTHON': 'no-such-python'}, 'PYTHON=no-such-python: no such interpreter'),
])
def test_wheelhouse_refuses_bad_knobs(tmp_path, knobs, message):
    """Checked before anything is downloaded (the download itself needs internet)."""
    with recording_index() as index:
        result = subprocess.run(['bash', str(WHEELHOUSE_SCRIPT)], cwd=tmp_path,
                                env=offline_environment(index, **knobs),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert index.requests == []


def test_install_refuses_a_missing_python_and_an_empty_wheelhouse(tmp_path):
    (tmp_path / 'empty-wheelhouse').mkdir()
    for knobs, message in (({'PYTHON': 'no-such-python'}, 'PYTHON=no-such-python: no such '
                            'interpreter'),
                           ({'WHEELHOUSE': str(tmp_path / 'empty-wheelhouse')},
                            'empty-wheelhouse holds no wheels')):
        with recording_index() as index:
            result = run_script(INSTALL, offline_environment(index, VENV=str(tmp_path / 'venv'),
                                                             **knobs))
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert not (tmp_path / 'venv').exists()


def test_a_failed_install_leaves_no_half_made_venv(tmp_path):
    """A wheelhouse without torch: the venv is made, then pip fails; the venv is removed, while
    a venv that was there before a failed install is kept."""
    wheelhouse = tmp_path / 'wheelhouse'
    wheelhouse.mkdir()
    (wheelhouse / 'unrelated-1.0-py3-none-any.whl').write_bytes(b'not torch')
    venv = tmp_path / 'venv'
    with recording_index() as index:
        env = offline_environment(index, VENV=str(venv), WHEELHOUSE=str(wheelhouse))
        result = run_script(INSTALL, env)
        assert result.returncode != 0, result.stdout + result.stderr
        assert f'removed the unfinished {venv}' in result.stderr, result.stderr
        assert not venv.exists()

        subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
        assert run_script(INSTALL, env).returncode != 0
        assert (venv / 'bin' / 'python').exists()
