"""End to end: sweeps on a two-node Ray cluster (two raylets on this machine, 1 CPU each).

One cluster serves the module (starting Ray is the slow part on 2 cores):

- a trial of two gloo workers lands on both nodes, loses its rank-0 worker to SIGKILL in the
  middle of stage 1, is restarted by Ray Train from the stage-1 checkpoint and finishes; MLflow
  holds one parent and one child run with its params, metrics and artifacts;
- a sweep whose driver is killed after its first trial finished continues with ``--resume``
  without running the finished trial again.

Stages are 20 iterations on a 12-image dataset; the module takes about 5 minutes on 2 cores.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

from harness.tracking import PARENT_TAG, ROLE_TAG, default_tracking_uri
from harness.trial import TrialSpec

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHORT_STAGES = {
    'stage1.train_cfg.max_iters': 20, 'stage1.train_cfg.val_interval': 20,
    'stage1.param_scheduler.0.end': 20, 'stage1.default_hooks.checkpoint.interval': 10,
    'stage2.train_cfg.max_iters': 20, 'stage2.train_cfg.val_interval': 10,
    'stage2.param_scheduler.0.end': 20, 'stage2.default_hooks.checkpoint.interval': 10}


@pytest.fixture(scope='module')
def cluster():
    """Two Ray nodes of 1 CPU each on this machine."""
    from ray.cluster_utils import Cluster

    two_nodes = Cluster(initialize_head=True, head_node_args={'num_cpus': 1})
    two_nodes.add_node(num_cpus=1)
    two_nodes.wait_for_nodes()
    yield two_nodes
    two_nodes.shutdown()


def write_sweep(folder: Path, name: str, data_root: Optional[Path], address: str,
                **values: Any) -> Path:
    raw = {'name': name, 'overrides': SHORT_STAGES, 'storage_path': str(folder / 'sweeps'),
           'ray': {'address': address}, 'failure': {'max_failures': 2}}
    if data_root is not None:
        raw['data_root'] = str(data_root)
    raw.update(values)
    path = folder / f'{name}.yaml'
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def wait_for(condition, timeout: float, what: str, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f'waited {timeout} s for {what}')


def worker_records(trial_dir: Path) -> List[Dict[str, Any]]:
    records = trial_dir / 'workers.jsonl'
    return [json.loads(line) for line in records.read_text().splitlines()] \
        if records.is_file() else []


def mlflow_runs(storage: Path) -> Dict[str, List[Any]]:
    from mlflow import MlflowClient

    client = MlflowClient(default_tracking_uri(str(storage)))
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    return {'parents': [r for r in runs if r.data.tags.get(ROLE_TAG) == 'sweep'],
            'children': [r for r in runs if r.data.tags.get(ROLE_TAG) == 'trial']}


@pytest.fixture(scope='module')
def killed_sweep(cluster, tiny_dataset, tmp_path_factory) -> Dict[str, Any]:
    """One trial, two workers (0.9 CPU each: one per node); rank 0 is SIGKILLed at stage-1
    iteration 10, right after MMEngine's checkpoint of that iteration."""
    import ray

    from harness.sweep import main

    folder = tmp_path_factory.mktemp('two_node')
    path = write_sweep(folder, 'two_node', tiny_dataset, cluster.address,
                       search_space={'threshold': {'grid_search': [0.4]}},
                       resources={'num_workers': 2, 'cpus_per_worker': 0.9})
    experiment = folder / 'sweeps' / 'two_node'
    killed: Dict[str, Any] = {}

    def kill_rank_0_mid_stage_1() -> None:
        checkpoint = wait_for(lambda: next(iter(experiment.glob('stage1/*/last_checkpoint')),
                                           None), 600, 'the stage-1 checkpoint')
        wait_for(lambda: 'iter_10' in checkpoint.read_text(), 60, 'iteration 10')
        trial_dir = next(experiment.glob('trials/*'))
        rank_0 = next(r for r in worker_records(trial_dir) if r['rank'] == 0)
        os.kill(rank_0['pid'], signal.SIGKILL)
        killed.update(pid=rank_0['pid'], trial_dir=trial_dir,
                      at_iteration_10=not (checkpoint.parent / 'iter_20.pth').exists())

    killer = threading.Thread(target=kill_rank_0_mid_stage_1, daemon=True)
    killer.start()
    try:
        status = main([str(path)])
    finally:
        ray.shutdown()
    killer.join(timeout=1)
    return {'status': status, 'experiment': experiment, 'killed': killed,
            'storage': folder / 'sweeps'}


def test_one_trials_workers_run_on_two_nodes(killed_sweep, cluster):
    trial_dir = killed_sweep['killed']['trial_dir']
    first_attempt = worker_records(trial_dir)[:2]
    assert sorted(r['rank'] for r in first_attempt) == [0, 1]
    assert first_attempt[0]['node_id'] != first_attempt[1]['node_id']
    node_ids = {node.node_id for node in cluster.list_all_nodes()}
    assert {r['node_id'] for r in first_attempt} == node_ids
    result = json.loads((trial_dir / 'result.json').read_text())
    assert result['val/mIoU'] >= 0 and result['saliency_threshold'] == 0.4


def test_killed_worker_is_restarted_from_the_last_checkpoint(killed_sweep):
    assert killed_sweep['status'] == 0, 'the sweep did not finish every trial'
    killed = killed_sweep['killed']
    assert killed.get('at_iteration_10'), 'the worker was not killed in the middle of stage 1'
    ranks_0 = [r for r in worker_records(killed['trial_dir']) if r['rank'] == 0]
    assert len(ranks_0) == 2 and ranks_0[0]['pid'] == killed['pid'] != ranks_0[1]['pid']
    stage1_logs = sorted(killed_sweep['experiment'].glob('stage1/*/2*/2*.log'))
    assert len(stage1_logs) == 2  # the first run and the restarted one
    assert 'resumed epoch: 0, iter: 10' in stage1_logs[1].read_text()
    assert (killed['trial_dir'] / 'result.json').is_file()


def test_mlflow_has_one_parent_and_one_child_per_trial(killed_sweep):
    from mlflow import MlflowClient

    runs = mlflow_runs(killed_sweep['storage'])
    assert len(runs['parents']) == 1 and len(runs['children']) == 1
    parent, child = runs['parents'][0], runs['children'][0]
    assert child.data.tags[PARENT_TAG] == parent.info.run_id
    assert child.info.status == 'FINISHED' and parent.info.status == 'FINISHED'
    assert child.data.tags['sweep_name'] == 'two_node' and child.data.tags['git_commit']
    assert child.data.params['threshold'] == '0.4'
    assert child.data.params['stage2.train_cfg.max_iters'] == '20'
    assert {'val/mIoU', 'val/IoU.disc', 'pseudo/mIoU', 'stage1/mIoU'} <= set(child.data.metrics)
    client = MlflowClient(default_tracking_uri(str(killed_sweep['storage'])))
    steps = {m.step for m in client.get_metric_history(child.info.run_id, 'val/mIoU')}
    assert {10, 20} <= steps
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {'configs', 'splits', 'pseudo_masks.png'} <= artifacts
    configs = {a.path for a in client.list_artifacts(child.info.run_id, 'configs')}
    assert configs == {'configs/stage1_config.py', 'configs/stage2_config.py'}
    assert 'miou.png' in {a.path for a in client.list_artifacts(parent.info.run_id)}


def run_driver(path: Path, log: Path, *args: str) -> subprocess.Popen:
    """``python -m harness.sweep`` run from the sweep file's folder, in its own session (so that
    it can be killed as a whole), output to ``log`` (a pipe nobody reads would stop it)."""
    with open(log, 'w') as output:
        return subprocess.Popen([sys.executable, '-m', 'harness.sweep', str(path), *args],
                                cwd=path.parent, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_resume_continues_an_interrupted_sweep_without_rerunning_finished_trials(
        cluster, tiny_dataset, tmp_path):
    """Two trials side by side, one per node; the driver dies once the short one finished.

    The sweep names no data_root: the configs' relative one (data/shapes_voc) is found from
    the driver's working directory.
    """
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'shapes_voc').symlink_to(tiny_dataset)
    path = write_sweep(tmp_path, 'resumed', None, cluster.address,
                       stage1_config=str(PROJECT_ROOT / TrialSpec.stage1_config),
                       stage2_config=str(PROJECT_ROOT / TrialSpec.stage2_config),
                       overrides={**{k: v for k, v in SHORT_STAGES.items()
                                     if k != 'stage2.train_cfg.max_iters'},
                                  'stage2.train_cfg.val_interval': 50},
                       search_space={'stage2.train_cfg.max_iters': {'grid_search': [20, 150]}},
                       resources={'num_workers': 1, 'cpus_per_worker': 0.9},
                       max_concurrent_trials=2)
    experiment = tmp_path / 'sweeps' / 'resumed'
    driver = run_driver(path, tmp_path / 'first.log')
    try:
        first = wait_for(lambda: next(iter(experiment.glob('trials/*/result.json')), None),
                         400, 'the first trial to finish', poll=0.5)
        wait_for(lambda: any('TERMINATED' in state.read_text()
                             for state in experiment.glob('experiment_state-*.json')), 60,
                 "Tune's saved state of the finished trial", poll=0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver's machine goes down
        driver.wait()
    finished_dir = first.parent
    finished_mtime = first.stat().st_mtime
    stage2_runs = sorted(p.name for p in (finished_dir / 'stage2').iterdir() if p.is_dir())
    assert len(list(experiment.glob('trials/*/result.json'))) == 1

    resumed = run_driver(path, tmp_path / 'resumed.log', '--resume')
    resumed.wait(timeout=400)
    output = (tmp_path / 'resumed.log').read_text()
    assert resumed.returncode == 0, output[-3000:]

    results = sorted(experiment.glob('trials/*/result.json'))
    assert len(results) == 2
    assert first.stat().st_mtime == finished_mtime
    assert sorted(p.name for p in (finished_dir / 'stage2').iterdir() if p.is_dir()) == \
        stage2_runs
    assert len(worker_records(finished_dir)) == 1  # no worker ran the finished trial again
    interrupted_dir = next(p.parent for p in results if p.parent != finished_dir)
    assert len(worker_records(interrupted_dir)) == 2  # started, then resumed
    runs = mlflow_runs(tmp_path / 'sweeps')
    assert len(runs['parents']) == 1
    assert sorted(r.data.tags['trial_id'] for r in runs['children']) == sorted(
        p.parent.name for p in results)
    assert all(r.info.status == 'FINISHED' for r in runs['children'])
    assert '2 of 2 trial(s) finished' in output
    result = json.loads(first.read_text())
    assert f"data_root = '{tiny_dataset.resolve()}'" in Path(
        result['stage1_config']).read_text()
