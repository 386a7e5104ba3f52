"""Harness overhead: a sweep through Ray (harness.sweep) vs its trials run directly, in turn.

    python benchmarks/bench_harness.py                                  # the quickstart sweep
    python benchmarks/bench_harness.py experiments/quickstart.yaml --out /tmp/bench

1. ``python -m harness.sweep SWEEP --storage-path OUT/harness``: Ray start-up, Tune, one Ray Train
   run per trial, MLflow, the report; as many trials at once as the sweep allows.
2. then ``python -m harness.trial`` once per grid point with the same spec and overrides, as
   many at once as the sweep allows and with a Ray worker's thread count; the trials share a
   stage-1 folder as the sweep's do.

Prints both wall times (seconds), their ratio, Ray's start-up time as the driver reports it and
each trial's training time (``time/stage1_s`` + ``time/stage2_s``, Runner set-up included).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

from harness.sweep_config import grid_points, load_sweep

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_harness(sweep_file: Path, out: Path) -> Tuple[float, str]:
    """Wall seconds of the whole sweep command and its output."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, '-m', 'harness.sweep', str(sweep_file), '--storage-path', str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f'harness.sweep failed ({completed.returncode}):\n{completed.stdout[-3000:]}'
                 f'\n{completed.stderr[-3000:]}')
    return seconds, completed.stdout


def run_direct(sweep_file: Path, out: Path) -> float:
    """Wall seconds of ``python -m harness.trial`` over the sweep's grid points.

    As the sweep runs them: in Tune's grid order (the alphabetically first key varies fastest),
    ``max_concurrent_trials`` at a time, each with the thread count Ray gives a worker of
    ``cpus_per_worker`` CPUs (``OMP_NUM_THREADS``, at least 1); they share one stage-1 folder.
    """
    sweep = load_sweep(sweep_file)
    keys = sorted(sweep.search_space) + (['seed'] if sweep.seeds is not None else [])
    points = sorted(grid_points(sweep), key=lambda point: [str(point[k]) for k in keys[::-1]])
    spec_file = out / 'spec.yaml'
    out.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(yaml.safe_dump(sweep.spec))
    environment = dict(os.environ,
                       OMP_NUM_THREADS=str(max(1, int(sweep.resources.cpus_per_worker))))
    concurrency = sweep.max_concurrent_trials or 1
    running: List[subprocess.Popen] = []
    started = time.perf_counter()
    for index, overrides in enumerate(points):
        while len(running) >= concurrency:
            running = [process for process in running if not _finished(process)]
            time.sleep(0.2)
        assignments = [f'--set={key}={json.dumps(value)}' for key, value in overrides.items()]
        running.append(subprocess.Popen(
            [sys.executable, '-m', 'harness.trial', str(spec_file), *assignments,
             '--work-dir', str(out / 'trials' / f'{index:02d}')],
            cwd=PROJECT_ROOT, env=environment, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    for process in running:
        process.wait()
        _finished(process)
    return time.perf_counter() - started


def _finished(process: subprocess.Popen) -> bool:
    """Whether ``process`` has ended; exits the benchmark if it failed."""
    if process.poll() is None:
        return False
    if process.returncode != 0:
        sys.exit(f'{" ".join(process.args)} failed ({process.returncode})')
    return True


def trial_seconds(trials_dir: Path) -> List[Dict[str, Any]]:
    """``time/stage1_s``, ``time/stage2_s`` (0 for a reused stage 1) of every finished trial."""
    rows = []
    for result_file in sorted(trials_dir.glob('*/result.json')):
        result = json.loads(result_file.read_text())
        rows.append({'trial': result_file.parent.name,
                     'fraction': result['labelled_fraction'],
                     'threshold': result['saliency_threshold'],
                     'stage1_s': result['time/stage1_s'], 'stage2_s': result['time/stage2_s'],
                     'val/mIoU': round(result['val/mIoU'], 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('sweep_file', nargs='?', type=Path,
                        default=PROJECT_ROOT / 'experiments' / 'quickstart.yaml')
    parser.add_argument('--out', type=Path, default=PROJECT_ROOT / 'outputs' / 'bench_harness',
                        help='scratch folder; must not hold an earlier run')
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f'{args.out} is not empty: finished trials would be reused; remove it')
    sweep_file = args.sweep_file.resolve()
    name = load_sweep(sweep_file).name

    harness_s, output = run_harness(sweep_file, args.out / 'harness')
    ray_start = re.search(r'Ray (?:started|joined at \S+) in ([\d.]+) s', output)
    direct_s = run_direct(sweep_file, args.out / 'direct')

    print(f'sweep {sweep_file.name}, {os.cpu_count()} CPUs')
    for label, trials_dir in (('harness', args.out / 'harness' / name / 'trials'),
                              ('direct', args.out / 'direct' / 'trials')):
        for row in trial_seconds(trials_dir):
            print(f'  {label:8s} {json.dumps(row)}')
    print(f'{"":28s}{"wall (s)":>10s}')
    print(f'{"harness (Ray Tune + Train)":28s}{harness_s:10.1f}'
          + (f'   of which Ray start-up {float(ray_start.group(1)):.1f} s' if ray_start else ''))
    print(f'{"direct (harness.trial)":28s}{direct_s:10.1f}')
    print(f'ratio harness / direct: {harness_s / direct_s:.2f} '
          f'(overhead {100 * (harness_s / direct_s - 1):+.0f}%)')


if __name__ == '__main__':
    main()
