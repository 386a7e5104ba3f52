"""End to end: sweeps on a two-node Ray cluster (two raylets on this machine, 1 CPU each).

One cluster serves the module (starting Ray is the slow part on 2 cores). Faults are injected by
test hooks at chosen iterations (see ``fault_injection``), and the tests wait for the files those
hooks and the sweep write, each wait with a timeout that fails the test naming what it awaited:

- a trial of two gloo workers lands on both nodes, loses its rank-0 worker to SIGKILL right after
  stage 1's checkpoint of iteration 10, is restarted by Ray Train from that checkpoint and
  finishes; MLflow holds one parent and one child run with its params, metrics and artifacts;
- a sweep whose driver is killed while one trial has finished and the other is held at stage-2
  iteration 30 continues with ``--resume`` from there, without running the finished trial again;
- a trial that raises at every attempt fails the sweep: exit status 1, its MLflow runs FAILED and
  its log, which holds the traceback, named on the console.

Stages are 20 iterations (40 for the held trial's stage 2) on a 12-image dataset; the module takes
about 4 minutes on 2 cores.
"""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
import yaml
from mmengine.config import Config

from fault_injection import python_path, write_stage_config
from harness.tracking import PARENT_TAG, ROLE_TAG, default_tracking_uri
from harness.trial import TrialSpec

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHORT_STAGES = {
    'stage1.train_cfg.max_iters': 20, 'stage1.train_cfg.val_interval': 20,
    'stage1.param_scheduler.0.end': 20, 'stage1.default_hooks.checkpoint.interval': 10,
    'stage2.train_cfg.max_iters': 20, 'stage2.train_cfg.val_interval': 10,
    'stage2.param_scheduler.0.end': 20, 'stage2.default_hooks.checkpoint.interval': 10}
STAGE1_CONFIG = PROJECT_ROOT / TrialSpec.stage1_config
STAGE2_CONFIG = PROJECT_ROOT / TrialSpec.stage2_config


@pytest.fixture(scope='module')
def cluster():
    """Two Ray nodes of 1 CPU each on this machine. Their raylets, and so every Ray worker, and
    the sweep drivers the tests start inherit a PYTHONPATH that finds ``fault_injection``."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('PYTHONPATH', python_path())
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


@dataclass
class Driver:
    """A ``python -m harness.sweep`` process and the file its output goes to."""

    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def run_driver(path: Path, log: Path, *args: str) -> Driver:
    """``python -m harness.sweep`` run from the sweep file's folder, in its own session (so that
    it can be killed as a whole), output to ``log`` (a pipe nobody reads would stop it)."""
    with open(log, 'w') as output:
        return Driver(subprocess.Popen([sys.executable, '-m', 'harness.sweep', str(path), *args],
                                       cwd=path.parent, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True), log)


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             driver: Optional[Driver] = None) -> Any:
    """Polls ``condition`` until it returns a true value, and returns that. Fails the test after
    ``timeout`` seconds, or as soon as ``driver`` has exited, with the end of its output."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if driver is not None and driver.process.poll() is not None:
            pytest.fail(f'the sweep exited (status {driver.process.returncode}) before '
                        f'{what}; its output ends:\n{driver.output()[-3000:]}')
        if time.monotonic() > deadline:
            output = f'; the sweep\'s output ends:\n{driver.output()[-3000:]}' if driver else ''
            pytest.fail(f'waited {timeout:g} s for {what}{output}')
        time.sleep(0.5)


def wait_for_exit(driver: Driver, timeout: float, what: str) -> str:
    """Waits for ``driver`` to exit and returns its output; after ``timeout`` seconds kills it
    and fails the test, naming ``what`` it was running."""
    try:
        driver.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.process.pid, signal.SIGKILL)
        driver.process.wait()
        pytest.fail(f'{what} did not end within {timeout:g} s; its output ends:\n'
                    f'{driver.output()[-3000:]}')
    return driver.output()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    """One trial, two workers (0.9 CPU each: one per node); on the first attempt, rank 0 SIGKILLs
    itself right after stage 1's checkpoint of iteration 10 (of 20)."""
    import ray

    from harness.sweep import main

    folder = tmp_path_factory.mktemp('two_node')
    killed = folder / 'killed.json'
    stage1 = write_stage_config(folder / 'stage1_killed_at_10.py', STAGE1_CONFIG, dict(
        type='KillAfterCheckpoint', iteration=10, record=str(killed)))
    path = write_sweep(folder, 'two_node', tiny_dataset, cluster.address,
                       stage1_config=str(stage1),
                       search_space={'threshold': {'grid_search': [0.4]}},
                       resources={'num_workers': 2, 'cpus_per_worker': 0.9})
    try:
        status = main([str(path)])
    finally:
        ray.shutdown()
    experiment = folder / 'sweeps' / 'two_node'
    trial_dir, = experiment.glob('trials/*')
    return {'status': status, 'experiment': experiment, 'trial_dir': trial_dir,
            'killed': json.loads(killed.read_text()) if killed.is_file() else None,
            'storage': folder / 'sweeps'}


def test_one_trials_workers_run_on_two_nodes(killed_sweep, cluster):
    first_attempt = worker_records(killed_sweep['trial_dir'])[:2]
    assert sorted(r['rank'] for r in first_attempt) == [0, 1]
    assert first_attempt[0]['node_id'] != first_attempt[1]['node_id']
    node_ids = {node.node_id for node in cluster.list_all_nodes()}
    assert {r['node_id'] for r in first_attempt} == node_ids
    result = json.loads((killed_sweep['trial_dir'] / 'result.json').read_text())
    assert result['val/mIoU'] >= 0 and result['saliency_threshold'] == 0.4
    # stage 1 trained with the trial's threshold (the config file's own is 0.5)
    assert Config.fromfile(result['stage1_config']).model.loss_sal.threshold == 0.4
    # rank 0 measured IRD on all 12 training images, not on its share of the two workers'
    diagnostics = Path(result['stage1_config']).with_name('ird_diagnostics.json')
    assert len(json.loads(diagnostics.read_text())['images']) == 12


def test_killed_worker_is_restarted_from_the_checkpoint_of_its_iteration(killed_sweep):
    assert killed_sweep['status'] == 0, 'the sweep did not finish every trial'
    killed = killed_sweep['killed']
    assert killed is not None, 'no worker was killed: the hook did not run at iteration 10'
    assert (killed['rank'], killed['iteration']) == (0, 10)
    ranks_0 = [r for r in worker_records(killed_sweep['trial_dir']) if r['rank'] == 0]
    assert len(ranks_0) == 2 and ranks_0[0]['pid'] == killed['pid'] != ranks_0[1]['pid']
    stage1_logs = sorted(killed_sweep['experiment'].glob('stage1/*/2*/2*.log'))
    assert len(stage1_logs) == 2  # the first run and the restarted one
    assert 'resumed epoch: 0, iter: 10' in stage1_logs[1].read_text()
    assert (killed_sweep['trial_dir'] / 'result.json').is_file()


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


def tune_saved_a_finished_trial(experiment: Path) -> bool:
    return any('TERMINATED' in state.read_text()
               for state in experiment.glob('experiment_state-*.json'))


def test_resume_continues_an_interrupted_sweep_without_rerunning_finished_trials(
        cluster, tiny_dataset, tmp_path):
    """Two trials side by side, one per node, with 20 and 40 stage-2 iterations; the long one is
    held at iteration 30, after its checkpoint. The driver dies once the short one finished and
    Tune saved that; with --resume the held trial continues from iteration 30.

    The sweep names no data_root: the configs' relative one (data/shapes_voc) is found from
    the driver's working directory.
    """
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'shapes_voc').symlink_to(tiny_dataset)
    held, release = tmp_path / 'held.json', tmp_path / 'release'
    stage2 = write_stage_config(tmp_path / 'stage2_held_at_30.py', STAGE2_CONFIG, dict(
        type='WaitForFile', iteration=30, record=str(held), release=str(release)))
    path = write_sweep(tmp_path, 'resumed', None, cluster.address,
                       stage1_config=str(STAGE1_CONFIG), stage2_config=str(stage2),
                       overrides={k: v for k, v in SHORT_STAGES.items()
                                  if k != 'stage2.train_cfg.max_iters'},
                       search_space={'stage2.train_cfg.max_iters': {'grid_search': [20, 40]}},
                       resources={'num_workers': 1, 'cpus_per_worker': 0.9},
                       max_concurrent_trials=2)
    experiment = tmp_path / 'sweeps' / 'resumed'
    driver = run_driver(path, tmp_path / 'first.log')
    try:
        first = wait_for(lambda: next(iter(experiment.glob('trials/*/result.json')), None),
                         600, 'the 20-iteration trial to finish', driver)
        wait_for(held.is_file, 600, 'the 40-iteration trial to be held at iteration 30', driver)
        wait_for(lambda: tune_saved_a_finished_trial(experiment), 300,
                 "Tune's saved state of the finished trial", driver)
    finally:
        os.killpg(driver.process.pid, signal.SIGKILL)  # the driver's machine goes down
        driver.process.wait()
    held_pid = json.loads(held.read_text())['pid']
    wait_for(lambda: not process_exists(held_pid), 120,
             f'Ray to end the held worker (pid {held_pid}) of the killed driver')
    finished_dir = first.parent
    held_dir, = (folder for folder in experiment.glob('trials/*') if folder != finished_dir)
    finished_mtime = first.stat().st_mtime
    stage2_runs = sorted(p.name for p in (finished_dir / 'stage2').iterdir() if p.is_dir())
    assert len(list(experiment.glob('trials/*/result.json'))) == 1

    release.touch()
    resumed = run_driver(path, tmp_path / 'resumed.log', '--resume')
    output = wait_for_exit(resumed, 600, 'the resumed sweep')
    assert resumed.process.returncode == 0, output[-3000:]

    results = sorted(experiment.glob('trials/*/result.json'))
    assert sorted(p.parent for p in results) == sorted([finished_dir, held_dir])
    assert first.stat().st_mtime == finished_mtime
    assert sorted(p.name for p in (finished_dir / 'stage2').iterdir() if p.is_dir()) == \
        stage2_runs
    assert len(worker_records(finished_dir)) == 1  # no worker ran the finished trial again
    assert len(worker_records(held_dir)) == 2  # started, then resumed
    held_logs = sorted((held_dir / 'stage2').glob('*/*.log'))
    assert 'resumed epoch: 0, iter: 30' in held_logs[-1].read_text()
    # the two trials differ in stage 2 only: one stage-1 run serves both
    assert len(list(experiment.glob('stage1/*/stage1_done.json'))) == 1
    runs = mlflow_runs(tmp_path / 'sweeps')
    assert len(runs['parents']) == 1
    assert sorted(r.data.tags['trial_id'] for r in runs['children']) == sorted(
        p.parent.name for p in results)
    assert all(r.info.status == 'FINISHED' for r in runs['children'])
    assert '2 of 2 trial(s) finished' in output
    result = json.loads(first.read_text())
    assert f"data_root = '{tiny_dataset.resolve()}'" in Path(
        result['stage1_config']).read_text()


def test_a_trial_that_fails_fails_the_sweep_and_names_its_log(cluster, tiny_dataset, tmp_path):
    stage1 = write_stage_config(tmp_path / 'stage1_raises_at_2.py', STAGE1_CONFIG, dict(
        type='RaiseAtIteration', iteration=2, record=str(tmp_path / 'raised.json')))
    path = write_sweep(tmp_path, 'failing', tiny_dataset, cluster.address,
                       stage1_config=str(stage1), stage2_config=str(STAGE2_CONFIG),
                       failure={'max_failures': 0},
                       search_space={'threshold': {'grid_search': [0.4]}},
                       resources={'num_workers': 1, 'cpus_per_worker': 0.9})
    driver = run_driver(path, tmp_path / 'failing.log')
    output = wait_for_exit(driver, 600, 'the sweep of a failing trial')
    assert driver.process.returncode == 1, output[-3000:]

    trial_dir, = (tmp_path / 'sweeps' / 'failing' / 'trials').iterdir()
    log = trial_dir / 'worker-0.log'
    event = [line for line in output.splitlines() if line.startswith(f'[{trial_dir.name}] ')]
    assert event[-1] == (f'[{trial_dir.name}] FAILED: fault_injection.InjectedFault: injected '
                         f'at training iteration 2; log: {log}'), event
    summary = [line for line in output.splitlines() if line.startswith(f'  {trial_dir.name}: ')]
    assert summary == [f'  {trial_dir.name}: FAILED: fault_injection.InjectedFault: injected at '
                       f'training iteration 2; log: {log}'], output[-3000:]
    assert '0 of 1 trial(s) finished, 1 failed.' in output
    worker_output = log.read_text()
    assert 'Traceback (most recent call last)' in worker_output
    assert 'InjectedFault: injected at training iteration 2' in worker_output
    runs = mlflow_runs(tmp_path / 'sweeps')
    (parent, ), (child, ) = runs['parents'], runs['children']
    assert child.data.tags[PARENT_TAG] == parent.info.run_id
    assert child.data.tags['trial_id'] == trial_dir.name
    assert (child.info.status, parent.info.status) == ('FAILED', 'FAILED')


@pytest.mark.parametrize('stage', ['stage1', 'stage2'])
def test_ctrl_c_interrupts_the_sweep_and_resume_finishes_it_with_the_trials_own_figures(
        cluster, tiny_dataset, tmp_path, stage):
    """Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) while the trial is
    held at iteration 15 of 20 of ``stage`` (after a checkpoint at 10; stage 1 measures IRD every
    5 iterations, stage 2 validates at 10): the sweep names the trial INTERRUPTED and the exact
    ``--resume`` command, its MLflow runs are KILLED, the report tables nothing and exit status
    is 130. Resumed, the trial finishes, and the report gives the figures of the trial's own files
    (result.json, ird_diagnostics.json, pseudo_masks_metrics.json)."""
    from harness.report import load_trials, report

    held, release = tmp_path / 'held.json', tmp_path / 'release'
    base = STAGE1_CONFIG if stage == 'stage1' else STAGE2_CONFIG
    held_config = write_stage_config(tmp_path / f'{stage}_held_at_15.py', base, dict(
        type='WaitForFile', iteration=15, record=str(held), release=str(release)))
    configs = {'stage1_config': str(STAGE1_CONFIG), 'stage2_config': str(STAGE2_CONFIG),
               f'{stage}_config': str(held_config)}
    name = f'interrupted_{stage}'
    path = write_sweep(tmp_path, name, tiny_dataset, cluster.address, **configs,
                       overrides={**SHORT_STAGES, 'stage1.model.loss_sal.warmup_iters': 2,
                                  'stage1.custom_hooks.1.interval': 5},
                       search_space={'threshold': {'grid_search': [0.4]}},
                       resources={'num_workers': 1, 'cpus_per_worker': 0.9})
    storage = tmp_path / 'sweeps'
    experiment = storage / name
    driver = run_driver(path, tmp_path / 'first.log')
    wait_for(held.is_file, 600, f'the trial to be held at {stage} iteration 15', driver)
    os.killpg(driver.process.pid, signal.SIGINT)
    output = wait_for_exit(driver, 300, 'the sweep stopped with Ctrl-C')
    assert driver.process.returncode == 130, output[-3000:]

    trial_dir, = experiment.glob('trials/*')
    trial_id = trial_dir.name
    assert not (trial_dir / 'result.json').exists()
    assert '0 of 1 trial(s) finished, 0 failed, 1 interrupted.' in output, output[-3000:]
    status_line, = [line for line in output.splitlines() if line.startswith(f'  {trial_id}: ')]
    assert status_line.startswith(
        f"  {trial_id}: INTERRUPTED: in {dict(stage1='stage 1', stage2='stage 2')[stage]}")
    again = f'python -m harness.sweep {path} --resume --storage-path {storage} --address ' \
        f'{cluster.address}'
    assert f'Interrupted: {trial_id} did not finish' in output and f'`{again}`' in output
    assert 'Tuner.restore' not in output
    runs = mlflow_runs(storage)
    (parent, ), (child, ) = runs['parents'], runs['children']
    assert (child.info.status, child.data.tags['eps_harness.status']) == ('KILLED', 'INTERRUPTED')
    assert parent.info.status == 'KILLED'
    _, trials = load_trials(name, default_tracking_uri(str(storage)))
    assert [(t.trial_id, t.status) for t in trials] == [(trial_id, 'INTERRUPTED')]

    held_pid = json.loads(held.read_text())['pid']
    wait_for(lambda: not process_exists(held_pid), 120,
             f'Ray to end the held worker (pid {held_pid}) of the interrupted sweep')
    release.touch()
    resumed = run_driver(path, tmp_path / 'resumed.log', '--resume')
    output = wait_for_exit(resumed, 600, 'the resumed sweep')
    assert resumed.process.returncode == 0, output[-3000:]
    assert '1 of 1 trial(s) finished, 0 failed.' in output
    logs = sorted((trial_dir / 'stage2').glob('*/*.log') if stage == 'stage2' else
                  experiment.glob('stage1/*/2*/2*.log'))
    assert 'resumed epoch: 0, iter: 10' in logs[-1].read_text()  # from the checkpoint

    runs = mlflow_runs(storage)
    (parent, ), (child, ) = runs['parents'], runs['children']
    assert (child.info.status, parent.info.status) == ('FINISHED', 'FINISHED')
    result = json.loads((trial_dir / 'result.json').read_text())
    stage1_dir = Path(result['stage1_config']).parent
    ird = json.loads((stage1_dir / 'ird_diagnostics.json').read_text())['total']
    pseudo = json.loads((stage1_dir / 'pseudo_masks_metrics.json').read_text())
    summary = report(name, default_tracking_uri(str(storage)), tmp_path / 'report.png')
    trial, = summary['trials']
    assert trial['status'] == 'FINISHED' and summary['left_out'] == {}
    cell, = summary['table']
    assert (cell['mean'], cell['count']) == (result['val/mIoU'], 1)
    row, = summary['ird']
    assert {key: row[key] for key in ird if key in row} == {
        key: value for key, value in ird.items() if key in row}
    assert row['ird/precision'] == ird['ird/precision'] and row['pseudo/mIoU'] == pseudo[
        'pseudo/mIoU']
    assert {key: value for key, value in trial['metrics'].items()} == {
        key: value for key, value in result.items()
        if key.startswith(('val/', 'pseudo/', 'stage1/', 'ird/', 'time/')) and value is not None}
