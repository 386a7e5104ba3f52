"""Pseudo-mask and val mIoU of CAM-only, EPS and EPS++ (IRD), and SSSS mIoU per labelled fraction.

Runs real trials (``harness.trial.run_trial``) on the bundled dataset and prints two tables:

    python benchmarks/compare_methods.py [--out outputs/compare_methods] [--seeds 0 1]

Trials are kept under ``--out`` (a finished one is read back, not re-run), and stage-1 runs are
shared between the SSSS trials, so an interrupted run resumes where it stopped.
"""
import argparse
import statistics
from pathlib import Path
from typing import Dict, List, Sequence

from harness.trial import TrialSpec, run_trial

STAGE1_CONFIGS = {
    'CAM-only': 'mm_configs/eps/cam_r18-tiny_1xb16-600i_shapes-64x64.py',
    'EPS': 'mm_configs/eps/eps_r18-tiny_1xb16-600i_shapes-64x64.py',
    'EPS++ (IRD)': 'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py',
}
FRACTIONS = ('1/8', '1/4', '1/2', '1')


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}'


def run(out: Path, spec: TrialSpec) -> Dict:
    return run_trial(spec, out / 'trials' / spec.short_id(), stage1_cache=out / 'stage1')


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='outputs/compare_methods', type=Path)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    args = parser.parse_args(argv)

    print('| stage-1 method | pseudo-mask mIoU (train) | pseudo-mask mIoU (val) | WSSS val mIoU |')
    print('|---|---|---|---|')
    for method, config in STAGE1_CONFIGS.items():
        results = [run(args.out, TrialSpec(stage1_config=config, task='wsss', seed=seed))
                   for seed in args.seeds]
        print(f'| {method} | ' + ' | '.join(
            mean_std([r[key] for r in results]) for key in ('pseudo/mIoU', 'stage1/mIoU',
                                                             'val/mIoU')) + ' |', flush=True)

    print('\n| SSSS labelled fraction (EPS++ pseudo-masks for the rest) | val mIoU |')
    print('|---|---|')
    for fraction in FRACTIONS:
        results = [run(args.out, TrialSpec(task='ssss', labelled_fraction=fraction, seed=seed))
                   for seed in args.seeds]
        print(f'| {fraction} | {mean_std([r["val/mIoU"] for r in results])} |', flush=True)


if __name__ == '__main__':
    main()
