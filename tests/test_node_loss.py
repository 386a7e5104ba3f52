"""End to end: a trial whose node is lost in mid-stage 2 finishes on another node, as if it had
never stopped.

The cluster is three ``ray start`` nodes on this machine with a temp dir and ports of their own
(:class:`ray_nodes.RayNodes`): a head of 0 CPUs that holds Ray's services and the sweep driver,
as a KubeRay head does, so that everything of a trial (its Tune actor, Train controller and
worker) runs on a worker node; node A of 1 CPU from the start; node B of 1 CPU, which joins
while the trial is held. The sweep (``--address``) runs two trials one after the other, which
differ only in a test hook in the stage-2 config of the second: at stage-2 iteration
:data:`HELD_AT`, right after its checkpoint, the hook holds the trial (see ``fault_injection``).
Then node B joins and node A's raylet is SIGKILLed: the trial's worker, Train controller and Tune
actor die with it. Tune starts the trial again on node B; it resumes from that checkpoint and
must end with the same stage-2 validations (iteration and value) as the first trial, which ran
uninterrupted, in one MLflow child run without a duplicate point.

Stages are 20 (stage 1, shared by the two trials) and 30 iterations on a 12-image dataset; the
test takes about 5 minutes on 2 cores.
"""
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import yaml

from fault_injection import python_path, write_stage_config
from harness.tracking import default_tracking_uri
from ray_nodes import RayNodes
from test_sweep import (STAGE1_CONFIG, STAGE2_CONFIG, mlflow_runs, process_exists, run_driver,
                        wait_for, wait_for_exit, worker_records)

pytestmark = pytest.mark.slow
HELD_AT = 15
STAGES = {
    'stage1.train_cfg.max_iters': 20, 'stage1.train_cfg.val_interval': 20,
    'stage1.param_scheduler.0.end': 20, 'stage1.default_hooks.checkpoint.interval': 10,
    'stage2.train_cfg.max_iters': 30, 'stage2.train_cfg.val_interval': 10,
    'stage2.param_scheduler.0.end': 30, 'stage2.default_hooks.checkpoint.interval': 5}
VALIDATIONS = [10, 20, 30]


@pytest.fixture
def nodes(monkeypatch):
    """The cluster's nodes, ended whatever the test's outcome. Its raylets, and so every Ray
    worker, and the sweep driver find ``fault_injection`` on their PYTHONPATH."""
    monkeypatch.setenv('PYTHONPATH', python_path())
    cluster = RayNodes(os.environ)
    # The test's own ray.init and the sweep driver speak to the cluster as its nodes do.
    monkeypatch.setenv('RAY_AUTH_MODE', cluster.env['RAY_AUTH_MODE'])
    try:
        yield cluster
    finally:
        cluster.stop()


def final_weights(trial_dir: Path) -> Dict[str, torch.Tensor]:
    """The weights of a trial's last stage-2 checkpoint."""
    checkpoint = (trial_dir / 'stage2' / 'last_checkpoint').read_text().strip()
    return torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']


def val_history(storage: Path, run_id: str) -> List[Tuple[int, float, int]]:
    """(step, value, timestamp in ms) of every ``val/mIoU`` point of a run, by step."""
    from mlflow import MlflowClient

    client = MlflowClient(default_tracking_uri(str(storage)))
    return sorted((m.step, m.value, m.timestamp)
                  for m in client.get_metric_history(run_id, 'val/mIoU'))


def test_a_trial_whose_node_is_lost_resumes_on_another_node_as_if_uninterrupted(
        nodes, tiny_dataset, tmp_path):
    address = nodes.start_head(num_cpus=0)
    node_a = nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes(2)
    held, release = tmp_path / 'held.json', tmp_path / 'release'
    held_config = write_stage_config(tmp_path / 'stage2_held.py', STAGE2_CONFIG, dict(
        type='WaitForFile', iteration=HELD_AT, record=str(held), release=str(release)))
    path = tmp_path / 'node_loss.yaml'
    path.write_text(yaml.safe_dump({
        'name': 'node_loss', 'data_root': str(tiny_dataset), 'stage1_config': str(STAGE1_CONFIG),
        'stage2_config': str(STAGE2_CONFIG),
        'search_space': {'stage2_config': {'grid_search': [str(STAGE2_CONFIG), str(held_config)]}},
        'overrides': STAGES, 'resources': {'num_workers': 1, 'cpus_per_worker': 0.5},
        'max_concurrent_trials': 1, 'failure': {'max_failures': 1},
        'storage_path': str(tmp_path / 'sweeps')}, sort_keys=False))
    experiment = tmp_path / 'sweeps' / 'node_loss'
    driver = run_driver(path, tmp_path / 'driver.log', '--address', address)
    try:
        wait_for(held.is_file, 900, f'a trial held at stage-2 iteration {HELD_AT}', driver)
        node_b = nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes(3)
        killed_at = time.time()
        nodes.kill_raylet(node_a)
        held_pid = json.loads(held.read_text())['pid']
        wait_for(lambda: not process_exists(held_pid), 120,
                 f'the held worker (pid {held_pid}) to end with its node', driver)
        release.touch()
        output = wait_for_exit(driver, 900, 'the sweep that lost a node')
    finally:
        if driver.process.poll() is None:
            driver.process.kill()
            driver.process.wait()
    assert driver.process.returncode == 0, output[-3000:]
    assert '2 of 2 trial(s) finished, 0 failed.' in output, output[-3000:]

    trial_dirs = {Path(json.loads((folder / 'spec.json').read_text())['stage2_config']).resolve():
                  folder for folder in experiment.glob('trials/*')}
    reference_dir = trial_dirs[STAGE2_CONFIG.resolve()]
    lost_dir = trial_dirs[held_config.resolve()]
    node_ids = {node: nodes.node_id(node) for node in (node_a, node_b)}
    attempts = worker_records(lost_dir)
    assert [r['node_id'] for r in attempts] == [node_ids[node_a], node_ids[node_b]], attempts
    stage2_logs = sorted((lost_dir / 'stage2').glob('*/*.log'))
    assert f'resumed epoch: 0, iter: {HELD_AT}' in stage2_logs[-1].read_text()
    assert len(list(experiment.glob('stage1/*/stage1_done.json'))) == 1

    reference = json.loads((reference_dir / 'result.json').read_text())
    lost = json.loads((lost_dir / 'result.json').read_text())
    per_class = {key: value for key, value in reference.items() if key.startswith('val/')}
    assert {key: lost[key] for key in per_class} == per_class
    # The same weights to the last bit: the resumed stage drew the random numbers of the
    # uninterrupted one (a 30-iteration stage 2 may predict the same classes either way).
    weights = [final_weights(folder) for folder in (reference_dir, lost_dir)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])

    runs = mlflow_runs(tmp_path / 'sweeps')
    assert len(runs['parents']) == 1 and len(runs['children']) == 2
    children = {run.data.tags['trial_id']: run for run in runs['children']}
    assert all(run.info.status == 'FINISHED' for run in children.values())
    storage = tmp_path / 'sweeps'
    histories: Dict[str, List[Tuple[int, float, int]]] = {
        name: val_history(storage, children[folder.name].info.run_id)
        for name, folder in (('reference', reference_dir), ('lost', lost_dir))}
    for name, history in histories.items():
        assert [step for step, _, _ in history] == VALIDATIONS, (name, history)
    assert [value for _, value, _ in histories['lost']] == \
        [value for _, value, _ in histories['reference']]

    # Time lost: stage-2 time from validation 10 to 20 (across the loss), less the reference's,
    # less the time the test held the trial before it killed the node.
    held_for = killed_at - held.stat().st_mtime
    span = {name: (history[1][2] - history[0][2]) / 1000 for name, history in histories.items()}
    restarted_after = attempts[1]['time'] - killed_at
    print(f'\nnode loss: worker restarted on the other node {restarted_after:.1f} s after the '
          f'kill; time lost {span["lost"] - span["reference"] - held_for:.1f} s (validation 10 '
          f'to 20: {span["lost"]:.1f} s with the loss, {held_for:.1f} s of it held by the test, '
          f'{span["reference"]:.1f} s uninterrupted)')


def test_placement_groups_of_dead_actors_are_removed_and_the_drivers_kept(nodes):
    """A Train controller's placement group outlives the controller (lost with its node); the
    driver's (Tune's) groups have no creator actor and must stay. While a trial runs, the group
    of a controller that dies later is removed too: Ray may mark a lost node dead only after the
    restarted trial has started."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    from harness.sweep import orphaned_placement_groups_removed, remove_orphaned_placement_groups

    @ray.remote(num_cpus=0)
    class Creator:
        def create(self) -> str:
            group = placement_group([{'CPU': 0.1}])
            ray.get(group.ready())
            return group.id.hex()

    def state(group_id: str) -> str:
        return placement_group_table()[group_id]['state']

    ray.init(address=nodes.start_head(num_cpus=1), log_to_driver=False)
    try:
        drivers = placement_group([{'CPU': 0.1}])
        ray.get(drivers.ready())
        creators = [Creator.remote() for _ in range(2)]
        orphaned, alive = ray.get([creator.create.remote() for creator in creators])
        ray.kill(creators[0])
        # the GCS marks the killed creator dead shortly after
        removed = wait_for(remove_orphaned_placement_groups, 60, 'an orphaned placement group')
        assert removed == [orphaned]
        states = {group_id: state(group_id) for group_id in (orphaned, alive, drivers.id.hex())}
        assert states == {orphaned: 'REMOVED', alive: 'CREATED', drivers.id.hex(): 'CREATED'}

        with orphaned_placement_groups_removed(every_s=0.5):
            late = Creator.remote()
            late_group = ray.get(late.create.remote())
            ray.kill(late)
            wait_for(lambda: state(late_group) == 'REMOVED', 60,
                     'the group of a creator that died while the trial ran')
        assert (state(alive), state(drivers.id.hex())) == ('CREATED', 'CREATED')
    finally:
        ray.shutdown()
