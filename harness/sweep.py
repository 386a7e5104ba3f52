"""Ray Tune sweeps of EPS++ trials, each trial a Ray Train run (docs/sweeps.md).

    python -m harness.sweep experiments/quickstart.yaml                 # local Ray + dashboard
    python -m harness.sweep experiments/ssss_fractions.yaml --address auto   # a `ray start` cluster
    python -m harness.sweep experiments/quickstart.yaml --resume        # continue after a crash

The sweep file (:mod:`harness.sweep_config`) and every trial of its grid are checked before
anything is written; then a Tuner runs :func:`tune_trial` per point, whose ``TorchTrainer``
workers run :func:`train_func` (:func:`harness.trial.run_trial` in Ray Train's process group).
Everything lives under ``<storage_path>/<name>/``: ``sweep.json`` (the file as started and its
MLflow parent run), ``trials/<trial id>/`` (work dirs and ``worker-<rank>.log``), ``stage1/<hash>/``
(shared stage-1 runs), ``train/<trial id>/`` (Ray Train runs) and Tune's state.
"""
import argparse
import contextlib
import json
import logging
import math
import os
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from harness.sweep_config import (TRAINABLE_CPUS, SweepConfig, SweepConfigError, check_resources,
                                  check_grid, grid_axes, load_sweep)
from harness.validation import InvalidSetting, check_tracking_uri

TUNE_METRIC = 'val/mIoU'
STATUS_EVERY_S = 60
RAY_CONNECT_TIMEOUT_S = 5.0
HTTP2_SETTINGS_FRAME = 4  # the frame type an HTTP/2 server opens a connection with
FINAL_RESULT_KEY = 'time/stage2_s'  # only the last report of a trial (run_trial's result) has it
# A restarted trial's new rank 0 waits this long for the old one's lock (a worker Ray is still
# ending) before the trial fails as "in use".
TRIAL_LOCK_WAIT_S = 60.0
INTERRUPTED_EXIT_STATUS = 128 + signal.SIGINT  # as a shell reports a command ended by Ctrl-C
ORPHANED_GROUPS_EVERY_S = 10.0  # how often a running trial looks for lost controllers' groups


def train_func(config: Dict[str, Any]) -> None:
    """One Ray Train worker: runs the trial in Ray Train's process group and reports.

    Every rank calls ``ray.train.report`` equally often (it is a barrier): after each stage-2
    validation and once with the final result. Stage-1 validations go to MLflow only: Tune checks
    every result for ``val/mIoU``. Rank 0 is the trial's only MLflow writer.
    """
    import ray.train

    from harness.tracking import TrialRun
    from harness.trial import TrialSpec, labelled_fraction_of, run_trial

    # Ray Train starts workers in a folder of its own; relative paths inside the MMEngine configs
    # (data_root) mean the folder the sweep was started from, as they do for harness.trial.
    os.chdir(config['working_dir'])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    work_dir = Path(config['work_dir'])
    if not config['verbose']:
        _send_output_to(worker_log(work_dir, rank))
    # MMEngine (launcher='pytorch') reads these; the process group itself is Ray Train's.
    os.environ.update(LOCAL_RANK=str(context.get_local_rank()), RANK=str(rank),
                      WORLD_SIZE=str(context.get_world_size()))
    _record_worker(work_dir, rank)
    spec = TrialSpec.from_mapping(config['spec']).with_overrides(config['overrides'])
    run = None
    if rank == 0:
        run = TrialRun.open(config['tracking'], config['trial_id'], spec.short_id(),
                            config['overrides'], tags=dict(
                                task=spec.task, labelled_fraction=labelled_fraction_of(spec),
                                **({'split_file': spec.split_file} if spec.split_file else {}),
                                saliency_threshold=spec.saliency_threshold, seed=spec.seed,
                                work_dir=work_dir), work_dir=work_dir)

    def report(metrics: Dict[str, Any]) -> None:
        if run is not None:
            run.log_metrics(metrics)
        if TUNE_METRIC in metrics:
            ray.train.report(metrics)

    try:
        result = run_trial(spec, work_dir, stage1_cache=Path(config['stage1_cache']),
                           report=report, lock_wait_s=TRIAL_LOCK_WAIT_S)
        if run is not None:
            # report() has logged every validation: the result's val/ values would be second
            # points at the last validation's step.
            run.log_result({key: value for key, value in result.items()
                            if not key.startswith('val/')}, work_dir)
            run.log_final_record(result, work_dir / 'result.json')
    except BaseException:
        if run is not None:
            run.finish('FAILED')
        raise
    ray.train.report(result)
    if run is not None:
        run.finish()


def worker_log(work_dir: Path, rank: int) -> Path:
    """Where a trial's worker of ``rank`` writes its output: ``<work_dir>/worker-<rank>.log``."""
    return Path(work_dir) / f'worker-{rank}.log'


def _send_output_to(path: Path) -> None:
    """Points this process's stdout and stderr (file descriptors 1 and 2, so that MMEngine's
    logger, warnings, C++ messages and tracebacks all follow) at ``path``, appending."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def _record_worker(work_dir: Path, rank: int) -> None:
    """Appends this worker's rank, Ray node, host, pid, torch thread count, process-group backend
    and CUDA device to ``<work_dir>/workers.jsonl``."""
    import ray
    import torch

    import torch.distributed as dist

    work_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({'rank': rank, 'node_id': ray.get_runtime_context().get_node_id(),
                       'host': socket.gethostname(), 'pid': os.getpid(),
                       'torch_threads': torch.get_num_threads(),
                       'omp_num_threads': os.environ.get('OMP_NUM_THREADS'),
                       'backend': dist.get_backend() if dist.is_initialized() else None,
                       'cuda_device': (torch.cuda.current_device() if torch.cuda.is_available()
                                       else None),
                       'cuda_visible_devices': os.environ.get('CUDA_VISIBLE_DEVICES'),
                       'time': time.time()})
    with open(work_dir / 'workers.jsonl', 'a') as handle:
        handle.write(line + '\n')


def tune_trial(config: Dict[str, Any], sweep: SweepConfig, tracking: Dict[str, str],
               verbose: bool) -> None:
    """Tune's function trainable: fits one TorchTrainer for the overrides ``config``.

    The Train run is named after the Tune trial id and its work dir is
    ``<experiment>/trials/<trial id>``: a restored sweep finds both again.
    """
    import ray.tune
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    scaling_config, torch_config = worker_group(sweep)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            'spec': sweep.spec, 'overrides': config, 'trial_id': trial_id,
            'work_dir': str(trial_dir(sweep, trial_id)),
            'stage1_cache': str(sweep.experiment_dir / 'stage1'), 'tracking': tracking,
            'working_dir': sweep.working_dir, 'verbose': verbose},
        scaling_config=scaling_config,
        torch_config=torch_config,
        run_config=RunConfig(
            name=trial_id, storage_path=str(sweep.experiment_dir / 'train'),
            failure_config=FailureConfig(max_failures=sweep.failure.max_failures),
            callbacks=[TuneReportCallback()]))
    with orphaned_placement_groups_removed():
        trainer.fit()


@contextlib.contextmanager
def orphaned_placement_groups_removed(
        every_s: float = ORPHANED_GROUPS_EVERY_S) -> Iterator[None]:
    """Runs :func:`remove_orphaned_placement_groups` on entry, then every ``every_s`` seconds in
    a thread of its own until the block ends.

    Ray knows that a node is lost only once its health checks have failed, seconds after the
    loss. A trial restarted in that time still finds its lost controller alive; when the node is
    then marked dead, Ray moves that controller's group to a node that is left, where it can take
    the CPUs the restarted trial's workers wait for. Looking again while the trial runs frees them.
    """
    remove_orphaned_placement_groups()
    stop = threading.Event()

    def remove_until_stopped() -> None:
        while not stop.wait(every_s):
            try:
                remove_orphaned_placement_groups()
            except Exception as error:  # the GCS out of reach for a moment: look again later
                print(f'could not look for orphaned placement groups: {error}', file=sys.stderr)

    watcher = threading.Thread(target=remove_until_stopped, name='orphaned-placement-groups',
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def remove_orphaned_placement_groups() -> List[str]:
    """Removes the placement groups of this sweep whose creator actor is dead; returns their ids.

    A trial's Ray Train controller reserves its workers' CPUs and GPUs in a placement group that
    it removes when it ends. A controller lost with its node leaves the group behind (Ray Train's
    cleaner actor ran on that node too): Ray moves its bundles to the nodes that are left, where
    they hold resources until the sweep's driver exits, and the restarted trial may wait for
    them forever. Groups made by the driver (Tune's, one per trial) have no creator actor and are
    kept. Ray's public ``placement_group_table()`` leaves out the creator and whether it is dead,
    so the GCS table is read through Ray's private state accessor (tests/test_node_loss.py fails
    if a Ray upgrade changes it).
    """
    import ray
    from ray._private.state import state
    from ray.core.generated.gcs_pb2 import PlacementGroupTableData
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job, no_actor = ray.get_runtime_context().get_job_id(), ray.ActorID.nil().binary()
    removed = []
    for record in state._connect_and_get_accessor().get_placement_group_table():
        group = PlacementGroupTableData.FromString(record)
        if (group.creator_job_id.hex() == job and group.creator_actor_id != no_actor
                and group.creator_actor_dead and not group.is_detached
                and group.state != PlacementGroupTableData.REMOVED):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(group.placement_group_id)))
            removed.append(group.placement_group_id.hex())
    return removed


def worker_group(sweep: SweepConfig) -> Tuple[Any, Any]:
    """A trial's Ray Train ``ScalingConfig`` and ``TorchConfig``: ``num_workers`` workers of
    ``cpus_per_worker`` CPUs and, with ``gpus_per_worker > 0``, that many GPUs each (a fraction
    shares one GPU between trials) and NCCL; gloo on CPUs."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig

    resources = sweep.resources
    use_gpu = resources.gpus_per_worker > 0
    scaling = ScalingConfig(
        num_workers=resources.num_workers, use_gpu=use_gpu,
        resources_per_worker={'CPU': resources.cpus_per_worker,
                              **({'GPU': resources.gpus_per_worker} if use_gpu else {})})
    return scaling, TorchConfig(backend='nccl' if use_gpu else 'gloo')


def trial_dir(sweep: SweepConfig, trial_id: str) -> Path:
    """A trial's work dir: ``<storage_path>/<name>/trials/<trial id>``."""
    return sweep.experiment_dir / 'trials' / trial_id


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


class TrialEvents:
    """A Tune ``Callback`` that prints one line per trial event: started, each stage-2 validation
    with its mIoU, finished, failed (with the trial's log).

    Built by :func:`trial_events` (so that importing this module does not import Ray). Tune keeps
    it with the experiment's state, so a restored sweep prints the same lines.
    """

    def __init__(self, sweep: SweepConfig) -> None:
        self.sweep = sweep
        self.axes = list(grid_axes(sweep))

    def on_trial_start(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        point = ', '.join(f'{key}={trial.config.get(key)}' for key in self.axes)
        print(f'[{trial.trial_id}] started: {point or "(no search axes)"}', flush=True)

    def on_trial_result(self, iteration: int, trials: List[Any], trial: Any, result: Dict,
                        **info: Any) -> None:
        if TUNE_METRIC in result and FINAL_RESULT_KEY not in result:
            print(f'[{trial.trial_id}] stage-2 validation at iteration {result.get("val/iter")}: '
                  f'val/mIoU {result[TUNE_METRIC]:.2f}', flush=True)

    def on_trial_complete(self, iteration: int, trials: List[Any], trial: Any,
                          **info: Any) -> None:
        last = trial.last_result or {}
        miou = last.get(TUNE_METRIC)
        shown = f'{miou:.2f}' if isinstance(miou, (int, float)) else 'n/a'
        event = ('finished' if FINAL_RESULT_KEY in last else
                 f'stopped early by the scheduler at stage-2 iteration {last.get("val/iter")}')
        print(f'[{trial.trial_id}] {event}: val/mIoU {shown}; work dir '
              f'{trial_dir(self.sweep, trial.trial_id)}', flush=True)

    def on_trial_error(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        # Tune writes error.txt into the trial's local folder first (its error_file) and copies
        # it into the experiment folder later.
        summary = failure_summary(self.sweep, trial.trial_id, trial.error_file)
        print(f'[{trial.trial_id}] FAILED: {summary}', flush=True)


def trial_events(sweep: SweepConfig) -> Any:
    """A :class:`TrialEvents` that is a ``ray.tune.Callback``."""
    from ray.tune import Callback

    return type('TrialEventsCallback', (TrialEvents, Callback), {})(sweep)


def failure_summary(sweep: SweepConfig, trial_id: str, error_file: Optional[str] = None) -> str:
    """The exception of a failed trial (last line of Tune's ``error.txt``: ``error_file``, or the
    copy in the trial's folder of the experiment) and its worker log."""
    path = Path(error_file) if error_file else sweep.experiment_dir / trial_id / 'error.txt'
    lines = path.read_text().strip().splitlines() if path.is_file() else []
    error = lines[-1] if lines else 'the trial raised an error'
    return f'{error}; log: {worker_log(trial_dir(sweep, trial_id), 0)}'


def status_table(sweep: SweepConfig) -> Any:
    """Tune's status table (trials, their search-space values, val mIoU and stage-2 iteration),
    printed once a minute and at the end; trial events are :class:`TrialEvents`' lines."""
    from ray.tune import CLIReporter

    axes = list(grid_axes(sweep))
    return CLIReporter(parameter_columns=axes or None,
                       metric_columns={TUNE_METRIC: 'val mIoU', 'val/iter': 'stage-2 iter'},
                       max_report_frequency=STATUS_EVERY_S, print_intermediate_tables=True)


def trial_folder_name(trial: Any) -> str:
    """Tune's folder of a trial is named by its id, as its work dir under ``trials/`` is."""
    return trial.trial_id


def start_ray(sweep: SweepConfig, verbose: bool) -> None:
    """Starts a local Ray (with its dashboard) or joins ``ray.address``; prints how to reach it.

    A busy dashboard port or a cluster that does not answer within
    :data:`RAY_CONNECT_TIMEOUT_S` seconds is a :class:`SweepConfigError`, not a hang.
    """
    import ray

    started = time.perf_counter()
    settings = sweep.ray
    try:
        if settings.address:
            _check_reachable(sweep)
            context = ray.init(address=settings.address, log_to_driver=verbose)
        else:
            if settings.include_dashboard:
                _check_port_free(sweep)
            context = ray.init(include_dashboard=settings.include_dashboard,
                               dashboard_host=settings.dashboard_host,
                               dashboard_port=settings.dashboard_port, log_to_driver=verbose)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise SweepConfigError(f'{sweep.source}: Ray did not start'
                               f'{" at " + settings.address if settings.address else ""}: '
                               f'{error}') from error
    print(f'Ray {"joined at " + settings.address if settings.address else "started"} in '
          f'{time.perf_counter() - started:.1f} s; resources: {ray.cluster_resources()}')
    if context.dashboard_url:
        print(f'Ray dashboard: http://{context.dashboard_url}')
        if os.environ.get('RAY_AUTH_MODE') == 'token':
            token_file = os.environ.get('RAY_AUTH_TOKEN_PATH', '~/.ray/auth_token')
            print('  token authentication is on: open the URL and paste the token that '
                  f'`ray get-auth-token` prints (kept in {token_file}) into its login prompt; '
                  'API clients send the header "Authorization: Bearer <token>".')


def _check_port_free(sweep: SweepConfig) -> None:
    """The local dashboard's port must be free (Ray would fail with a bare ``ValueError``)."""
    host, port = sweep.ray.dashboard_host, sweep.ray.dashboard_port
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise SweepConfigError(
                f'{sweep.source}: ray.dashboard_port {port}: {host}:{port} is in use '
                f'({error.strerror}), probably by another Ray: stop it (ray stop), join it with '
                '--address auto, or set ray.dashboard_port to a free port') from error


def _check_reachable(sweep: SweepConfig) -> None:
    """The cluster at ``ray.address`` answers on its port (``ray.init`` would retry for long).

    ``auto`` and ``host:port`` are resolved as ``ray.init`` resolves them, by Ray's private
    ``canonicalize_bootstrap_address_or_die`` (no public function does it; tests/test_bad_input.py
    and tests/test_validation.py fail if a Ray upgrade changes it).
    """
    from ray._private.services import canonicalize_bootstrap_address_or_die

    address = sweep.ray.address
    try:
        target = address.split('://', 1)[1] if '://' in address else \
            canonicalize_bootstrap_address_or_die(address)
        host, port = target.rsplit(':', 1)
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S) as probe:
            answer = _first_http2_frame(probe)
    except (ConnectionError, OSError, ValueError) as error:
        raise SweepConfigError(
            f'{sweep.source}: ray.address {address!r}: no Ray cluster answered within '
            f'{RAY_CONNECT_TIMEOUT_S:g} s ({error}). Start one (ray start --head on the head '
            'node) or give its address as host:port') from error
    if answer is None:
        raise SweepConfigError(
            f'{sweep.source}: ray.address {address!r}: something that is not Ray listens there '
            '(it did not answer as the gRPC server of a Ray head node does). Give the address '
            'that `ray start --head` printed (host:port, default port 6379), or auto')


def _first_http2_frame(connection: socket.socket) -> Optional[bytes]:
    """Opens an HTTP/2 connection on ``connection`` and returns the server's first frame header
    (9 bytes) if it is the SETTINGS frame every HTTP/2 server (Ray's gRPC servers among them)
    sends first; None for any other answer."""
    client_preface = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    connection.sendall(client_preface)
    header = b''
    while len(header) < 9:
        chunk = connection.recv(9 - len(header))
        if not chunk:
            return None
        header += chunk
    return header if header[3] == HTTP2_SETTINGS_FRAME else None


def cluster_nodes() -> List[Dict[str, float]]:
    """``CPU`` and ``GPU`` of every live node of the Ray cluster this process is connected to."""
    import ray

    return [{name: float(node['Resources'].get(name, 0.0)) for name in ('CPU', 'GPU')}
            for node in ray.nodes() if node.get('Alive')]


def local_machine() -> List[Dict[str, float]]:
    """This machine as the one node of a local Ray: its CPUs and CUDA GPUs."""
    import torch

    return [{'CPU': float(os.cpu_count() or 1), 'GPU': float(torch.cuda.device_count())}]


def check_sweep_folder(sweep: SweepConfig, resume: bool) -> None:
    """A new sweep needs a new folder; ``--resume`` needs the sweep file it started with."""
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
    elif resume:
        raise SweepConfigError(f'nothing to resume: no sweep {sweep.name!r} in '
                               f'{sweep.experiment_dir}')


def open_tracking(sweep: SweepConfig, resume: bool) -> Dict[str, str]:
    """The sweep's MLflow parent run: created for a new sweep, found again by ``--resume``.

    ``<experiment>/sweep.json`` keeps the sweep file as started and the parent run, so a resumed
    sweep logs into the same runs (:func:`check_sweep_folder` has compared the file).
    """
    from harness.tracking import TrackingTarget, set_sweep_status, start_sweep_run

    state_file = sweep.experiment_dir / 'sweep.json'
    if resume:
        target = TrackingTarget(**json.loads(state_file.read_text())['tracking'])
        set_sweep_status(target, 'RUNNING')
        return target.to_dict()
    sweep.experiment_dir.mkdir(parents=True, exist_ok=True)
    target = start_sweep_run(sweep.tracking_uri, sweep.experiment_name, sweep.name,
                             params=sweep.raw, artifacts=[Path(sweep.source)])
    state_file.write_text(json.dumps({'sweep': sweep.raw, 'tracking': target.to_dict()},
                                     indent=2))
    return target.to_dict()


def deliver_journals(sweep: SweepConfig) -> None:
    """Sends to MLflow what trials kept in their journals while the store did not answer;
    prints a line per trial whose journal is still undelivered."""
    from harness.tracking import replay_journals

    left = replay_journals(sweep.experiment_dir)
    for trial_id, why in left.items():
        print(f'  MLflow records of {trial_id} kept in trials/{trial_id}/ ({why})')
    if left:
        print(f'`python -m harness.report {sweep.name} --replay {sweep.experiment_dir}` or '
              '--resume sends them once the store answers.')


def max_concurrent_trials(sweep: SweepConfig, cluster_resources: Dict[str, float]) -> int:
    """The sweep's limit, or as many trials as the cluster's CPUs and GPUs hold at once (at
    least one); ``cluster_resources`` is Ray's ``ray.cluster_resources()``."""
    if sweep.max_concurrent_trials is not None:
        return sweep.max_concurrent_trials
    resources, available = sweep.resources, cluster_resources
    fits = math.floor(available.get('CPU', 0) / (resources.num_workers *
                                                 resources.cpus_per_worker + TRAINABLE_CPUS))
    if resources.gpus_per_worker > 0:
        fits = min(fits, math.floor(available.get('GPU', 0) /
                                    (resources.num_workers * resources.gpus_per_worker)))
    return max(fits, 1)


def run_sweep(sweep: SweepConfig, resume: bool = False,
              verbose: bool = False) -> Dict[str, str]:
    """Runs (or resumes) the sweep on the Ray that :func:`start_ray` reached; returns each
    trial's status (:func:`trial_statuses`).

    When it ends, finished or not (Ctrl-C), every trial is marked: its child run ``FINISHED``
    (the trial did that), ``FAILED``, or ``KILLED`` (interrupted, or stopped early); the parent
    run ``FINISHED`` only when every trial is, ``KILLED`` when some were interrupted.
    """
    import ray
    from ray import tune

    from harness.tracking import TrackingTarget, end_trial_runs, set_sweep_status

    # Tune's classic console (a status table a minute, see status_table) instead of its newer one,
    # which prints a table of every trial's config and results besides.
    os.environ['RAY_AIR_NEW_OUTPUT'] = '0'
    tracking = open_tracking(sweep, resume)
    if resume:
        deliver_journals(sweep)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, sweep=sweep, tracking=tracking, verbose=verbose),
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
                max_concurrent_trials=max_concurrent_trials(sweep, ray.cluster_resources()),
                # A trial's driver process has imported Ray Train and torch (seconds): the next
                # trial reuses it.
                reuse_actors=True, trial_dirname_creator=trial_folder_name),
            run_config=tune.RunConfig(name=sweep.name, storage_path=sweep.storage_path,
                                      # A node lost with a trial's Tune actor and Train
                                      # controller fails the trial in Tune, not in Train: Tune
                                      # starts it again, and it resumes from its work dir.
                                      failure_config=tune.FailureConfig(
                                          max_failures=sweep.failure.max_failures),
                                      callbacks=[trial_events(sweep)],
                                      progress_reporter=status_table(sweep),
                                      verbose=2 if verbose else 1))
    logging.getLogger('ray.tune.tune').addFilter(_without_restore_hint)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        # A second Ctrl-C: Tune had given SIGINT back to Python, and its last saved state may be
        # older than the trials; they end with the driver all the same.
        print('Stopped without waiting for Tune to save the sweep: trials it had not saved as '
              'finished count as interrupted.')
    deliver_journals(sweep)
    statuses = trial_statuses(sweep)
    target = TrackingTarget(**tracking)
    # No worker is left now: the child runs still RUNNING are of trials that did not finish.
    ended = end_trial_runs(target, {trial_id: status for trial_id, (status, _) in
                                    statuses.items()}, default='INTERRUPTED')
    statuses.update({trial_id: ('INTERRUPTED', {}) for trial_id in ended
                     if trial_id not in statuses})
    print_outcome(sweep, statuses)
    ended_as = {status for status, _ in statuses.values()}
    set_sweep_status(target, 'KILLED' if 'INTERRUPTED' in ended_as else
                     'FAILED' if 'FAILED' in ended_as else 'FINISHED')
    return {trial_id: status for trial_id, (status, _) in statuses.items()}


def _without_restore_hint(record: logging.LogRecord) -> bool:
    """A logging filter: drops Tune's "Resume experiment with: Tuner.restore(...)" hint after
    an interrupted sweep (the sweep prints its own ``--resume`` command)."""
    return 'Tuner.restore(' not in record.getMessage()


def trial_statuses(sweep: SweepConfig) -> Dict[str, Tuple[str, Dict[str, Any]]]:
    """Each trial's status and last result in the state Ray Tune saved (the state ``--resume``
    continues from): ``FINISHED``, ``FAILED``, ``STOPPED`` (early, by the scheduler) or
    ``INTERRUPTED``; empty when Tune saved no state. Not ``Tuner.fit``'s results: after Ctrl-C,
    Tune marks the trials it stopped ``TERMINATED`` like finished ones."""
    from ray.tune import ExperimentAnalysis

    # It also reads every trial's results, and warns for each trial that has none (not started).
    analysis_log = logging.getLogger(ExperimentAnalysis.__module__)
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        trials = ExperimentAnalysis(str(sweep.experiment_dir)).trials
    except ValueError:  # no experiment_state-*.json: stopped before Tune saved anything
        return {}
    finally:
        analysis_log.setLevel(level)
    return {trial.trial_id: (_status_of(trial.status, trial.last_result or {}),
                             trial.last_result or {}) for trial in trials}


def _status_of(tune_status: str, last_result: Dict[str, Any]) -> str:
    if tune_status == 'ERROR':
        return 'FAILED'
    if tune_status == 'TERMINATED':
        return 'FINISHED' if FINAL_RESULT_KEY in last_result else 'STOPPED'
    return 'INTERRUPTED'  # PENDING, RUNNING, PAUSED


def print_outcome(sweep: SweepConfig, statuses: Dict[str, Tuple[str, Dict[str, Any]]]) -> None:
    """Prints how many trials finished, failed, stopped early or were interrupted, a line per
    trial with its status, and what to do next (the exact ``--resume`` command)."""
    count = {status: sum(1 for s, _ in statuses.values() if s == status)
             for status in ('FINISHED', 'FAILED', 'STOPPED', 'INTERRUPTED')}
    print(f'{count["FINISHED"]} of {len(statuses)} trial(s) finished, {count["FAILED"]} failed'
          + (f', {count["STOPPED"]} stopped early by the scheduler' if count['STOPPED'] else '')
          + (f', {count["INTERRUPTED"]} interrupted' if count['INTERRUPTED'] else '') + '.')
    for trial_id, (status, last) in sorted(statuses.items()):
        print(f'  {trial_id}: {status}: {_trial_detail(sweep, trial_id, status, last)}')
    again = resume_command(sweep)
    if count['INTERRUPTED']:
        interrupted = [t for t, (s, _) in sorted(statuses.items()) if s == 'INTERRUPTED']
        print(f'Interrupted: {", ".join(interrupted)} did not finish; their figures are not '
              f'results. `{again}` continues them from their last checkpoints'
              f'{" and runs the failed ones again" if count["FAILED"] else ""}; finished trials '
              'are kept.')
    elif count['FAILED']:
        print(f'Fix what made them fail (their logs say), then `{again}` runs the failed trials '
              'again; finished trials are kept.')


def resume_command(sweep: SweepConfig) -> str:
    """The command line that continues ``sweep`` (its file, storage path and Ray address)."""
    words = ['python', '-m', 'harness.sweep', sweep.source, '--resume',
             '--storage-path', sweep.storage_path]
    words += ['--address', sweep.ray.address] if sweep.ray.address else []
    return shlex.join(words)


def _trial_detail(sweep: SweepConfig, trial_id: str, status: str, last: Dict[str, Any]) -> str:
    work_dir = trial_dir(sweep, trial_id)
    if status == 'FAILED':
        return failure_summary(sweep, trial_id)
    shown = (f'val/mIoU {last[TUNE_METRIC]:.2f}' if isinstance(last.get(TUNE_METRIC), (int, float))
             else 'no val/mIoU')
    if status == 'FINISHED':
        return f'{shown}; work dir {work_dir}'
    at = f' at stage-2 iteration {last["val/iter"]}' if 'val/iter' in last else ''
    if status == 'STOPPED':
        return f'{shown}{at} (not final); work dir {work_dir}'
    if not work_dir.is_dir():
        return 'not started'
    stage = 'stage 2' if (work_dir / 'stage2_config.py').is_file() else 'stage 1'
    last_validation = f'; last validation{at}: {shown} (not final)' if at else ''
    return f'in {stage}{last_validation}; work dir {work_dir}'


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status: 0 every trial finished (or was stopped early by
    the scheduler), 1 some failed, 2 the sweep could not start (one line names the setting),
    130 (:data:`INTERRUPTED_EXIT_STATUS`) it was interrupted (Ctrl-C) before every trial ended:
    ``--resume`` continues it."""
    parser = argparse.ArgumentParser(description='Run a Ray Tune sweep of EPS++ trials.')
    parser.add_argument('sweep_file', help='sweep YAML (see harness/sweep_config.py)')
    parser.add_argument('--resume', action='store_true',
                        help='continue the interrupted sweep of this file; finished trials are '
                        'not run again')
    parser.add_argument('--address', help="Ray cluster to join ('auto', 'host:port'); "
                        "overrides ray.address of the file")
    parser.add_argument('--storage-path', help='overrides storage_path of the file')
    parser.add_argument('--check', action='store_true',
                        help='validate the sweep file, its trials and the resources, then exit')
    parser.add_argument('--verbose', action='store_true',
                        help="also print every worker's output (MMEngine logs) on the console; "
                        'it always goes to trials/<trial id>/worker-<rank>.log')
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_file, storage_path=args.storage_path, address=args.address)
        points = check_grid(sweep, make_bundled=not args.check)
        if sweep.mlflow.tracking_uri is not None:
            check_tracking_uri(sweep.mlflow.tracking_uri, create=True)
        check_sweep_folder(sweep, args.resume)
        if not sweep.ray.address:
            check_resources(sweep, local_machine(), 'this machine')
        if args.check:
            if sweep.ray.address:
                start_ray(sweep, verbose=False)
                check_resources(sweep, cluster_nodes(), f'the cluster at {sweep.ray.address}')
            print(f'{sweep.source}: {points} grid point(s) x num_samples {sweep.num_samples}, '
                  f'{sweep.resources.num_workers} worker(s) per trial: checked. Output: '
                  f'{sweep.experiment_dir}; MLflow: {sweep.tracking_uri}')
            return 0
        start_ray(sweep, args.verbose)
        check_resources(sweep, cluster_nodes(), f'the Ray cluster ({sweep.ray.address or "local"})')
        print(f'{sweep.source}: {points} grid point(s) x num_samples {sweep.num_samples}; output: '
              f'{sweep.experiment_dir}; MLflow: {sweep.tracking_uri}; worker logs: '
              f'{sweep.experiment_dir / "trials"}/<trial id>/worker-<rank>.log')
        statuses = run_sweep(sweep, resume=args.resume, verbose=args.verbose)
    except InvalidSetting as error:
        parser.exit(2, f'error: {error}\n')
    from harness.report import report
    report(sweep.name, sweep.tracking_uri, sweep.experiment_dir / 'miou.png')
    if 'INTERRUPTED' in statuses.values():
        return INTERRUPTED_EXIT_STATUS
    return 1 if 'FAILED' in statuses.values() else 0


if __name__ == '__main__':
    sys.exit(main())
