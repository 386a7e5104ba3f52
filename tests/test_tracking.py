"""A trial's MLflow records go through its journal: training never waits on the store, and every
point arrives once, also when the server is down for a while or as the trial starts."""
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

from harness import tracking
from mlflow_server import SHORT_RETRIES, MlflowServer

STAGE2_VALIDATIONS = (2, 4, 6, 8)
SHORT = {**{f'stage1.{key}': value for key, value in (
    ('train_cfg.max_iters', 8), ('train_cfg.val_interval', 8), ('param_scheduler.0.end', 8),
    ('train_dataloader.batch_size', 4))},
    **{f'stage2.{key}': value for key, value in (
        ('train_cfg.max_iters', 8), ('train_cfg.val_interval', 2), ('param_scheduler.0.end', 8),
        ('default_hooks.checkpoint.interval', 8), ('train_dataloader.batch_size', 4))}}


@pytest.fixture
def short_retries(monkeypatch):
    for name, value in SHORT_RETRIES.items():
        monkeypatch.setenv(name, value)


def sweep_target(uri: str, name: str = 'journal') -> Dict[str, str]:
    return tracking.start_sweep_run(uri, name, name, params={'name': name},
                                    artifacts=[]).to_dict()


def children(uri: str, target: Dict[str, str]) -> List[Any]:
    from mlflow import MlflowClient

    return MlflowClient(uri).search_runs(
        [target['experiment_id']], f"tags.`{tracking.PARENT_TAG}` = '{target['parent_run_id']}'")


def history(uri: str, run_id: str, key: str = 'val/mIoU') -> List[Tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def log_points(run: tracking.TrialRun, steps=(1, 2, 3, 4)) -> None:
    for step in steps:
        run.log_metrics({'val/mIoU': 10.0 * step + 0.5, 'val/iter': step})


def test_a_replay_after_a_crash_between_delivery_and_bookkeeping_sends_no_point_twice(tmp_path):
    """The journal is delivered; then its bookkeeping is set back to just after the run was
    opened, as a process killed before it recorded the last deliveries leaves it: a replay sends
    those operations again, with their journaled timestamps, and the store keeps each point
    once."""
    uri = tracking.default_tracking_uri(str(tmp_path))
    target = sweep_target(uri)
    work_dir = tmp_path / 'trials' / 't1'
    run = tracking.TrialRun.open(target, 't1', 'run', {'lr': 0.1}, tags={}, work_dir=work_dir)
    log_points(run)
    run.finish()
    journal = tracking.Journal(work_dir)
    assert journal.pending() == []
    opened_at = len(journal.path.read_bytes().splitlines(keepends=True)[0])
    journal.mark_sent(opened_at, run.run_id)
    assert [op['op'] for _, op in journal.pending()] == ['log_batch'] * 4 + ['set_terminated']

    assert tracking.replay_journals(tmp_path) == {}
    assert journal.pending() == []
    [child] = children(uri, target)
    assert history(uri, child.info.run_id) == [(1, 10.5), (2, 20.5), (3, 30.5), (4, 40.5)]
    assert child.info.status == 'FINISHED' and child.data.params == {'lr': '0.1'}


def test_operations_are_delivered_in_order_once_each(tmp_path):
    """A second delivery of a delivered journal sends nothing; a journal that grew sends only
    the new operations, in the order they were logged (the last value of a step wins)."""
    uri = tracking.default_tracking_uri(str(tmp_path))
    target = sweep_target(uri)
    run = tracking.TrialRun.open(target, 't1', 'run', {}, tags={}, work_dir=tmp_path / 't1')
    log_points(run, steps=(1,))
    run.finish('FAILED')
    journal = tracking.Journal(tmp_path / 't1')
    with journal.delivering(wait=False) as acquired:
        assert acquired and tracking.deliver(journal) == 0
    journal.append({'op': 'set_terminated', 'status': 'RUNNING'})
    for step, value in ((2, 1.0), (2, 2.0)):
        journal.append({'op': 'log_batch', 'metrics': [['val/mIoU', value, 1000 + step, step]],
                        'params': [], 'tags': [['phase', f'v{value:g}']]})
    with journal.delivering(wait=False) as acquired:
        assert acquired and tracking.deliver(journal) == 3
    [child] = children(uri, target)
    assert history(uri, child.info.run_id) == [(1, 10.5), (2, 1.0), (2, 2.0)]
    assert child.data.tags['phase'] == 'v2' and child.data.metrics['val/mIoU'] == 2.0


def test_a_running_trials_journal_is_left_to_it(tmp_path):
    journal = tracking.Journal(tmp_path / 'trials' / 't1')
    journal.append({'op': 'set_terminated', 'status': 'FINISHED'})
    with journal.delivering(wait=False):
        assert tracking.replay_journals(tmp_path) == {
            't1': 'its trial is running and delivers it'}


def test_the_writer_sees_a_server_that_stopped_at_once(tmp_path, monkeypatch):
    """MLflow's client would retry the first call after the stop for minutes (7 retries with
    backoff); the writer's calls fail at once and it goes on asking the server itself."""
    import time

    for name in SHORT_RETRIES:
        monkeypatch.delenv(name, raising=False)
    server = MlflowServer(tmp_path / 'server').start()
    try:
        run = tracking.TrialRun.open(sweep_target(server.uri), 't1', 'run', {}, tags={},
                                     work_dir=tmp_path / 't1')
        assert run.run_id is not None  # the run was opened
        server.stop()
        log_points(run, steps=(1,))
        deadline = time.monotonic() + 10
        while not run.store_down:
            assert time.monotonic() < deadline, 'the writer did not notice the stopped server'
            time.sleep(0.1)
        assert len(run.journal.pending()) == 1
        run.finish()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_run_logged_while_the_server_is_down_is_replayed_once_when_it_is_back(
        tmp_path, short_retries):
    """Open, log and finish return although nothing answers; the journal keeps everything, and
    harness.report --replay delivers it once the server is up (a second replay sends nothing)."""
    from harness import report

    server = MlflowServer(tmp_path / 'server').start()
    target = sweep_target(server.uri)
    server.stop()
    work_dir = tmp_path / 'sweep' / 'trials' / 't1'
    run = tracking.TrialRun.open(target, 't1', 'run', {'lr': 0.1}, tags={'seed': 0},
                                 work_dir=work_dir)
    log_points(run)
    (work_dir / 'notes.txt').write_text('kept')
    run.log_artifact(work_dir / 'notes.txt', 'notes')
    run.finish()
    assert run.run_id is None and len(tracking.Journal(work_dir).pending()) == 7
    assert 'did not answer' in tracking.replay_journals(tmp_path / 'sweep')['t1']

    server.start()
    try:
        report.replay(tmp_path / 'sweep')
        report.replay(tmp_path / 'sweep')
        [child] = children(server.uri, target)
        assert history(server.uri, child.info.run_id) == [(1, 10.5), (2, 20.5), (3, 30.5),
                                                           (4, 40.5)]
        assert child.info.status == 'FINISHED' and child.data.tags['seed'] == '0'
        from mlflow import MlflowClient
        assert [a.path for a in MlflowClient(server.uri).list_artifacts(
            child.info.run_id, 'notes')] == ['notes/notes.txt']
    finally:
        server.stop()


def tracked_trial(data_root: Path, work_dir: Path, target: Dict[str, str],
                  on_validation: Callable[[int], None]) -> Tuple[Dict[str, Any], Dict[int, float]]:
    """A trial logged as ``harness.sweep``'s rank 0 logs it; ``on_validation(iteration)`` runs
    after each stage-2 validation was logged. Returns the result and the val mIoU reported at
    each stage-2 validation."""
    from harness.trial import TrialSpec, run_trial

    spec = TrialSpec(data_root=str(data_root), task='wsss').with_overrides(SHORT)
    run = tracking.TrialRun.open(target, 't1', 'run', {'task': 'wsss'}, tags={'seed': 0},
                                 work_dir=work_dir)
    reported = {}

    def report(metrics: Dict[str, Any]) -> None:
        run.log_metrics(metrics)
        if 'val/mIoU' in metrics:
            reported[int(metrics['val/iter'])] = metrics['val/mIoU']
            on_validation(int(metrics['val/iter']))

    result = run_trial(spec, work_dir, stage1_cache=work_dir.parent / 'stage1', report=report)
    run.log_result(result, work_dir)
    run.finish()
    return result, reported


def assert_every_point_once(uri: str, target: Dict[str, str], work_dir: Path,
                            reported: Dict[int, float], result: Dict[str, Any]) -> None:
    from mlflow import MlflowClient

    assert sorted(reported) == list(STAGE2_VALIDATIONS)
    [child] = children(uri, target)
    assert child.info.status == 'FINISHED'
    assert history(uri, child.info.run_id) == sorted(reported.items())
    assert child.data.metrics['pseudo/mIoU'] == pytest.approx(result['pseudo/mIoU'])
    assert child.data.tags[tracking.STAGE1_RUN_TAG] == Path(result['stage1_config']).parent.name
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(child.info.run_id)}
    assert {'configs', 'splits', 'pseudo_masks.png'} <= artifacts
    assert tracking.Journal(work_dir).pending() == []


@pytest.mark.slow
def test_a_trial_goes_on_while_the_server_is_down_and_every_point_arrives_once(
        tiny_dataset, tmp_path, short_retries):
    """The server stops after stage 2's first validation and starts again at its third: the
    trial validates at iteration 4 meanwhile, finishes, and its run holds every point once."""
    server = MlflowServer(tmp_path / 'server').start()
    target = sweep_target(server.uri)
    work_dir = tmp_path / 'trials' / 't1'
    journal = tracking.Journal(work_dir)
    held_back = []

    def on_validation(iteration: int) -> None:
        if iteration == 2:
            server.stop()
        if iteration == 4:  # logged and kept in the journal while nothing answers
            held_back.extend(op['op'] for _, op in journal.pending())
        if iteration == 6:
            server.start()

    try:
        result, reported = tracked_trial(tiny_dataset, work_dir, target, on_validation)
        assert 'log_batch' in held_back
        assert_every_point_once(server.uri, target, work_dir, reported, result)
    finally:
        server.stop()


@pytest.mark.slow
def test_a_trial_that_starts_while_the_server_is_down_gets_its_run_when_it_is_back(
        tiny_dataset, tmp_path, short_retries):
    """Nothing answers as the trial starts; the server starts at stage 2's second validation:
    the child run is created then and holds every point once."""
    server = MlflowServer(tmp_path / 'server').start()
    target = sweep_target(server.uri)
    server.stop()
    work_dir = tmp_path / 'trials' / 't1'

    def on_validation(iteration: int) -> None:
        if iteration == 4:
            server.start()

    try:
        result, reported = tracked_trial(tiny_dataset, work_dir, target, on_validation)
        assert_every_point_once(server.uri, target, work_dir, reported, result)
    finally:
        server.stop()


def test_report_replay_of_a_folder_without_trials_is_refused_by_name(tmp_path, capsys):
    from harness import report

    uri = tracking.default_tracking_uri(str(tmp_path))
    sweep_target(uri)
    with pytest.raises(SystemExit) as stopped:
        report.main(['journal', '--tracking-uri', uri, '--replay', str(tmp_path / 'nope')])
    assert stopped.value.code == 2
    assert f'--replay {tmp_path / "nope"}: no trials/ folder there' in capsys.readouterr().err
