"""Compares the trials of a sweep from MLflow: a table and a plot of val mIoU.

    python -m harness.report quickstart                      # table, writes quickstart_miou.png
    python -m harness.report quickstart --json               # one object per trial, as JSON
    python -m harness.report ssss_fractions --tracking-uri http://mlflow:5000 --out fractions.png

The table has a row per labelled fraction (``wsss`` for weakly supervised trials) and a column per
saliency threshold; a cell is the val mIoU (percent) as mean +- standard deviation over the trials
of that cell (seeds, samples). A second table gives, per threshold, how well IRD's dropped region
matched the saliency errors in stage 1 (``ird/precision``, ``ird/recall``, the share on each
injected error kind; see :mod:`harness.eps.ird_diagnostics`). The plot draws val mIoU against the
labelled fraction, one line per threshold (against the threshold when the sweep has a single
fraction). The plot is also logged to the sweep's parent run.
"""
import argparse
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness import strict_json
from harness.sweep_config import DEFAULT_STORAGE_PATH
from harness.tracking import (PARENT_TAG, ROLE_TAG, STAGE1_RUN_TAG, default_tracking_uri,
                              replay_journals)
from harness.validation import InvalidSetting, check_tracking_uri

METRIC = 'val/mIoU'


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial as its child run holds it."""

    trial_id: str
    run_id: str
    task: str
    labelled_fraction: float
    saliency_threshold: float
    seed: int
    overrides: Dict[str, str]
    metrics: Dict[str, float]
    stage1_run: str = ''  # the stage-1 run folder the trial used ('' if not recorded)


@dataclass(frozen=True)
class Cell:
    """Val mIoU (percent) of the trials with one labelled fraction and saliency threshold."""

    labelled_fraction: float
    saliency_threshold: float
    mean: float
    std: float
    count: int


def load_trials(name: str, tracking_uri: str) -> Tuple[Any, List[TrialRecord]]:
    """The latest parent run of sweep / experiment ``name`` and its trials that have val mIoU.

    Raises:
        LookupError: naming the tracking URI and the sweeps it holds when none matches.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    experiment_ids = ([experiment.experiment_id] if experiment is not None else
                      [e.experiment_id for e in client.search_experiments()])
    role = f"tags.`{ROLE_TAG}` = 'sweep'"
    parents = client.search_runs(experiment_ids, f"{role} and tags.sweep_name = '{name}'",
                                 order_by=['attributes.start_time DESC'], max_results=1)
    if not parents and experiment is not None:
        parents = client.search_runs(experiment_ids, role,
                                     order_by=['attributes.start_time DESC'], max_results=1)
    if not parents:
        known = sorted({run.data.tags.get('sweep_name', '?') for run in client.search_runs(
            [e.experiment_id for e in client.search_experiments()], role)})
        raise LookupError(f'no sweep or MLflow experiment named {name!r} in {tracking_uri}; '
                          f'sweeps there: {known}')
    parent = parents[0]
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'", max_results=10000)
    trials = [TrialRecord(
        trial_id=run.data.tags.get('trial_id', ''), run_id=run.info.run_id,
        task=run.data.tags.get('task', ''),
        labelled_fraction=float(run.data.tags.get('labelled_fraction', 0.0)),
        saliency_threshold=float(run.data.tags.get('saliency_threshold', 'nan')),
        seed=int(run.data.tags.get('seed', 0)), overrides=dict(run.data.params),
        metrics=dict(run.data.metrics), stage1_run=run.data.tags.get(STAGE1_RUN_TAG, ''))
        for run in children if METRIC in run.data.metrics]
    return parent, sorted(trials, key=lambda t: (t.labelled_fraction, t.saliency_threshold,
                                                 t.seed, t.trial_id))


def comparison_cells(trials: Sequence[TrialRecord]) -> List[Cell]:
    """Mean and standard deviation (ddof 1; 0 for one trial) of val mIoU per (fraction, threshold)."""
    groups: Dict[Tuple[float, float], List[float]] = {}
    for trial in trials:
        key = (trial.labelled_fraction, trial.saliency_threshold)
        groups.setdefault(key, []).append(trial.metrics[METRIC])
    return [Cell(fraction, threshold, float(np.mean(values)),
                 float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values))
            for (fraction, threshold), values in sorted(groups.items())]


def format_table(cells: Sequence[Cell], title: str) -> str:
    """Rows: labelled fraction; columns: saliency threshold; cells: ``mean +- std (n)``."""
    fractions = sorted({c.labelled_fraction for c in cells})
    thresholds = sorted({c.saliency_threshold for c in cells})
    by_key = {(c.labelled_fraction, c.saliency_threshold): c for c in cells}
    header = ['fraction'] + [f'threshold {t:g}' for t in thresholds]
    rows = [[fraction_label(f)] + [
        f'{by_key[f, t].mean:.2f} +- {by_key[f, t].std:.2f} (n={by_key[f, t].count})'
        if (f, t) in by_key else '-' for t in thresholds] for f in fractions]
    return _render(title, header, rows)


def ird_rows(trials: Sequence[TrialRecord]) -> List[Dict[str, Any]]:
    """Per saliency threshold, IRD's dropped region against the saliency errors
    (``ird/precision``, ``ird/recall``, ``ird/share.<kind>``, percent) and ``pseudo/mIoU``, each
    the mean over the threshold's stage-1 runs, each counted once however many trials share it
    (``stage1_run``; trials that did not record it count once per seed). Thresholds without IRD
    figures are left out.
    """
    rows = []
    for threshold in sorted({t.saliency_threshold for t in trials}):
        runs = {t.stage1_run or f'seed {t.seed}': t.metrics for t in trials
                if t.saliency_threshold == threshold and 'ird/precision' in t.metrics}
        if not runs:
            continue
        keys = sorted({key for metrics in runs.values() for key in metrics
                       if key.startswith('ird/')} | {'pseudo/mIoU'})
        row: Dict[str, Any] = {'saliency_threshold': threshold, 'stage1_runs': len(runs)}
        for key in keys:
            values = [m[key] for m in runs.values() if m.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        rows.append(row)
    return rows


def format_ird_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Rows: threshold; columns: precision, recall, pseudo-mask mIoU, share of N per kind, recall
    per kind."""
    columns = ['ird/precision', 'ird/recall', 'pseudo/mIoU'] + sorted(
        {key for row in rows for key in row if key.startswith('ird/share.')}) + sorted(
        {key for row in rows for key in row if key.startswith('ird/recall.')})
    header = ['threshold', 'runs'] + [c.replace('ird/', '') for c in columns]
    body = [[f'{row["saliency_threshold"]:g}', str(row['stage1_runs'])] + [
        '-' if row.get(c) is None else f'{row[c]:.2f}' for c in columns] for row in rows]
    return _render('IRD: how much of the dropped region N is a saliency error (precision), how '
                   'much of the errors it drops (recall), and where N lies (share, %)', header, body)


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
        # Fractions as evenly spaced categories: 0 (WSSS) has no place on a log scale, and the
        # usual 1/16, 1/8, 1/4, 1/2 are evenly spaced on one anyway.
        position = {fraction: index for index, fraction in enumerate(fractions)}
        for threshold in thresholds:
            line = [c for c in cells if c.saliency_threshold == threshold]
            axis.errorbar([position[c.labelled_fraction] for c in line], [c.mean for c in line],
                          yerr=[c.std for c in line], marker='o', capsize=3,
                          label=f'threshold {threshold:g}')
        axis.set_xticks(range(len(fractions)), [fraction_label(f) for f in fractions])
        axis.set_xlabel('labelled fraction')
        axis.legend()
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
           as_json: bool = False) -> Dict[str, Any]:
    """Prints the table (or JSON), writes the plot and logs it to the parent run."""
    from mlflow import MlflowClient

    parent, trials = load_trials(name, tracking_uri)
    cells = comparison_cells(trials)
    sweep_name = parent.data.tags.get('sweep_name', name)
    ird = ird_rows(trials)
    summary = {'sweep': sweep_name, 'parent_run_id': parent.info.run_id,
               'table': [asdict(c) for c in cells], 'ird': ird,
               'trials': [asdict(t) for t in trials]}
    if as_json:
        print(strict_json.dumps(summary, indent=2))
    else:
        print(format_table(cells, f'{sweep_name}: val mIoU (%) mean +- std over seeds, '
                                  f'{len(trials)} trial(s), parent run {parent.info.run_id}'))
        if ird:
            print('\n' + format_ird_table(ird))
    if cells:
        out_path = plot(cells, Path(out_path or f'{sweep_name}_miou.png'),
                        f'{sweep_name}: val mIoU')
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
    parser.add_argument('--replay', type=Path, metavar='SWEEP_DIR',
                        help="first send to MLflow what the sweep's trials kept in their "
                        'journals while the store did not answer (SWEEP_DIR: the sweep\'s '
                        'folder, <storage_path>/<name>)')
    args = parser.parse_args(argv)
    tracking_uri = args.tracking_uri or default_tracking_uri(DEFAULT_STORAGE_PATH)
    try:
        check_tracking_uri(tracking_uri, create=False, key='--tracking-uri')
        if args.replay is not None:
            replay(args.replay)
        return report(args.name, tracking_uri, args.out, args.json)
    except (LookupError, InvalidSetting) as error:
        parser.exit(2, f'error: {error}\n')


if __name__ == '__main__':
    main()
