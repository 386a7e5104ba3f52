"""Compares the trials of a sweep from MLflow: tables and a plot of val mIoU (percent).

    python -m harness.report NAME [--json] [--all] [--out FILE] [--tracking-uri URI]
                                  [--replay SWEEP_DIR]

Finished trials are tabled with their final record; ``--all`` adds the others' latest
(intermediate) values, marked ``*``. The plot is also logged to the sweep's parent run.
See docs/sweeps.md and docs/tracking.md.
"""
import argparse
import json
from collections import Counter
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness import strict_json
from harness.sweep_config import DEFAULT_STORAGE_PATH
from harness.tracking import (PARENT_TAG, RECORD_TAG, ROLE_TAG, STAGE1_RUN_TAG, STATUS_TAG,
                              default_tracking_uri, replay_journals)
from harness.validation import InvalidSetting, check_folder_argument, check_tracking_uri

METRIC = 'val/mIoU'
FINISHED = 'FINISHED'
# Why a trial that is not finished is left out of the tables, by its status.
LEFT_OUT_BECAUSE = {
    'RUNNING': 'still running: its figures are intermediate',
    'INTERRUPTED': 'interrupted: `harness.sweep ... --resume` continues it',
    'FAILED': 'failed: its log says why',
    'STOPPED': 'stopped early by the scheduler: its figures are intermediate',
    'NO_RECORD': 'finished without a final record (logged by an older harness)'}


@dataclass(frozen=True)
class TrialRecord:
    """One trial as its child run holds it. ``status``: ``FINISHED`` (``metrics`` are the final
    figures) or a key of :data:`LEFT_OUT_BECAUSE` (``metrics``: the latest logged values)."""

    trial_id: str
    run_id: str
    task: str
    labelled_fraction: float
    saliency_threshold: float
    seed: int
    overrides: Dict[str, str]
    metrics: Dict[str, float]
    stage1_run: str = ''  # the stage-1 run folder the trial used ('' if not recorded)
    status: str = FINISHED


@dataclass(frozen=True)
class Cell:
    """Val mIoU (percent) of the trials with one labelled fraction and saliency threshold."""

    labelled_fraction: float
    saliency_threshold: float
    mean: float
    std: float
    count: int
    not_finished: int = 0  # trials of the cell that are not finished (``--all`` only)


def load_trials(name: str, tracking_uri: str) -> Tuple[Any, List[TrialRecord]]:
    """The latest parent run of sweep / experiment ``name`` and all its trials, sorted by
    fraction, threshold, seed and trial id.

    Raises:
        LookupError: naming the tracking URI and the sweeps it holds when none matches.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    experiment_ids = ([experiment.experiment_id] if experiment is not None else
                      [e.experiment_id for e in client.search_experiments()])
    role = f"tags.`{ROLE_TAG}` = 'sweep'"
    newest = {'order_by': ['attributes.start_time DESC'], 'max_results': 1}
    parents = client.search_runs(experiment_ids, f"{role} and tags.sweep_name = '{name}'", **newest)
    if not parents and experiment is not None:
        parents = client.search_runs(experiment_ids, role, **newest)
    if not parents:
        known = sorted({run.data.tags.get('sweep_name', '?') for run in client.search_runs(
            [e.experiment_id for e in client.search_experiments()], role)})
        raise LookupError(f'no sweep or MLflow experiment named {name!r} in {tracking_uri}; '
                          f'sweeps there: {known}')
    parent = parents[0]
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'", max_results=50000)
    trials = []
    for run in children:
        tags = run.data.tags
        status = trial_status(run.info.status, tags)
        metrics = ({key: value for key, value in json.loads(tags[RECORD_TAG]).items()
                    if value is not None} if status == FINISHED else dict(run.data.metrics))
        trials.append(TrialRecord(
            trial_id=tags.get('trial_id', ''), run_id=run.info.run_id, task=tags.get('task', ''),
            labelled_fraction=float(tags.get('labelled_fraction', 0.0)),
            saliency_threshold=float(tags.get('saliency_threshold', 'nan')),
            seed=int(tags.get('seed', 0)), overrides=dict(run.data.params), metrics=metrics,
            stage1_run=tags.get(STAGE1_RUN_TAG, ''), status=status))
    return parent, sorted(trials, key=lambda t: (t.labelled_fraction, t.saliency_threshold,
                                                 t.seed, t.trial_id))


def trial_status(run_status: str, tags: Dict[str, str]) -> str:
    """A trial's status from its child run's MLflow status and tags; ``FINISHED`` needs the
    final record."""
    if run_status == 'FINISHED':
        return FINISHED if RECORD_TAG in tags else 'NO_RECORD'
    if run_status == 'KILLED':
        return tags.get(STATUS_TAG, 'INTERRUPTED')
    return 'FAILED' if run_status == 'FAILED' else 'RUNNING'  # RUNNING, SCHEDULED


def tabled(trials: Sequence[TrialRecord], show_all: bool = False) -> List[TrialRecord]:
    """The trials the tables use: the finished ones; with ``show_all``, also the others that
    have logged a val mIoU (intermediate)."""
    return [t for t in trials if t.status == FINISHED or (show_all and METRIC in t.metrics)]


def comparison_cells(trials: Sequence[TrialRecord]) -> List[Cell]:
    """Mean and standard deviation (ddof 1; 0 for one trial) of val mIoU per (fraction,
    threshold)."""
    groups: Dict[Tuple[float, float], List[TrialRecord]] = {}
    for trial in trials:
        groups.setdefault((trial.labelled_fraction, trial.saliency_threshold), []).append(trial)
    cells = []
    for (fraction, threshold), group in sorted(groups.items()):
        values = [trial.metrics[METRIC] for trial in group]
        cells.append(Cell(fraction, threshold, float(np.mean(values)),
                          float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values),
                          sum(1 for trial in group if trial.status != FINISHED)))
    return cells


def format_table(cells: Sequence[Cell], title: str) -> str:
    """Rows: labelled fraction; columns: saliency threshold; cells: ``mean +- std (n)``."""
    fractions = sorted({c.labelled_fraction for c in cells})
    thresholds = sorted({c.saliency_threshold for c in cells})
    by_key = {(c.labelled_fraction, c.saliency_threshold): c for c in cells}
    header = ['fraction'] + [f'threshold {t:g}' for t in thresholds]
    rows = [[fraction_label(f)] + [
        _cell_text(by_key[f, t]) if (f, t) in by_key else '-' for t in thresholds]
        for f in fractions]
    return _render(title, header, rows)


def _cell_text(cell: Cell) -> str:
    """``mean +- std (n=count)``, with ``*k not finished`` when ``k`` of them are not."""
    marked = f', *{cell.not_finished} not finished' if cell.not_finished else ''
    return f'{cell.mean:.2f} +- {cell.std:.2f} (n={cell.count}{marked})'


def format_trials(trials: Sequence[TrialRecord], title: str) -> str:
    """A row per trial: id, status, fraction, threshold, seed and val mIoU (final for a
    finished trial, else the latest logged, marked ``*``)."""
    rows = [[t.trial_id, t.status, fraction_label(t.labelled_fraction),
             f'{t.saliency_threshold:g}', str(t.seed),
             '-' if METRIC not in t.metrics else
             f'{t.metrics[METRIC]:.2f}{"" if t.status == FINISHED else " *"}'] for t in trials]
    return _render(title, ['trial', 'status', 'fraction', 'threshold', 'seed', 'val mIoU'], rows)


def left_out(trials: Sequence[TrialRecord]) -> Dict[str, int]:
    """How many trials of each status other than ``FINISHED`` there are."""
    return dict(Counter(trial.status for trial in trials if trial.status != FINISHED))


def ird_rows(trials: Sequence[TrialRecord]) -> List[Dict[str, Any]]:
    """Per saliency threshold with IRD figures: the ``ird/*`` figures and ``pseudo/mIoU``
    (percent), each the mean over the threshold's stage-1 runs, a run counted once however many
    trials share it (a trial without ``stage1_run`` counts once per seed).
    """
    rows = []
    for threshold in sorted({t.saliency_threshold for t in trials}):
        keyed = [(t.stage1_run or f'seed {t.seed}', t) for t in trials
                 if t.saliency_threshold == threshold and 'ird/precision' in t.metrics]
        runs = {run: t.metrics for run, t in keyed}
        if not runs:
            continue
        keys = sorted({key for metrics in runs.values() for key in metrics
                       if key.startswith('ird/')} | {'pseudo/mIoU'})
        row: Dict[str, Any] = {'saliency_threshold': threshold, 'stage1_runs': len(runs),
                               'not_finished': len({run for run, t in keyed
                                                    if t.status != FINISHED})}
        for key in keys:
            values = [m[key] for m in runs.values() if m.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        rows.append(row)
    return rows


def format_ird_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Rows: threshold; columns: precision, recall, pseudo-mask mIoU, share of N per kind, recall
    per kind."""
    columns = ['ird/precision', 'ird/recall', 'pseudo/mIoU'] + [
        key for prefix in ('ird/share.', 'ird/recall.')
        for key in sorted({name for row in rows for name in row if name.startswith(prefix)})]
    header = ['threshold', 'runs'] + [c.replace('ird/', '') for c in columns]
    body = [[f'{row["saliency_threshold"]:g}', str(row['stage1_runs']) + (
        f' (*{row["not_finished"]} not finished)' if row.get('not_finished') else '')] + [
        '-' if row.get(c) is None else f'{row[c]:.2f}' for c in columns] for row in rows]
    return _render('IRD: how much of the dropped region N is a saliency error (precision), how '
                   'much of the errors it drops (recall), and where N lies (share, %)',
                   header, body)


def _render(title: str, header: List[str], rows: List[List[str]]) -> str:
    """``title``, then the rows as left-aligned columns under ``header`` and a ``-+-`` rule."""
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = [' | '.join(cell.ljust(width) for cell, width in zip(row, widths))
             for row in [header] + rows]
    lines.insert(1, '-+-'.join('-' * width for width in widths))
    return '\n'.join([title, *lines])


def plot(cells: Sequence[Cell], out_path: Path, title: str) -> Path:
    """Writes :func:`miou_figure` of ``cells`` to ``out_path`` (PNG); returns ``out_path``."""
    import matplotlib.pyplot as plt

    figure = miou_figure(cells, title)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    return out_path


def check_plot_file(path: Path, argument: str) -> None:
    """Checks that ``path`` names an image file matplotlib writes, in a usable folder.

    Raises:
        InvalidSetting: naming ``argument``, the path and the valid suffixes.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    if path.is_dir():
        raise InvalidSetting(f'{argument} {path} is a folder: name the plot file, e.g. '
                             f'{path / "miou.png"}')
    suffixes = sorted(FigureCanvasBase.get_supported_filetypes())
    if path.suffix.lstrip('.').lower() not in suffixes:
        raise InvalidSetting(f'{argument} {path}: {path.suffix or "no suffix"} is not an image '
                             f'type matplotlib writes; valid suffixes: {suffixes}')
    check_folder_argument(path.parent, f'{argument} {path}: folder', min_free_mib=1)


def miou_figure(cells: Sequence[Cell], title: str) -> Any:
    """Val mIoU vs labelled fraction (0 = WSSS, evenly spaced), a line per threshold, error
    bars = std; against the threshold when there is one fraction. A matplotlib figure."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fractions = sorted({c.labelled_fraction for c in cells})
    thresholds = sorted({c.saliency_threshold for c in cells})
    figure, axis = plt.subplots(figsize=(6, 4))
    if len(fractions) > 1:
        # Evenly spaced categories: 0 (WSSS) has no place on a log scale.
        position = {fraction: index for index, fraction in enumerate(fractions)}
        for threshold in thresholds:
            line = [c for c in cells if c.saliency_threshold == threshold]
            axis.errorbar([position[c.labelled_fraction] for c in line], [c.mean for c in line],
                          yerr=[c.std for c in line], marker='o', capsize=3,
                          label=f'threshold {threshold:g}')
        axis.set_xticks(range(len(fractions)), [fraction_label(f) for f in fractions])
        axis.set_xlabel('labelled fraction')
    else:
        axis.errorbar(thresholds, [c.mean for c in cells], yerr=[c.std for c in cells],
                      marker='o', capsize=3, label=fraction_label(fractions[0]))
        axis.set_xlabel('saliency threshold (IRD)')
    axis.legend()
    axis.set_ylabel('val mIoU (%)')
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def fraction_label(fraction: float) -> str:
    """``0.125 -> '1/8'``; 0 (no labelled ids) -> ``'wsss'``."""
    return 'wsss' if fraction == 0 else str(Fraction(fraction).limit_denominator(1000))


def report(name: str, tracking_uri: str, out_path: Optional[Path] = None,
           as_json: bool = False, show_all: bool = False) -> Dict[str, Any]:
    """Prints the tables (JSON with ``as_json``), writes the plot to ``out_path`` (default
    ``<sweep>_miou.png``) and logs it to the parent run; returns the summary. ``show_all`` also
    tables the trials that are not finished, with their latest values.

    Raises:
        LookupError: see :func:`load_trials`.
    """
    from mlflow import MlflowClient

    parent, trials = load_trials(name, tracking_uri)
    used = tabled(trials, show_all)
    cells = comparison_cells(used)
    sweep_name = parent.data.tags.get('sweep_name', name)
    ird = ird_rows(used)
    others = left_out(trials)
    summary = {'sweep': sweep_name, 'parent_run_id': parent.info.run_id,
               'parent_status': parent.info.status, 'all': show_all,
               'table': [asdict(c) for c in cells], 'ird': ird,
               'left_out': {} if show_all else others,
               'trials': [asdict(t) for t in trials]}
    if as_json:
        print(strict_json.dumps(summary, indent=2))
    else:
        finished = len(trials) - sum(others.values())
        title = (f'{sweep_name}: val mIoU (%) mean +- std over seeds, {finished} finished '
                 f'trial(s){" and the others, marked *" if show_all else ""}, parent run '
                 f'{parent.info.run_id} ({parent.info.status})')
        print(format_table(cells, title) if cells else f'{title}: no trial to table')
        if ird:
            print('\n' + format_ird_table(ird))
        if others:
            print('\n' + ('Not finished (marked *: latest logged values, not results):'
                          if show_all else 'Left out of the tables, not finished:'))
            for status, count in sorted(others.items()):
                print(f'  {count} {status}: {LEFT_OUT_BECAUSE.get(status, status)}')
            listed = trials if show_all else [t for t in trials if t.status != FINISHED]
            print('\n' + format_trials(listed, 'Trials' if show_all else
                                       'Trials not finished (--all tables them, marked *)'))
    if cells:
        marked = ' (* some not finished)' if any(c.not_finished for c in cells) else ''
        out_path = plot(cells, Path(out_path or f'{sweep_name}_miou.png'),
                        f'{sweep_name}: val mIoU{marked}')
        MlflowClient(tracking_uri).log_artifact(parent.info.run_id, str(out_path))
        summary['plot'] = str(out_path)
        if not as_json:
            print(f'plot: {out_path}')
    return summary


def replay(sweep_dir: Path) -> None:
    """Delivers the journals of the trials in ``sweep_dir``; prints the ones left undelivered.

    Raises:
        InvalidSetting: ``sweep_dir`` holds no trials.
    """
    if not (Path(sweep_dir) / 'trials').is_dir():
        raise InvalidSetting(f'--replay {sweep_dir}: no trials/ folder there; name the sweep\'s '
                             'folder, <storage_path>/<name>')
    for trial_id, why in replay_journals(sweep_dir).items():
        print(f'{trial_id}: MLflow records still in its journal ({why})')


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description='Compare the trials of a sweep (from MLflow).')
    parser.add_argument('name', help='sweep name or MLflow experiment name')
    parser.add_argument('--tracking-uri', default=None,
                        help=f'MLflow tracking URI (default: sqlite:///<{DEFAULT_STORAGE_PATH}>'
                        '/mlflow.db, the default store of harness.sweep)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of the table')
    parser.add_argument('--out', type=Path, help='plot file (default: <sweep>_miou.png)')
    parser.add_argument('--all', action='store_true', dest='show_all',
                        help='also table the trials that are not finished (running, '
                        'interrupted, failed, stopped early) with their latest values, marked *')
    parser.add_argument('--replay', type=Path, metavar='SWEEP_DIR',
                        help="first send to MLflow what the sweep's trials kept in their "
                        'journals while the store did not answer (SWEEP_DIR: the sweep\'s '
                        'folder, <storage_path>/<name>)')
    args = parser.parse_args(argv)
    tracking_uri = args.tracking_uri or default_tracking_uri(DEFAULT_STORAGE_PATH)
    try:
        if args.out is not None:
            check_plot_file(args.out, '--out')
        check_tracking_uri(tracking_uri, create=False, key='--tracking-uri')
        if args.replay is not None:
            replay(args.replay)
        return report(args.name, tracking_uri, args.out, args.json, args.show_all)
    except (LookupError, InvalidSetting) as error:
        parser.exit(2, f'error: {error}\n')


if __name__ == '__main__':
    main()
