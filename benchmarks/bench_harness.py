"""Harness overhead: a sweep through Ray (harness.sweep) vs its trials run directly, in turn.

    python benchmarks/bench_harness.py                                  # the quickstart sweep
    python benchmarks/bench_harness.py experiments/quickstart.yaml --out /tmp/bench

1. ``python -m harness.sweep SWEEP --storage-path OUT/harness``: Ray start-up, Tune, one Ray Train
   run per trial, MLflow, the report; as many trials at once as the sweep allows.
2. then ``python -m harness.trial`` once per grid point with the same spec and overrides, as
   many at once as the sweep allows and with a Ray worker's thread count; the trials share a
   stage-1 folder as the sweep's do.

Prints both wall times (seconds), their ratio, Ray's start-up time as the driver reports it,
each trial's training time (``time/stage1_s`` + ``time/stage2_s``, Runner set-up included) and,
on Linux, the CPU time of the sweep's processes from ``/proc``: the Ray Train workers that run
the trials, the driver (Tune's loop, MLflow, the report) and Ray's own processes (GCS, raylet,
dashboard, log monitor, Tune's trial actors, Train controllers and their helper actors).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from harness.sweep_config import SweepConfig, grid_axes, grid_points, load_sweep

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ProcessCpu:
    """CPU seconds (user + system) of the processes that start while it samples, by kind.

    A background thread reads ``/proc/<pid>/stat`` every ``interval`` seconds; a process counts
    from its start, so the CPU a process uses after the last sample before it exits is missed
    (at most ``interval`` seconds each). Processes that ran before :meth:`start` are ignored.
    Without ``/proc`` (not Linux) it measures nothing and :meth:`seconds` is empty.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.driver_pid: Optional[int] = None
        self._ignored = set(self._pids())
        self._cpu: Dict[int, Tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def start(self, driver_pid: Optional[int] = None) -> None:
        self.driver_pid = driver_pid
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def seconds(self) -> Dict[str, float]:
        """CPU seconds per kind: ``trial workers``, ``driver``, ``Ray's own processes`` (a
        harness run) or ``direct trials`` (``python -m harness.trial`` processes)."""
        totals: Dict[str, float] = {}
        for kind, cpu in self._cpu.values():
            totals[kind] = totals.get(kind, 0.0) + cpu
        return totals

    @staticmethod
    def _pids() -> List[int]:
        proc = Path('/proc')
        return [int(name) for name in os.listdir(proc) if name.isdigit()] if proc.is_dir() else []

    def _kind(self, pid: int, command: str) -> Optional[str]:
        if pid == self.driver_pid:
            return 'driver'
        if command.startswith('ray::RayTrainWorker'):
            return 'trial workers'
        if ' -m harness.trial ' in command:
            return 'direct trials'
        if command.startswith(('ray::', 'ray-dashboard')) or '/site-packages/ray/' in command:
            return "Ray's own processes"
        return None

    def _sample_until_stopped(self) -> None:
        ticks = os.sysconf('SC_CLK_TCK')
        while True:
            for pid in set(self._pids()) - self._ignored:
                try:
                    command = Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ')
                    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
                except OSError:  # exited meanwhile
                    continue
                kind = self._kind(pid, command.decode(errors='replace'))
                if kind is not None:  # utime and stime, fields 14 and 15 of stat
                    self._cpu[pid] = (kind, (int(fields[11]) + int(fields[12])) / ticks)
            if self._stop.wait(self.interval):
                return


def run_harness(sweep_file: Path, out: Path) -> Tuple[float, str, Dict[str, float]]:
    """Wall seconds of the whole sweep command, its output and its processes' CPU seconds."""
    cpu = ProcessCpu()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, '-m', 'harness.sweep', str(sweep_file), '--storage-path', str(out)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu.start(process.pid)
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    cpu.stop()
    if process.returncode != 0:
        sys.exit(f'harness.sweep failed ({process.returncode}):\n{stdout[-3000:]}'
                 f'\n{stderr[-3000:]}')
    return seconds, stdout, cpu.seconds()


def run_direct(sweep: SweepConfig, out: Path) -> Tuple[float, Dict[str, float], List[Path]]:
    """Wall and CPU seconds of ``python -m harness.trial`` over the sweep's grid points.

    As the sweep runs them: in Tune's grid order (the alphabetically first key varies fastest),
    ``max_concurrent_trials`` at a time, each with the thread count Ray gives a worker of
    ``cpus_per_worker`` CPUs (``OMP_NUM_THREADS``, at least 1); they share one stage-1 folder
    (``OUT/trials/stage1``). Each trial works in a folder named by its settings
    (``OUT/trials/fraction=1_2-seed=0-threshold=0.3``): a finished one is read back, not run
    again, whichever other grid points the next run has. Returns the wall and CPU seconds and
    the trials' folders, in grid order.
    """
    axes = grid_axes(sweep)
    points = sorted(grid_points(sweep), key=lambda point: [
        axes[key].index(point[key]) for key in sorted(axes, reverse=True)])
    spec_file = out / 'spec.yaml'
    out.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(yaml.safe_dump(sweep.spec))
    environment = dict(os.environ,
                       OMP_NUM_THREADS=str(max(1, int(sweep.resources.cpus_per_worker))))
    concurrency = sweep.max_concurrent_trials or 1
    running: List[subprocess.Popen] = []
    cpu = ProcessCpu()
    cpu.start()
    started = time.perf_counter()
    work_dirs = [out / 'trials' / trial_folder_name({key: point[key] for key in axes})
                 for point in points]
    for overrides, work_dir in zip(points, work_dirs):
        while len(running) >= concurrency:
            running = [process for process in running if not _finished(process)]
            time.sleep(0.2)
        assignments = [f'--set={key}={json.dumps(value)}' for key, value in overrides.items()]
        running.append(subprocess.Popen(
            [sys.executable, '-m', 'harness.trial', str(spec_file), *assignments,
             '--work-dir', str(work_dir),
             '--stage1-cache', str(out / 'trials' / 'stage1')],
            cwd=PROJECT_ROOT, env=environment, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    for process in running:
        process.wait()
        _finished(process)
    seconds = time.perf_counter() - started
    cpu.stop()
    return seconds, cpu.seconds(), work_dirs


def trial_folder_name(axis_values: Dict[str, Any]) -> str:
    """A trial's grid-axis values as a folder name: ``{'threshold': 0.3, 'fraction': '1/2'}``
    -> ``'fraction=1_2-threshold=0.3'``."""
    return re.sub(r'[^A-Za-z0-9_.=-]', '_', '-'.join(f'{key}={value}' for key, value
                                                      in sorted(axis_values.items())))


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

    harness_s, output, harness_cpu = run_harness(sweep_file, args.out / 'harness')
    ray_start = re.search(r'Ray (?:started|joined at \S+) in ([\d.]+) s', output)
    direct_s, direct_cpu, _ = run_direct(load_sweep(sweep_file), args.out / 'direct')

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
    for label, wall_s, cpu in (('harness', harness_s, harness_cpu),
                               ('direct', direct_s, direct_cpu)):
        if cpu:
            print(f'CPU of the {label} run ({os.cpu_count()} CPUs x {wall_s:.0f} s = '
                  f'{os.cpu_count() * wall_s:.0f} CPU-s):')
        for kind, cpu_s in sorted(cpu.items(), key=lambda item: -item[1]):
            print(f'  {kind:26s}{cpu_s:8.1f} CPU-s  {cpu_s / wall_s:5.2f} cores on average')


if __name__ == '__main__':
    main()
