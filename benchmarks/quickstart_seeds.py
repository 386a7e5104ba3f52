"""The quickstart's trials over several seeds: does val mIoU rise with the labelled fraction by
more than the spread between seeds, for every saliency threshold? And what IRD drops.

    python benchmarks/quickstart_seeds.py                          # experiments/quickstart.yaml
    python benchmarks/quickstart_seeds.py SWEEP --seeds 0 1 2 --out outputs/quickstart_seeds

Runs every grid point of the sweep file once per seed (the sweep's own ``seeds`` replaced) with
``python -m harness.trial``, as many at once as the sweep allows and with a Ray worker's thread
count (see ``bench_harness.run_direct``); trials of one seed and threshold share their stage-1
run, as in the sweep. Each trial's folder under ``--out`` is named by its settings, and a finished
trial is read back: an interrupted run resumes, and another seed list reuses the trials it shares.
The tables hold this run's trials only. Prints:

1. val mIoU (%) per labelled fraction (rows) and threshold (columns), mean +- std over seeds, and
   for each threshold whether every step up in fraction is larger than the seeds' spread (the
   larger std of the two fractions);
2. per threshold, over seeds: pseudo-mask mIoU (train split), the val mIoU of the lowest
   fraction (WSSS), IRD's precision and recall of the saliency errors, its recall of each
   injected error kind and the share of the dropped region on each.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bench_harness import run_direct

from harness.report import TrialRecord, comparison_cells, fraction_label
from harness.sweep_config import load_sweep
from harness.validation import InvalidSetting, check_folder_argument

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IRD_COLUMNS = ('pseudo/mIoU', 'val/mIoU', 'ird/precision', 'ird/recall',
               'ird/recall.missing_class', 'ird/recall.missing_object',
               'ird/recall.false_coverage', 'ird/share.missing_class', 'ird/share.missing_object',
               'ird/share.false_coverage', 'ird/share.other')


def mean_std(values: Sequence[Optional[float]]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.2f} +- {spread:.2f}'


def miou_table(results: List[Dict]) -> List[str]:
    """Markdown rows: fraction x threshold, and the rising-by-more-than-spread verdicts."""
    cells = {(c.labelled_fraction, c.saliency_threshold): c for c in comparison_cells([
        TrialRecord(trial_id='', run_id='', task='', labelled_fraction=r['labelled_fraction'],
                    saliency_threshold=r['saliency_threshold'], seed=r['seed'], overrides={},
                    metrics=r) for r in results])}
    fractions = sorted({f for f, _ in cells})
    thresholds = sorted({t for _, t in cells})
    lines = ['| labelled fraction | ' + ' | '.join(f'threshold {t:g}' for t in thresholds) + ' |',
             '|---|' + '---:|' * len(thresholds)]
    for fraction in fractions:
        lines.append(f'| {fraction_label(fraction)} | ' + ' | '.join(
            f'{cells[fraction, t].mean:.2f} +- {cells[fraction, t].std:.2f} '
            f'(n={cells[fraction, t].count})' for t in thresholds) + ' |')
    lines.append('')
    for threshold in thresholds if len(fractions) > 1 else []:
        steps = [(fraction_label(low), fraction_label(high),
                  cells[high, threshold].mean - cells[low, threshold].mean,
                  max(cells[low, threshold].std, cells[high, threshold].std))
                 for low, high in zip(fractions, fractions[1:])]
        verdict = all(rise > spread for *_, rise, spread in steps)
        lines.append(f'threshold {threshold:g}: ' + '; '.join(
            f'{low} -> {high}: {rise:+.2f} (spread {spread:.2f})'
            for low, high, rise, spread in steps)
            + f' => {"rises by more than the spread" if verdict else "NOT above the spread"}')
    return lines


def ird_table(results: List[Dict]) -> List[str]:
    """Markdown rows: per threshold, the stage-1 figures over seeds (one per stage-1 run) and the
    val mIoU of its lowest fraction (WSSS when the sweep has fraction 0)."""
    lines = ['| threshold | ' + ' | '.join(IRD_COLUMNS) + ' |',
             '|---|' + '---:|' * len(IRD_COLUMNS)]
    lowest = min(r['labelled_fraction'] for r in results)
    for threshold in sorted({r['saliency_threshold'] for r in results}):
        runs = {r['seed']: r for r in results if r['saliency_threshold'] == threshold
                and r['labelled_fraction'] == lowest}
        lines.append(f'| {threshold:g} | ' + ' | '.join(
            mean_std([run.get(key) for run in runs.values()]) for key in IRD_COLUMNS) + ' |')
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('sweep_file', nargs='?', type=Path,
                        default=PROJECT_ROOT / 'experiments' / 'quickstart.yaml')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--out', type=Path, default=PROJECT_ROOT / 'outputs' / 'quickstart_seeds')
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_file.resolve()).model_copy(update={'seeds': args.seeds})
        check_folder_argument(args.out, '--out')
    except InvalidSetting as error:
        parser.exit(2, f'error: {error}\n')
    seconds, _, work_dirs = run_direct(sweep, args.out)
    results = [json.loads((work_dir / 'result.json').read_text()) for work_dir in work_dirs]
    print(f'{args.sweep_file.name}: {len(results)} trials (seeds {args.seeds}) in {seconds:.0f} s')
    print('\nval mIoU (%), mean +- std over seeds:\n')
    print('\n'.join(miou_table(results)))
    print('\nstage 1 per threshold, mean +- std over seeds (percent):\n')
    print('\n'.join(ird_table(results)))


if __name__ == '__main__':
    sys.exit(main())
