"""Ray Tune sweeps of EPS++ trials, each trial a Ray Train run.

    python -m harness.sweep experiments/quickstart.yaml                 # local Ray + dashboard
    python -m harness.sweep experiments/ssss_fractions.yaml --address auto   # a `ray start` cluster
    python -m harness.sweep experiments/quickstart.yaml --resume        # continue after a crash

The sweep file (see :mod:`harness.sweep_config`) is validated, every trial spec of its grid is
built and its stage keys and dataset are checked before Ray starts. Then a Ray Tune ``Tuner`` runs
:func:`tune_trial` per point of the search space; it fits a ``TorchTrainer`` whose workers run
:func:`train_func`: :func:`harness.trial.run_trial` inside Ray Train's process group (gloo on CPU,
NCCL on GPU), reporting each stage-2 validation to Tune and everything to MLflow.

Everything lives under ``<storage_path>/<name>/`` (shared storage on a multi-node cluster):

    <Tune's experiment state and trial folders>
    sweep.json          the sweep file as started and its MLflow parent run (for --resume)
    trials/<trial id>/  each trial's work dir: a restarted worker resumes from its checkpoints
    stage1/<hash>/      stage-1 runs, shared by the trials with the same stage-1 config
    train/<trial id>/   each trial's Ray Train run (its reported checkpoints)
"""
import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from harness.sweep_config import SweepConfig, SweepConfigError, check_trials, load_sweep

# The Tune trial only drives its TorchTrainer; the CPUs belong to the Train workers. A non-zero
# request keeps Tune from launching every trial at once.
TRAINABLE_CPUS = 0.01
TUNE_METRIC = 'val/mIoU'


def train_func(config: Dict[str, Any]) -> None:
    """One Ray Train worker: runs the trial in Ray Train's process group and reports.

    Every rank calls ``ray.train.report`` equally often (it is a barrier): after each stage-2
    validation and once with the final result. Stage-1 validations go to MLflow only: Tune checks
    every result for ``val/mIoU``. Rank 0 is the trial's only MLflow writer.
    """
    import ray.train

    from harness.tracking import TrialRun
    from harness.trial import TrialSpec, run_trial

    # Ray Train starts workers in a folder of its own; relative paths inside the MMEngine configs
    # (data_root) mean the folder the sweep was started from, as they do for harness.trial.
    os.chdir(config['working_dir'])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    # MMEngine (launcher='pytorch') reads these; the process group itself is Ray Train's.
    os.environ.update(LOCAL_RANK=str(context.get_local_rank()), RANK=str(rank),
                      WORLD_SIZE=str(context.get_world_size()))
    work_dir = Path(config['work_dir'])
    _record_worker(work_dir, rank)
    spec = TrialSpec.from_mapping(config['spec']).with_overrides(config['overrides'])
    run = None
    if rank == 0:
        run = TrialRun.open(config['tracking'], config['trial_id'], spec.short_id(),
                            config['overrides'], tags=dict(
                                task=spec.task, labelled_fraction=spec.labelled_fraction,
                                saliency_threshold=spec.saliency_threshold, seed=spec.seed,
                                work_dir=work_dir))

    def report(metrics: Dict[str, Any]) -> None:
        if run is not None:
            run.log_metrics(metrics)
        if TUNE_METRIC in metrics:
            _report_with_checkpoint(metrics, work_dir, rank)

    try:
        result = run_trial(spec, work_dir, stage1_cache=Path(config['stage1_cache']),
                           report=report)
        if run is not None:
            run.log_result(result, work_dir)
    except BaseException:
        if run is not None:
            run.finish('FAILED')
        raise
    _report_with_checkpoint(result, work_dir, rank)
    if run is not None:
        run.finish()


def _report_with_checkpoint(metrics: Dict[str, Any], work_dir: Path, rank: int) -> None:
    """``ray.train.report`` on every rank; rank 0 attaches a small checkpoint naming the work dir
    (the trial's real state: MMEngine checkpoints, result.json) and the stage-2 iteration."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, 'trial.json').write_text(json.dumps(
            {'work_dir': str(work_dir), 'val/iter': metrics.get('val/iter'),
             'finished': (work_dir / 'result.json').is_file()}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _record_worker(work_dir: Path, rank: int) -> None:
    """Appends this worker's rank, Ray node, host, pid and torch thread count to
    ``<work_dir>/workers.jsonl``."""
    import ray
    import torch

    work_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({'rank': rank, 'node_id': ray.get_runtime_context().get_node_id(),
                       'host': socket.gethostname(), 'pid': os.getpid(),
                       'torch_threads': torch.get_num_threads(),
                       'omp_num_threads': os.environ.get('OMP_NUM_THREADS'), 'time': time.time()})
    with open(work_dir / 'workers.jsonl', 'a') as handle:
        handle.write(line + '\n')


def tune_trial(config: Dict[str, Any], sweep: SweepConfig, tracking: Dict[str, str]) -> None:
    """Tune's function trainable: fits one TorchTrainer for the overrides ``config``.

    The Train run is named after the Tune trial id and its work dir is
    ``<experiment>/trials/<trial id>``: a restored sweep finds both again.
    """
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    resources = sweep.resources
    use_gpu = resources.gpus_per_worker > 0
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            'spec': sweep.spec, 'overrides': config, 'trial_id': trial_id,
            'work_dir': str(sweep.experiment_dir / 'trials' / trial_id),
            'stage1_cache': str(sweep.experiment_dir / 'stage1'), 'tracking': tracking,
            'working_dir': sweep.working_dir},
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers, use_gpu=use_gpu,
            resources_per_worker={'CPU': resources.cpus_per_worker,
                                  **({'GPU': resources.gpus_per_worker} if use_gpu else {})}),
        torch_config=TorchConfig(backend='nccl' if use_gpu else 'gloo'),
        run_config=RunConfig(
            name=trial_id, storage_path=str(sweep.experiment_dir / 'train'),
            failure_config=FailureConfig(max_failures=sweep.failure.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()]))
    trainer.fit()


def param_space(sweep: SweepConfig) -> Dict[str, Any]:
    """Tune's ``param_space``: a trial's config is its overrides (fixed, sampled, seed)."""
    from ray import tune

    domains: Dict[str, Callable[[List[Any]], Any]] = {
        'grid_search': tune.grid_search, 'choice': tune.choice,
        'uniform': lambda bounds: tune.uniform(*bounds),
        'loguniform': lambda bounds: tune.loguniform(*bounds)}
    space = dict(sweep.overrides)
    space.update({key: domains[distribution](values)
                  for key, (distribution, values) in sweep.search_space.items()})
    if sweep.seeds is not None:
        space['seed'] = tune.grid_search(sweep.seeds)
    return space


def scheduler(sweep: SweepConfig) -> Any:
    """FIFO, or ASHA on val/mIoU with time in stage-2 iterations (``val/iter``)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    settings = sweep.scheduler
    if settings.type == 'fifo':
        return FIFOScheduler()
    return ASHAScheduler(time_attr='val/iter', max_t=settings.max_t,
                         grace_period=settings.grace_period,
                         reduction_factor=settings.reduction_factor)


def start_ray(sweep: SweepConfig) -> None:
    """Starts a local Ray (with its dashboard) or joins ``ray.address``; prints how to reach it."""
    import ray

    started = time.perf_counter()
    settings = sweep.ray
    if settings.address:
        context = ray.init(address=settings.address)
    else:
        context = ray.init(include_dashboard=settings.include_dashboard,
                           dashboard_host=settings.dashboard_host,
                           dashboard_port=settings.dashboard_port)
    print(f'Ray {"joined at " + settings.address if settings.address else "started"} in '
          f'{time.perf_counter() - started:.1f} s; resources: {ray.cluster_resources()}')
    if context.dashboard_url:
        print(f'Ray dashboard: http://{context.dashboard_url}')
        if os.environ.get('RAY_AUTH_MODE') == 'token':
            token_file = os.environ.get('RAY_AUTH_TOKEN_PATH', '~/.ray/auth_token')
            print('  token authentication is on: open the URL and paste the token that '
                  f'`ray get-auth-token` prints (kept in {token_file}) into its login prompt; '
                  'API clients send the header "Authorization: Bearer <token>".')


def open_tracking(sweep: SweepConfig, resume: bool) -> Dict[str, str]:
    """The sweep's MLflow parent run: created for a new sweep, found again by ``--resume``.

    ``<experiment>/sweep.json`` keeps the sweep file as started and the parent run, so a resumed
    sweep logs into the same runs and refuses a sweep file that changed meanwhile.
    """
    from harness.tracking import TrackingTarget, set_sweep_status, start_sweep_run

    state_file = sweep.experiment_dir / 'sweep.json'
    if state_file.is_file():
        if not resume:
            raise SweepConfigError(
                f'sweep {sweep.name!r} already exists in {sweep.experiment_dir}: add --resume to '
                'continue it, or change name (or storage_path) to start another')
        state = json.loads(state_file.read_text())
        changed = sorted(key for key in set(state['sweep']) | set(sweep.raw)
                         if state['sweep'].get(key) != sweep.raw.get(key))
        if changed:
            raise SweepConfigError(
                f'{sweep.source} changed since sweep {sweep.name!r} started (keys {changed}); '
                f'resume with the file as it was (stored in {state_file}) or use another name')
        target = TrackingTarget(**state['tracking'])
        set_sweep_status(target, 'RUNNING')
        return target.to_dict()
    if resume:
        raise SweepConfigError(f'nothing to resume: no sweep {sweep.name!r} in '
                               f'{sweep.experiment_dir}')
    sweep.experiment_dir.mkdir(parents=True, exist_ok=True)
    target = start_sweep_run(sweep.tracking_uri, sweep.experiment_name, sweep.name,
                             params=sweep.raw, artifacts=[Path(sweep.source)])
    state_file.write_text(json.dumps({'sweep': sweep.raw, 'tracking': target.to_dict()},
                                     indent=2))
    return target.to_dict()


def max_concurrent_trials(sweep: SweepConfig) -> int:
    """The sweep's limit, or as many trials as the cluster's CPUs and GPUs hold at once."""
    import ray

    if sweep.max_concurrent_trials is not None:
        return sweep.max_concurrent_trials
    resources, available = sweep.resources, ray.cluster_resources()
    fits = math.floor(available.get('CPU', 0) / (resources.num_workers *
                                                 resources.cpus_per_worker + TRAINABLE_CPUS))
    if resources.gpus_per_worker > 0:
        fits = min(fits, math.floor(available.get('GPU', 0) /
                                    (resources.num_workers * resources.gpus_per_worker)))
    return max(fits, 1)


def run_sweep(sweep: SweepConfig, resume: bool = False) -> Any:
    """Runs (or resumes) the sweep; returns Tune's ``ResultGrid``."""
    from ray import tune

    from harness.tracking import TrackingTarget, set_sweep_status

    tracking = open_tracking(sweep, resume)
    start_ray(sweep)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, sweep=sweep, tracking=tracking),
        {'CPU': TRAINABLE_CPUS})
    if resume and tune.Tuner.can_restore(str(sweep.experiment_dir)):
        tuner = tune.Tuner.restore(str(sweep.experiment_dir), trainable=trainable,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep),
            tune_config=tune.TuneConfig(
                metric=TUNE_METRIC, mode='max', scheduler=scheduler(sweep),
                num_samples=sweep.num_samples,
                max_concurrent_trials=max_concurrent_trials(sweep),
                # A trial's driver process has imported Ray Train and torch (~10 s on 2 cores):
                # the next trial reuses it.
                reuse_actors=True),
            run_config=tune.RunConfig(name=sweep.name, storage_path=sweep.storage_path))
    results = tuner.fit()
    done, failed = results.num_terminated, results.num_errors
    print(f'{done} of {len(results)} trial(s) finished, {failed} failed.')
    if done + failed == len(results):
        set_sweep_status(TrackingTarget(**tracking), 'FAILED' if failed else 'FINISHED')
    if done < len(results):  # interrupted, or failed: --resume retries errored trials too
        print(f'Continue with: python -m harness.sweep {sweep.source} --resume '
              f'--storage-path {sweep.storage_path}')
    return results


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status (0: every trial finished)."""
    parser = argparse.ArgumentParser(description='Run a Ray Tune sweep of EPS++ trials.')
    parser.add_argument('sweep_file', help='sweep YAML (see harness/sweep_config.py)')
    parser.add_argument('--resume', action='store_true',
                        help='continue the interrupted sweep of this file; finished trials are '
                        'not run again')
    parser.add_argument('--address', help="Ray cluster to join ('auto', 'host:port'); "
                        "overrides ray.address of the file")
    parser.add_argument('--storage-path', help='overrides storage_path of the file')
    parser.add_argument('--check', action='store_true',
                        help='validate the sweep file and its trials, then exit')
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_file, storage_path=args.storage_path, address=args.address)
        points = check_trials(sweep)
        print(f'{sweep.source}: {points} grid point(s) x num_samples {sweep.num_samples}, '
              f'{sweep.resources.num_workers} worker(s) per trial: checked. Output: '
              f'{sweep.experiment_dir}; MLflow: {sweep.tracking_uri}')
        if args.check:
            return 0
        results = run_sweep(sweep, resume=args.resume)
    except SweepConfigError as error:
        parser.exit(2, f'error: {error}\n')
    from harness.report import report
    report(sweep.name, sweep.tracking_uri, sweep.experiment_dir / 'miou.png')
    return 0 if results.num_terminated == len(results) else 1


if __name__ == '__main__':
    sys.exit(main())
