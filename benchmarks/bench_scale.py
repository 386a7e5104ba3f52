"""Scale: a sweep of many short trials, and the report on a store of many runs.

    python benchmarks/bench_scale.py                          # 64 trials, 8 at a time; 1,000 runs
    python benchmarks/bench_scale.py --trials 16 --runs 200 --out /tmp/bench_scale
    python benchmarks/bench_scale.py --skip-sweep             # the report's part only

1. Sweep: ``python -m harness.sweep`` of ``--trials`` trials (the bundled configs on a
   12-image copy of the bundled dataset, ``--iters`` iterations per stage, a stage-2 validation
   at half of them and at the end) joined with ``--address`` to a Ray of ``--cpus`` CPUs of its
   own (a ``ray start`` head with its own temp dir and ports), ``--concurrent`` trials at once.
   The grid is the labelled fraction (0, 1/8, 1/4, 1/2) x stage-2 learning rates, so that every
   trial shares one stage-1 run. Measured: the driver process alone (Tune's loop, the MLflow
   parent run, the report): its CPU seconds and peak resident memory (``wait4``'s rusage of the
   driver and the children it waited for), in total and per trial. Checked: every trial
   finished, its MLflow child run holds val/mIoU at both validations, and ``harness.report``'s
   table (``--json``) counts every trial once with the mean of its cell's child runs.
2. Report: a store of ``--runs`` trial runs under one parent run, written by
   :mod:`harness.tracking`'s own functions (``start_sweep_run``, ``TrialRun.open``,
   ``log_metrics``, ``finish``) with a trial's metrics (per-class IoU at 4 validations, the final
   pseudo-mask, stage-1, IRD and time figures) and tags; then ``python -m harness.report`` on it,
   timed from the command's start to its exit (goal: under 10 s for 1,000 runs).

Prints a table of the figures.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from statistics import mean
from typing import Any, Dict, List, Tuple

import numpy as np
import yaml

from harness.data.synthetic import CLASSES, SyntheticConfig, generate_dataset
from harness.eps.ird_diagnostics import ERROR_KIND_VALUES
from harness.tracking import STAGE1_RUN_TAG, TrialRun, start_sweep_run

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / 'tests'))  # the local Ray cluster of the tests
from ray_nodes import RayNodes  # noqa: E402

FRACTIONS: List[Any] = [0, '1/8', '1/4', '1/2']  # as a sweep file writes them
REPORT_VALIDATIONS = (100, 200, 300, 400)


def sweep_file(out: Path, data_root: Path, trials: int, concurrent: int, iters: int,
               cpus: int) -> Path:
    """The sweep of ``trials`` trials: fractions x ``trials / 4`` stage-2 learning rates."""
    rates = [float(f'{rate:.3g}') for rate in np.geomspace(1e-3, 3e-2, trials // len(FRACTIONS))]
    stages = {}
    for stage, val_interval in (('stage1', iters), ('stage2', max(iters // 2, 1))):
        stages.update({f'{stage}.train_cfg.max_iters': iters,
                       f'{stage}.train_cfg.val_interval': val_interval,
                       f'{stage}.param_scheduler.0.end': iters,
                       f'{stage}.default_hooks.checkpoint.interval': iters})
    path = out / 'scale.yaml'
    path.write_text(yaml.safe_dump({
        'name': 'scale', 'data_root': str(data_root), 'task': 'ssss',
        'search_space': {'fraction': {'grid_search': FRACTIONS},
                         'stage2.optim_wrapper.optimizer.lr': {'grid_search': rates}},
        'overrides': stages,
        'resources': {'num_workers': 1, 'gpus_per_worker': 0,
                      'cpus_per_worker': round(cpus / concurrent - 0.01, 3)},
        'max_concurrent_trials': concurrent, 'failure': {'max_failures': 1},
        'storage_path': str(out / 'sweeps')}, sort_keys=False))
    return path


def run_sweep(out: Path, trials: int, concurrent: int, iters: int, cpus: int) -> Dict[str, Any]:
    """Runs the sweep against a Ray of its own; returns the driver's figures and the checks."""
    data_root = out / 'data' / 'shapes_voc'
    if not data_root.is_dir():
        generate_dataset(data_root, SyntheticConfig(num_train=12, num_val=6, image_size=64))
    path = sweep_file(out, data_root, trials, concurrent, iters, cpus)
    nodes = RayNodes(dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), os.environ.get('PYTHONPATH')]))))
    try:
        address = nodes.start_head(num_cpus=cpus)
        started = time.perf_counter()
        with open(out / 'sweep.log', 'w') as log:
            driver = subprocess.Popen(
                [sys.executable, '-m', 'harness.sweep', str(path), '--address', address],
                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=nodes.env)
            _, status, usage = os.wait4(driver.pid, 0)
            driver.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
    finally:
        nodes.stop()
    output = (out / 'sweep.log').read_text()
    if driver.returncode != 0 or f'{trials} of {trials} trial(s) finished' not in output:
        raise SystemExit(f'the sweep did not finish every trial (exit {driver.returncode}); '
                         f'see {out / "sweep.log"}:\n{output[-3000:]}')
    cpu = usage.ru_utime + usage.ru_stime
    peak_mib = usage.ru_maxrss / 1024  # kilobytes on Linux
    return {'trials': trials, 'wall_s': wall, 'driver_cpu_s': cpu, 'driver_peak_mib': peak_mib,
            **check_sweep(out / 'sweeps', trials, validations=[max(iters // 2, 1), iters])}


def check_sweep(storage: Path, trials: int, validations: List[int]) -> Dict[str, Any]:
    """Every trial has a FINISHED child run with val/mIoU at ``validations``; the report counts
    each once, and each cell's mean is the mean of its child runs."""
    from mlflow import MlflowClient

    from harness.tracking import default_tracking_uri

    uri = default_tracking_uri(str(storage))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name('scale')
    children = [run for run in client.search_runs([experiment.experiment_id],
                                                  "tags.`eps_harness.role` = 'trial'",
                                                  max_results=10000)]
    problems = []
    if len(children) != trials:
        problems.append(f'{len(children)} child runs, not {trials}')
    by_cell: Dict[Any, List[float]] = {}
    for run in children:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, 'val/mIoU'))
        if run.info.status != 'FINISHED' or steps[:len(validations)] != validations:
            problems.append(f'run {run.info.run_id}: {run.info.status}, val/mIoU at {steps}')
        key = (float(run.data.tags['labelled_fraction']), float(run.data.tags['saliency_threshold']))
        by_cell.setdefault(key, []).append(run.data.metrics['val/mIoU'])
    result = subprocess.run([sys.executable, '-m', 'harness.report', 'scale', '--tracking-uri',
                             uri, '--json', '--out', str(storage / 'scale_miou.png')],
                            capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    if len(report['trials']) != trials or sum(c['count'] for c in report['table']) != trials:
        problems.append(f"the report counts {len(report['trials'])} trials")
    for cell in report['table']:
        values = by_cell.get((cell['labelled_fraction'], cell['saliency_threshold']), [])
        if cell['count'] != len(values) or abs(cell['mean'] - mean(values)) > 1e-9:
            problems.append(f'report cell {cell} against the child runs {values}')
    if problems:
        raise SystemExit('the sweep\'s runs or report are wrong:\n' + '\n'.join(problems))
    return {'child_runs': len(children), 'report_cells': len(report['table'])}


def build_store(tracking_uri: str, runs: int) -> str:
    """Writes a sweep of ``runs`` finished trials with :mod:`harness.tracking`, as the trials of a
    sweep write them; returns the sweep's name."""
    name = f'report_{runs}'
    target = start_sweep_run(tracking_uri, name, name, params={'name': name}, artifacts=[])
    rng = np.random.default_rng(0)
    for index in range(runs):
        fraction, threshold, seed = FRACTIONS[index % 4], (0.3, 0.5)[index // 4 % 2], index // 8
        run = TrialRun.open(
            target.to_dict(), f'trial_{index:05d}', f'ssss-f{fraction}-t{threshold}-s{seed}',
            {'fraction': fraction, 'threshold': threshold, 'seed': seed},
            tags=dict(task='ssss', labelled_fraction=float(Fraction(fraction)),
                      saliency_threshold=threshold, seed=seed, work_dir=f'/trials/{index}'))
        for step in REPORT_VALIDATIONS:
            run.log_metrics({'val/iter': step, 'val/mIoU': float(rng.uniform(20, 60)),
                             'val/aAcc': float(rng.uniform(60, 90)),
                             **{f'val/IoU.{c}': float(rng.uniform(0, 100)) for c in CLASSES}})
        run.log_metrics({
            'pseudo/mIoU': float(rng.uniform(30, 60)), 'stage1/mIoU': float(rng.uniform(30, 60)),
            'ird/precision': float(rng.uniform(0, 100)), 'ird/recall': float(rng.uniform(0, 100)),
            **{f'pseudo/IoU.{c}': float(rng.uniform(0, 100)) for c in CLASSES},
            **{f'ird/share.{k}': float(rng.uniform(0, 100)) for k in ERROR_KIND_VALUES},
            **{f'ird/recall.{k}': float(rng.uniform(0, 100)) for k in ERROR_KIND_VALUES},
            'time/stage1_s': float(rng.uniform(50, 100)),
            'time/stage2_s': float(rng.uniform(50, 100))})
        run.set_tags({STAGE1_RUN_TAG: f'stage1-t{threshold}-s{seed}'})
        run.finish()
    return name


def time_report(out: Path, runs: int) -> Dict[str, Any]:
    """Builds (or reuses) the store of ``runs`` runs in ``out``; times ``harness.report``."""
    store = out / f'store_{runs}'
    uri = f'sqlite:///{store.resolve()}/mlflow.db'
    built = time.perf_counter()
    if not (store / 'complete').is_file():
        store.mkdir(parents=True, exist_ok=True)
        (store / 'mlflow.db').unlink(missing_ok=True)
        name = build_store(uri, runs)
        (store / 'complete').write_text(name)
    name = (store / 'complete').read_text()
    built = time.perf_counter() - built
    started = time.perf_counter()
    result = subprocess.run([sys.executable, '-m', 'harness.report', name, '--tracking-uri', uri,
                             '--json', '--out', str(store / 'miou.png')],
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f'harness.report failed:\n{result.stderr[-3000:]}')
    counted = len(json.loads(result.stdout)['trials'])
    if counted != runs:
        raise SystemExit(f'harness.report counted {counted} of the {runs} runs')
    return {'runs': runs, 'store_build_s': built, 'report_s': seconds}


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--trials', type=int, default=64, help='trials of the sweep (a multiple '
                        f'of {len(FRACTIONS)}, the fractions)')
    parser.add_argument('--concurrent', type=int, default=8, help='trials at once')
    parser.add_argument('--iters', type=int, default=20, help='iterations per stage')
    parser.add_argument('--cpus', type=int, default=2, help="CPUs of the sweep's Ray")
    parser.add_argument('--runs', type=int, default=1000, help='trial runs in the report store')
    parser.add_argument('--skip-sweep', action='store_true', help='only time the report')
    parser.add_argument('--out', type=Path, default=Path('/tmp/bench_scale'),
                        help='folder for the dataset, sweeps and stores (a store is reused)')
    args = parser.parse_args(argv)
    if args.trials < len(FRACTIONS) or args.trials % len(FRACTIONS):
        parser.error(f'--trials {args.trials}: a positive multiple of {len(FRACTIONS)}')
    for flag in ('concurrent', 'iters', 'cpus', 'runs'):
        if getattr(args, flag) < 1:
            parser.error(f'--{flag} {getattr(args, flag)}: an integer >= 1')
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_sweep:
        if (out / 'sweeps' / 'scale').exists():
            parser.error(f'--out {out} holds a sweep already: remove {out / "sweeps"} or choose '
                         'another folder')
        sweep = run_sweep(out, args.trials, args.concurrent, args.iters, args.cpus)
        trials = sweep['trials']
        print_table([
            (f'sweep: {trials} trials, {args.concurrent} at once, {args.iters} iterations per '
             'stage', f'{sweep["wall_s"]:.0f} s wall'),
            ('  driver CPU', f'{sweep["driver_cpu_s"]:.1f} s ({sweep["driver_cpu_s"] / trials:.2f}'
                             ' s per trial)'),
            ('  driver peak memory', f'{sweep["driver_peak_mib"]:.0f} MiB '
                                     f'({sweep["driver_peak_mib"] / trials:.1f} MiB per trial)'),
            ('  child runs / report cells', f'{sweep["child_runs"]} / {sweep["report_cells"]} '
                                            '(checked)')])
    report = time_report(out, args.runs)
    print_table([(f'report: store of {report["runs"]} trial runs',
                  f'built in {report["store_build_s"]:.0f} s'),
                 ('  python -m harness.report --json',
                  f'{report["report_s"]:.1f} s (goal < 10 s)')])


def print_table(rows: List[Tuple[str, str]]) -> None:
    """Prints (what, figure) rows as a table, at once (the sweep's before the report is
    timed)."""
    width = max(len(name) for name, _ in rows)
    print(f'{"what".ljust(width)} | figure\n{"-" * width}-+-{"-" * 30}', flush=True)
    for name, value in rows:
        print(f'{name.ljust(width)} | {value}', flush=True)


if __name__ == '__main__':
    main()
