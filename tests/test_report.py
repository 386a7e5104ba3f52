"""MLflow runs as the sweep writes them (harness.tracking) and the report built from them."""
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import report, tracking

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite store for the module (creating one takes seconds); tests use their own sweeps."""
    return tracking.default_tracking_uri(str(tmp_path_factory.mktemp('store')))


def start_sweep(uri: str, name: str) -> dict:
    return tracking.start_sweep_run(uri, name, name, params={'name': name}, artifacts=[]).to_dict()


def log_trial(target: dict, trial_id: str, fraction: float, threshold: float, seed: int,
              miou: float, overrides=None) -> tracking.TrialRun:
    """A trial's child run as a sweep's rank 0 logs it: two validations, then the final result
    (its figures in ``run.result``, which :func:`finish_trial` records)."""
    run = tracking.TrialRun.open(
        target, trial_id, f'run-{trial_id}', overrides or {'fraction': fraction,
                                                           'threshold': threshold, 'seed': seed},
        tags=dict(task='ssss', labelled_fraction=fraction, saliency_threshold=threshold,
                  seed=seed))
    run.log_metrics({'val/mIoU': miou - 5, 'val/iter': 10})
    run.log_metrics({'val/mIoU': miou, 'val/IoU.disc': np.float32(miou), 'val/iter': 20})
    final = {'pseudo/mIoU': 40.0, 'time/stage2_s': 3.5, 'task': 'ssss', 'stage1_reused': True}
    run.log_metrics(final)
    run.result = {'val/mIoU': miou, 'val/IoU.disc': miou, **final}
    return run


def finish_trial(run: tracking.TrialRun, folder: Path, **figures: float) -> None:
    """Ends ``run`` as a finished trial does: its result (``run.result`` and ``figures``)
    written to ``<folder>/<run id>/result.json`` and recorded, then the run FINISHED."""
    result = {**run.result, **figures}
    result_file = folder / run.run_id / 'result.json'
    result_file.parent.mkdir(parents=True)
    result_file.write_text(json.dumps(result))
    run.log_final_record(result, result_file)
    run.finish()


def wait_until_delivered(run: tracking.TrialRun, timeout: float = 60.0) -> None:
    """Waits until the run's background writer has sent its journal to the store."""
    deadline = time.monotonic() + timeout
    while run.journal.pending():
        assert time.monotonic() < deadline, f'{run.journal.path} not delivered in {timeout} s'
        time.sleep(0.05)


def test_a_retried_trial_logs_into_its_own_run(tracking_uri):
    from mlflow import MlflowClient

    target = start_sweep(tracking_uri, 'retried')
    first = log_trial(target, 't1', 0.125, 0.3, 0, 50.0)
    first.finish('FAILED')
    again = log_trial(target, 't1', 0.125, 0.3, 0, 52.0)  # the retried worker
    again.finish()
    client = MlflowClient(tracking_uri)
    children = client.search_runs(
        [target['experiment_id']], f"tags.`mlflow.parentRunId` = '{target['parent_run_id']}'")
    assert [run.info.run_id for run in children] == [first.run_id] == [again.run_id]
    child = children[0]
    assert child.info.status == 'FINISHED'
    assert child.data.tags['sweep_name'] == 'retried' and child.data.tags['git_commit']
    assert child.data.params['fraction'] == '0.125'
    history = client.get_metric_history(child.info.run_id, 'val/mIoU')
    assert sorted((m.step, m.value) for m in history) == [
        (10, 45.0), (10, 47.0), (20, 50.0), (20, 52.0)]
    assert child.data.metrics['pseudo/mIoU'] == 40.0
    assert 'task' not in child.data.metrics and 'val/iter' not in child.data.metrics


def test_long_params_are_truncated_and_flattened(tracking_uri):
    from mlflow import MlflowClient

    target = start_sweep(tracking_uri, 'long')
    run = tracking.TrialRun.open(target, 't1', 'run', {'stage1.custom_hooks': ['x' * 900],
                                                       'nested': {'a': 1}}, tags={})
    params = MlflowClient(tracking_uri).get_run(run.run_id).data.params
    assert len(params['stage1.custom_hooks']) == tracking.PARAM_VALUE_LIMIT
    assert params['nested.a'] == '1'


def test_params_beyond_one_batch_are_all_logged_and_a_retry_logs_them_again(tracking_uri):
    """MLflow takes at most 100 params a request: 250 overrides need three, and a retried
    trial's worker, which opens its run again, logs them again without failing."""
    from mlflow import MlflowClient

    target = start_sweep(tracking_uri, 'many_params')
    overrides = {f'stage2.key_{index:03d}': index for index in range(250)}
    logged = {key: str(index) for key, index in overrides.items()}
    first = tracking.TrialRun.open(target, 't1', 'run', overrides, tags={})
    assert MlflowClient(tracking_uri).get_run(first.run_id).data.params == logged
    again = tracking.TrialRun.open(target, 't1', 'run', overrides, tags={})
    assert again.run_id == first.run_id
    assert MlflowClient(tracking_uri).get_run(first.run_id).data.params == logged


def git(repository: Path, *args: str) -> str:
    return subprocess.run(['git', '-c', 'user.name=test', '-c', 'user.email=test@localhost',
                           *args], cwd=repository, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_git_commit_is_the_checked_out_commit_and_dirty_when_a_tracked_file_is_edited(
        tmp_path, monkeypatch):
    monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))  # git must not look above it
    repository = tmp_path / 'repository'
    repository.mkdir()
    assert tracking.git_commit(repository) == 'uncommitted'  # no repository
    git(repository, 'init', '-q')
    assert tracking.git_commit(repository) == 'uncommitted'  # no commit yet
    (repository / 'train.py').write_text('lr = 0.1\n')
    git(repository, 'add', 'train.py')
    git(repository, 'commit', '-q', '-m', 'first')
    sha = git(repository, 'log', '-1', '--format=%H')
    assert len(sha) == 40 and tracking.git_commit(repository) == sha
    (repository / 'notes.txt').write_text('not tracked\n')
    assert tracking.git_commit(repository) == sha  # untracked files do not count
    (repository / 'train.py').write_text('lr = 0.2\n')
    assert tracking.git_commit(repository) == f'{sha}+dirty'
    # by default, the project's own checkout
    assert tracking.git_commit().startswith(git(PROJECT_ROOT, 'log', '-1', '--format=%H'))


def test_report_reads_the_latest_run_of_a_sweep_started_twice(tracking_uri, tmp_path):
    from mlflow import MlflowClient

    first = start_sweep(tracking_uri, 'twice')
    finish_trial(log_trial(first, 'old', 0.25, 0.5, 0, 30.0), tmp_path)
    second = start_sweep(tracking_uri, 'twice')
    finish_trial(log_trial(second, 'new', 0.25, 0.5, 0, 70.0), tmp_path)
    client = MlflowClient(tracking_uri)
    started = [client.get_run(target['parent_run_id']).info.start_time
               for target in (first, second)]
    assert started[0] < started[1], 'both parents started in the same millisecond'
    parent, trials = report.load_trials('twice', tracking_uri)
    assert parent.info.run_id == second['parent_run_id']
    assert [(trial.trial_id, trial.metrics['val/mIoU']) for trial in trials] == [('new', 70.0)]


def test_single_fraction_plot_is_miou_against_the_threshold():
    def trial(threshold: float, seed: int, miou: float) -> report.TrialRecord:
        return report.TrialRecord(f't{threshold}-{seed}', 'run', 'ssss', 0.25, threshold, seed,
                                  {}, {'val/mIoU': miou})  # FINISHED by default

    # given out of threshold order; threshold 0.7: mean 62, std 4 (ddof 1)
    cells = report.comparison_cells([trial(0.7, 0, 58.0), trial(0.7, 1, 62.0),
                                     trial(0.7, 2, 66.0), trial(0.3, 0, 40.0),
                                     trial(0.5, 0, 50.0)])
    axis, = report.miou_figure(cells, 'one fraction').axes
    assert axis.get_xlabel() == 'saliency threshold (IRD)'
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ['1/4']
    errorbar, = axis.containers  # one line, with its error bars
    line, _, (bars, ) = errorbar.lines
    assert line.get_xydata().tolist() == [[0.3, 40.0], [0.5, 50.0], [0.7, 62.0]]
    assert [segment.tolist() for segment in bars.get_segments()] == [
        [[0.3, 40.0], [0.3, 40.0]], [[0.5, 50.0], [0.5, 50.0]], [[0.7, 58.0], [0.7, 66.0]]]


def test_report_table_json_and_plot(tracking_uri, tmp_path, capsys):
    from mlflow import MlflowClient

    target = start_sweep(tracking_uri, 'grid')
    values = {(0.125, 0.3): [40.0, 44.0], (0.125, 0.5): [50.0, 50.0], (0.5, 0.3): [60.0, 62.0],
              (0.5, 0.5): [70.0, 74.0]}
    for index, ((fraction, threshold), mious) in enumerate(values.items()):
        for seed, miou in enumerate(mious):
            finish_trial(log_trial(target, f't{index}{seed}', fraction, threshold, seed, miou),
                         tmp_path)
    start_sweep(tracking_uri, 'other')  # another sweep of the store is not mixed in

    out = tmp_path / 'plot.png'
    summary = report.report('grid', tracking_uri, out)
    printed = capsys.readouterr().out
    assert 'fraction | threshold 0.3' in printed
    assert '1/8      | 42.00 +- 2.83 (n=2) | 50.00 +- 0.00 (n=2)' in printed
    assert '1/2      | 61.00 +- 1.41 (n=2) | 72.00 +- 2.83 (n=2)' in printed
    assert len(summary['trials']) == 8
    image = np.asarray(Image.open(out))
    assert image.shape[0] > 100 and image.std() > 0
    artifacts = MlflowClient(tracking_uri).list_artifacts(target['parent_run_id'])
    assert [a.path for a in artifacts] == ['plot.png']

    report.main(['grid', '--tracking-uri', tracking_uri, '--json', '--out', str(out)])
    as_json = json.loads(capsys.readouterr().out)
    assert len(as_json['trials']) == 8
    trial = as_json['trials'][0]
    assert set(trial['overrides']) == {'fraction', 'threshold', 'seed'}
    assert trial['metrics']['val/mIoU'] in (40.0, 44.0)
    cell = next(c for c in as_json['table'] if c['labelled_fraction'] == 0.5
                and c['saliency_threshold'] == 0.5)
    assert (cell['mean'], cell['count']) == (72.0, 2)


def test_ird_table_counts_each_stage1_run_once_and_wsss_is_a_row(tracking_uri, tmp_path,
                                                                  capsys):
    target = start_sweep(tracking_uri, 'ird')
    # (threshold, seed) -> IRD precision, recall of that stage-1 run; threshold 0.3's runs are
    # shared by two fractions each (0 = WSSS and 1/2), threshold 0.5's by one.
    figures = {(0.3, 0): (20.0, 60.0), (0.3, 1): (30.0, 90.0), (0.5, 0): (50.0, 40.0)}
    index = 0
    for (threshold, seed), (precision, recall) in figures.items():
        for fraction in ((0.0, 0.5) if threshold == 0.3 else (0.5, )):
            run = log_trial(target, f'i{index}', fraction, threshold, seed, 50.0 + 10 * fraction)
            ird = {'ird/precision': precision, 'ird/recall': recall,
                   'ird/share.false_coverage': precision / 2}
            run.log_metrics({**ird, 'stage1/iter': 600})
            finish_trial(run, tmp_path, **ird)
            index += 1
    summary = report.report('ird', tracking_uri, tmp_path / 'ird.png')
    rows = {row['saliency_threshold']: row for row in summary['ird']}
    assert rows[0.3]['stage1_runs'] == 2 and rows[0.5]['stage1_runs'] == 1
    assert (rows[0.3]['ird/precision'], rows[0.3]['ird/recall']) == (25.0, 75.0)
    assert (rows[0.5]['ird/precision'], rows[0.5]['ird/recall']) == (50.0, 40.0)
    assert rows[0.3]['ird/share.false_coverage'] == 12.5 and rows[0.3]['pseudo/mIoU'] == 40.0
    printed = capsys.readouterr().out
    assert 'wsss     | 50.00 +- 0.00 (n=2) | -' in printed
    assert '0.3       | 2    | 25.00     | 75.00  | 40.00       | 12.50' in printed
    assert np.asarray(Image.open(tmp_path / 'ird.png')).std() > 0


def test_ird_table_tells_stage1_runs_apart_by_their_folder_not_their_seed(tracking_uri, tmp_path):
    """Trials of one threshold and seed whose stage 1 differs (a stage-1 setting swept) ran two
    stage-1 runs: both count; trials sharing a run count once."""
    target = start_sweep(tracking_uri, 'ablation')
    for index, (stage1_run, precision) in enumerate([('a1b2', 80.0), ('a1b2', 80.0),
                                                      ('c3d4', 20.0)]):
        run = log_trial(target, f'i{index}', 0.5, 0.5, 0, 60.0)
        run.log_metrics({'ird/precision': precision, 'ird/recall': 50.0, 'stage1/iter': 600})
        run.set_tags({tracking.STAGE1_RUN_TAG: stage1_run})
        finish_trial(run, tmp_path, **{'ird/precision': precision, 'ird/recall': 50.0})
    row, = report.report('ablation', tracking_uri, tmp_path / 'ablation.png')['ird']
    assert row['stage1_runs'] == 2 and row['ird/precision'] == 50.0


def test_only_finished_trials_are_tabled_and_the_others_are_counted_and_listed(
        tracking_uri, tmp_path, capsys):
    """A sweep of five trials of one cell: two finished (50, 60), one running, one failed, one
    interrupted, each of the last three at an intermediate 14.87. The table holds the finished
    two; the others are counted by status, listed, and tabled with --all, marked."""
    target = start_sweep(tracking_uri, 'mixed')
    for trial_id, miou in (('done-a', 50.0), ('done-b', 60.0)):
        finish_trial(log_trial(target, trial_id, 0.25, 0.5, 0, miou), tmp_path)

    def unfinished(trial_id: str) -> tracking.TrialRun:
        run = tracking.TrialRun.open(target, trial_id, trial_id, {}, tags=dict(
            task='ssss', labelled_fraction=0.25, saliency_threshold=0.5, seed=1))
        run.log_metrics({'val/mIoU': 14.87, 'val/iter': 10})
        wait_until_delivered(run)
        return run

    unfinished('failed').finish('FAILED')
    unfinished('interrupted')
    # Ctrl-C: the driver ends the runs that its stopped workers left RUNNING
    ended = tracking.end_trial_runs(tracking.TrackingTarget(**target), {})
    assert ended == ['interrupted']
    unfinished('running')  # resumed by another sweep, say

    summary = report.report('mixed', tracking_uri, tmp_path / 'mixed.png')
    printed = capsys.readouterr().out
    statuses = {t['trial_id']: t['status'] for t in summary['trials']}
    assert statuses == {'done-a': 'FINISHED', 'done-b': 'FINISHED', 'running': 'RUNNING',
                        'failed': 'FAILED', 'interrupted': 'INTERRUPTED'}
    cell, = summary['table']
    assert (cell['mean'], cell['count'], cell['not_finished']) == (55.0, 2, 0)
    assert summary['left_out'] == {'RUNNING': 1, 'FAILED': 1, 'INTERRUPTED': 1}
    assert '1/4      | 55.00 +- 7.07 (n=2)' in printed and '14.87' in printed
    assert '2 finished trial(s)' in printed
    assert '  1 INTERRUPTED: interrupted: `harness.sweep ... --resume` continues it' in printed
    listed = [[cell.strip() for cell in line.split(' | ')[:2]] for line in printed.splitlines()
              if line.split(' | ')[0].strip() in statuses]
    assert listed == [['failed', 'FAILED'], ['interrupted', 'INTERRUPTED'],
                      ['running', 'RUNNING']]

    report.main(['mixed', '--tracking-uri', tracking_uri, '--all', '--json',
                 '--out', str(tmp_path / 'all.png')])
    everything = json.loads(capsys.readouterr().out)
    cell, = everything['table']
    assert (cell['count'], cell['not_finished']) == (5, 3)
    assert cell['mean'] == pytest.approx((50 + 60 + 3 * 14.87) / 5)
    report.main(['mixed', '--tracking-uri', tracking_uri, '--all',
                 '--out', str(tmp_path / 'all.png')])
    printed = capsys.readouterr().out
    assert '(n=5, *3 not finished)' in printed and '14.87 *' in printed


def test_report_reads_the_final_record_not_the_latest_value_of_a_metric(tracking_uri, tmp_path):
    """A resumed trial logged IRD at stage-1 step 500 (an intermediate measurement) and its final
    figures at step 400 (its last stage-2 validation): MLflow's latest value is the step-500 one.
    The report gives the final record: what the trial's result.json holds."""
    from mlflow import MlflowClient

    target = start_sweep(tracking_uri, 'out_of_order')
    run = log_trial(target, 'resumed', 0.25, 0.3, 0, 50.0)
    run.log_metrics({'ird/precision': 10.86, 'ird/recall': 72.93, 'stage1/iter': 500})
    run.log_metrics({'val/mIoU': 50.0, 'val/iter': 400})
    final = {'ird/precision': 9.12, 'ird/recall': 69.42}
    run.log_metrics(final)  # step 400, as the final result is logged
    finish_trial(run, tmp_path, **final)
    client = MlflowClient(tracking_uri)
    assert client.get_run(run.run_id).data.metrics['ird/precision'] == 10.86  # MLflow's latest
    row, = report.report('out_of_order', tracking_uri, tmp_path / 'ooo.png')['ird']
    recorded = json.loads((tmp_path / run.run_id / 'result.json').read_text())
    assert (row['ird/precision'], row['ird/recall']) == (9.12, 69.42) == (
        recorded['ird/precision'], recorded['ird/recall'])
    # the record is also the run's artifact result.json
    assert json.loads(Path(client.download_artifacts(
        run.run_id, tracking.RECORD_ARTIFACT, str(tmp_path / 'download'))).read_text()) == recorded


def test_the_final_record_fits_a_tag_with_the_per_class_ious_of_a_large_dataset():
    """A record of 2 x 171 per-class IoUs (COCO-stuff's class count) is longer than MLflow lets a
    tag be: the tag keeps every figure but the per-class IoUs."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    result = {'val/mIoU': 41.23, 'pseudo/mIoU': 55.5, 'ird/precision': 9.123456789,
              'val/IoU.absent': None, 'task': 'wsss', 'seed': 3, 'stage1_reused': False}
    small = json.loads(tracking.record_text(result))
    assert small == {'val/mIoU': 41.23, 'pseudo/mIoU': 55.5, 'ird/precision': 9.123456789,
                     'val/IoU.absent': None}
    result.update({f'{prefix}/IoU.class number {index}': 12.345678901234
                   for prefix in ('val', 'pseudo') for index in range(171)})
    text = tracking.record_text(result)
    assert len(text) <= MAX_TAG_VAL_LENGTH
    assert json.loads(text) == {'val/mIoU': 41.23, 'pseudo/mIoU': 55.5,
                                'ird/precision': 9.123456789}


def test_unknown_sweep_lists_the_known_ones(tracking_uri):
    start_sweep(tracking_uri, 'known')
    with pytest.raises(SystemExit):
        report.main(['nope', '--tracking-uri', tracking_uri])
    with pytest.raises(LookupError, match=r"no sweep or MLflow experiment named 'nope'.*'known'"):
        report.load_trials('nope', tracking_uri)


def test_fraction_labels():
    assert [report.fraction_label(f) for f in (0.0625, 0.125, 0.5, 1.0, 0.0)] == [
        '1/16', '1/8', '1/2', '1', 'wsss']
