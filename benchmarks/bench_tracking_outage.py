"""Training time lost to an MLflow outage, and the points kept.

    python benchmarks/bench_tracking_outage.py                       # 150-s outage, 400 iterations
    python benchmarks/bench_tracking_outage.py --outage-s 60 --stage2-iters 200 --out /tmp/bench

One trial (WSSS, the bundled configs, a small generated dataset) logged to a real ``mlflow server``
on loopback as ``harness.sweep``'s rank 0 logs it (:class:`harness.tracking.TrialRun`), run twice:
with the server up throughout, then with the server stopped right after stage 2's validation of
iteration ``--stop-after`` and started again ``--outage-s`` seconds later, while the trial trains
on. The server runs at the lowest CPU priority (``nice 19``) and is stopped and started from a
thread of its own: its own start and stop cost seconds of CPU, which a server on another machine
would not take from the trial. When the trial ends before the server is
back, its journal is replayed (``harness.report --replay``) once it is.

Prints per run: stage 2's wall time (seconds, the trial's ``time/stage2_s``) and the seconds from
the validation of iteration ``--stop-after`` to the last one (the part of stage 2 that the outage
falls in), the seconds the training thread spent inside ``TrialRun`` calls (open, log_metrics,
log_result) and in ``finish`` (which waits up to ``tracking.FINISH_WAIT_S`` for the journal's
delivery), the stage-2 validations while the server was down, and the val mIoU points: reported by
the trial, held by the run in MLflow, and duplicates among them. Each run trains its own stage 1,
so that both stage 2s start alike. Time lost to the outage: the outage run's seconds minus the
first run's (noise of a shared machine included).
"""
import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / 'tests'))  # the tests' loopback mlflow server

from mlflow_server import MlflowServer  # noqa: E402

from harness import tracking  # noqa: E402
from harness.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402
from harness.trial import TrialSpec, run_trial  # noqa: E402


SERVER_NICENESS = 19  # the server beside the trial takes only CPU the trial leaves


class TimedRun:
    """A :class:`tracking.TrialRun` whose calls from the training thread are timed: seconds per
    method name (``open``: the time to open it)."""

    def __init__(self, run: tracking.TrialRun, opened_s: float) -> None:
        self.run = run
        self.seconds: Dict[str, float] = {'open': opened_s}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.run, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return timed


def one_trial(data_root: Path, folder: Path, overrides: Dict[str, Any], outage_s: float,
              stop_after: int) -> Dict[str, Any]:
    """Runs the trial against a fresh server in ``folder``; an outage of ``outage_s`` seconds
    (0: none) starts after the stage-2 validation of iteration ``stop_after``."""
    server = MlflowServer(folder / 'server', niceness=SERVER_NICENESS).start()
    target = tracking.start_sweep_run(server.uri, 'outage', 'outage', params={},
                                      artifacts=[]).to_dict()
    work_dir = folder / 'sweep' / 'trials' / 't1'
    spec = TrialSpec(data_root=str(data_root), task='wsss').with_overrides(overrides)
    start = time.perf_counter()
    run = TimedRun(tracking.TrialRun.open(target, 't1', 'run', overrides, tags={},
                                          work_dir=work_dir), time.perf_counter() - start)
    reported: Dict[int, float] = {}  # val iteration -> when it was reported (monotonic s)
    while_down: List[int] = []
    down = threading.Event()  # from the stop's request until the restarted server answers

    def outage() -> None:
        """Stops the server, starts it again ``outage_s`` seconds after the stop was asked
        for; off the training thread, which only asks."""
        asked = time.monotonic()
        server.stop()
        time.sleep(max(outage_s - (time.monotonic() - asked), 0.0))
        server.start()
        down.clear()

    stopper = threading.Thread(target=outage, name='outage')

    def report(metrics: Dict[str, Any]) -> None:
        run.log_metrics(metrics)
        if 'val/mIoU' in metrics:
            iteration = int(metrics['val/iter'])
            reported[iteration] = time.monotonic()
            if down.is_set():
                while_down.append(iteration)
            if outage_s and iteration == stop_after:
                down.set()
                stopper.start()

    result = run_trial(spec, work_dir, stage1_cache=folder / 'stage1', report=report)
    run.log_result(result, work_dir)
    run.finish()
    if stopper.is_alive():
        stopper.join()
    with tracking.Journal(work_dir).delivering(wait=True):
        pass  # the trial's writer is done with it
    left = tracking.replay_journals(folder / 'sweep')
    from mlflow import MlflowClient
    [child] = MlflowClient(server.uri).search_runs(
        [target['experiment_id']], f"tags.`{tracking.PARENT_TAG}` = '{target['parent_run_id']}'")
    steps = [m.step for m in MlflowClient(server.uri).get_metric_history(child.info.run_id,
                                                                        'val/mIoU')]
    server.stop()
    return {'outage_s': outage_s, 'stage2_s': result['time/stage2_s'],
            'after_stop_s': reported[max(reported)] - reported[stop_after],
            'training_calls_s': sum(seconds for name, seconds in run.seconds.items()
                                    if name != 'finish'),
            'finish_s': run.seconds.get('finish', 0.0), 'while_down': while_down,
            'reported': len(reported), 'kept': len(set(steps) & set(reported)),
            'duplicates': len(steps) - len(set(steps)), 'left': left,
            'status': child.info.status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--outage-s', type=float, default=150.0)
    parser.add_argument('--stage2-iters', type=int, default=400)
    parser.add_argument('--val-interval', type=int, default=100)
    parser.add_argument('--stop-after', type=int, default=100,
                        help='the stage-2 validation (iteration) after which the server stops')
    parser.add_argument('--out', type=Path, default=None, help='scratch folder (default: temp)')
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix='bench-tracking-'))
    data_root = generate_dataset(out / 'shapes_voc', SyntheticConfig(num_train=24, num_val=12))
    iters = args.stage2_iters
    overrides = {'stage1.train_cfg.max_iters': 20, 'stage1.train_cfg.val_interval': 20,
                 'stage1.param_scheduler.0.end': 20, 'stage1.train_dataloader.batch_size': 4,
                 'stage2.train_cfg.max_iters': iters,
                 'stage2.train_cfg.val_interval': args.val_interval,
                 'stage2.param_scheduler.0.end': iters,
                 'stage2.default_hooks.checkpoint.interval': iters,
                 'stage2.train_dataloader.batch_size': 4}
    rows = [one_trial(data_root, out / f'run{index}', overrides, outage_s, args.stop_after)
            for index, outage_s in enumerate((0.0, args.outage_s))]
    print(f'\nOne WSSS trial, stage 2 of {iters} iterations (validation every '
          f'{args.val_interval}); outage after validation {args.stop_after}')
    print(f'| outage (s) | stage-2 wall (s) | validation {args.stop_after} to the end (s) '
          '| TrialRun calls while training (s) | finish (s) | validations while down '
          '| val points reported | kept in MLflow | duplicates | run status |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        print(f"| {row['outage_s']:.0f} | {row['stage2_s']:.1f} | {row['after_stop_s']:.1f} "
              f"| {row['training_calls_s']:.2f} | {row['finish_s']:.2f} "
              f"| {', '.join(map(str, row['while_down'])) or '-'} | {row['reported']} "
              f"| {row['kept']} | {row['duplicates']} | {row['status']} |")
    print(f"time lost to the outage: {rows[1]['after_stop_s'] - rows[0]['after_stop_s']:+.1f} s "
          f"from validation {args.stop_after} to the end, "
          f"{rows[1]['stage2_s'] - rows[0]['stage2_s']:+.1f} s over stage 2 (outage run minus "
          'the first)')
    for row in rows:
        for trial_id, why in row['left'].items():
            print(f'undelivered journal of {trial_id}: {why}')


if __name__ == '__main__':
    main()
