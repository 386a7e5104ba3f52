"""One EPS++ experiment end to end: stage 1 -> pseudo-masks -> stage 2 -> val metrics.

    python -m harness.trial                                   # bundled SSSS, fraction 1/4, IRD
    python -m harness.trial my_trial.yaml --set saliency_threshold=0.4   # TrialSpec keys
    python -m harness.trial --set fraction=1/8 --work-dir outputs/my_trial

Every setting is checked (:mod:`harness.validation`) before anything trains; the last line
printed is the result as strict JSON. Inside a process group someone else started (Ray Train),
every rank calls :func:`run_trial` with the same arguments.
"""
import argparse
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.dist import barrier, broadcast_object_list, get_rank, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import BaseVisBackend

from harness import strict_json
from harness.data import splits, synthetic
from harness.data.fingerprint import dataset_fingerprint
from harness.eps.checkpoints import (DamagedCheckpointError, DiskFullError, RandomStateHook,
                                     resumable_checkpoint, trusted_checkpoint_loading,
                                     write_whole)
from harness.overrides import parse_assignments
from harness.spec import SHORT_NAMES, STAGES, TASKS, TrialSpec, canonical_keys, digest_of
from harness.stage_configs import labelled_split, replace_sync_bn, stage1_config, stage2_config
from harness.validation import (InvalidSetting, check_amp, check_folder_argument, check_trials,
                                message_of, read_yaml, sync_bn_warning)

__all__ = ['TrialSpec', 'TASKS', 'SHORT_NAMES', 'run_trial', 'load_spec', 'main']
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SPEC_FILE = 'spec.json'
TRIAL_LOCK = 'trial.lock'
LOCK_HOLDER_READS = 10  # 0.1 s apart
Report = Callable[[Dict[str, Any]], None]


class WorkDirInUse(InvalidSetting):
    """A trial folder that holds a trial of another spec (reusing it would mix two trials)."""


class WorkDirLocked(WorkDirInUse):
    """A trial folder that another live process holds (two writers would mix their files)."""


@VISBACKENDS.register_module()
class TrialMetricsBackend(BaseVisBackend):
    """The trial's one metrics writer: what a stage publishes through MMEngine's visualizer
    (rank 0) goes to :attr:`sink` as ``{<key>: value, '<stage>/iter': step}`` and is kept in
    :attr:`latest` (the last value of each key).

    Validation metrics (``val/<metric>``, from ``LoggerHook`` with ``log_with_hierarchy``) are
    renamed ``<stage>/<metric>``; ``pseudo/*`` (``PAMRHook``), ``ird/*``
    (``IRDDiagnosticsHook``) and any other ``<group>/<metric>`` pass as they are; training logs
    (``train/*``) and timings do not. NaN ("no value", e.g. the IoU of a class absent from the
    split) becomes None.
    """

    def __init__(self, save_dir: str, stage: str) -> None:
        super().__init__(save_dir)
        self.stage = stage
        self.sink: Optional[Report] = None
        self.latest: Dict[str, Any] = {}

    @property
    def experiment(self) -> 'TrialMetricsBackend':
        return self

    def _init_env(self) -> None:
        pass

    def add_scalars(self, scalar_dict: Dict[str, Any], step: int = 0,
                    file_path: Optional[str] = None, **kwargs: Any) -> None:
        metrics = {}
        for key, value in scalar_dict.items():
            group, _, name = key.partition('/')
            if (name and group not in ('train', 'test') and name not in ('time', 'data_time')
                    and strict_json.is_number(value)):
                metrics[f'{self.stage}/{name}' if group == 'val' else key] = float(value)
        metrics = strict_json.jsonable(metrics)
        self.latest.update(metrics)
        if metrics and self.sink is not None:
            self.sink({**metrics, f'{self.stage}/iter': step})


class _ValidationReport(Hook):
    """The other ranks' side of a :class:`TrialMetricsBackend` (rank 0): each validation's
    metrics go to the sink on every rank, as a collective report (Ray Train's) needs."""

    priority = 'VERY_LOW'

    def __init__(self, backend: TrialMetricsBackend) -> None:
        self.backend = backend

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self.backend.add_scalars({f'val/{key}': value for key, value in (metrics or {}).items()},
                                 step=runner.iter)


def run_trial(spec: TrialSpec, work_dir: Path, stage1_cache: Optional[Path] = None,
              report: Optional[Report] = None, lock_wait_s: float = 0.0) -> Dict[str, Any]:
    """Runs stage 1 (or reuses it), writes the split, runs stage 2; returns the metrics.

    Args:
        spec: What to run (paths resolved against the current directory).
        work_dir: The trial's own folder; it records the spec (``spec.json``). A finished trial
            (``result.json``) of the same spec is not run again; an interrupted one resumes from
            its last MMEngine checkpoint; a folder holding a trial of another spec is refused.
        stage1_cache: Folder of finished stage-1 runs, keyed by a hash of the resolved stage-1
            config and of its data (:func:`stage1_run_dir`), shared by the trials of a sweep
            (default: ``<work_dir>/stage1``).
        report: Called with what a stage publishes through MMEngine's visualizer (validation
            metrics, ``pseudo/*``, ``ird/*``; see :class:`TrialMetricsBackend`) on rank 0, and
            with each validation's metrics on every rank (Ray Train's report is collective).
        lock_wait_s: How long to wait for another live process that holds ``work_dir`` (its
            ``trial.lock``, held by rank 0 for the trial's life) before refusing.

    On a machine without CUDA, synchronised batch norm (SyncBN) of either stage's config is
    trained as BN (:func:`~harness.stage_configs.replace_sync_bn`).

    Returns:
        ``val/mIoU`` and ``val/IoU.<class>`` (stage 2 on val), ``pseudo/mIoU`` and
        ``pseudo/IoU.<class>`` (pseudo-masks on the train split), ``stage1/mIoU`` (pseudo-masks
        on val), the task, labelled fraction (:func:`labelled_fraction_of`), the split file the
        spec named (``split_file_source``), saliency threshold, seed, the resolved config and
        split files, and ``time/stage1_s`` / ``time/stage2_s`` (wall seconds; 0 when reused).
        An IoU of a class absent from a split is None (``null`` in JSON).

    Raises:
        WorkDirInUse: ``work_dir`` holds a trial of another spec, or another live process runs
            a trial there (:class:`WorkDirLocked`).
        DiskFullError: a checkpoint or result file found no room (the previous ones are kept).
        DamagedCheckpointError: every checkpoint of an interrupted stage is damaged.
    """
    work_dir = Path(work_dir).resolve()
    with _trial_lock(work_dir, lock_wait_s):
        return _run_trial(spec.resolved(), work_dir,
                          Path(stage1_cache or work_dir / 'stage1').resolve(), report)


def _run_trial(spec: TrialSpec, work_dir: Path, stage1_cache: Path,
               report: Optional[Report]) -> Dict[str, Any]:
    """:func:`run_trial` of a resolved spec, absolute folders, ``work_dir`` locked."""
    _claim_work_dir(work_dir, spec)
    result_file = work_dir / 'result.json'
    if result_file.is_file():
        return json.loads(result_file.read_text())

    cfg1 = _for_this_machine(stage1_config(spec))
    if spec.data_root is None:
        _ensure_bundled_dataset(cfg1)
    stage1_dir = stage1_run_dir(cfg1, stage1_cache)
    started = time.perf_counter()
    stage1_metrics, stage1_reused = _run_stage1_once(cfg1, stage1_dir, report)
    stage1_seconds = 0.0 if stage1_reused else time.perf_counter() - started

    cfg2 = _stage2_training_config(spec, work_dir, stage1_dir)
    started = time.perf_counter()
    stage2_metrics = _run_stage(cfg2, 'val', report)
    stage2_seconds = time.perf_counter() - started

    result = strict_json.jsonable({
        **stage2_metrics,
        **stage1_metrics,
        'task': spec.task,
        'labelled_fraction': labelled_fraction_of(spec),
        'split_file_source': spec.split_file if spec.task == 'ssss' else None,
        'saliency_threshold': spec.saliency_threshold,
        'seed': spec.seed,
        'stage1_reused': stage1_reused,
        'stage1_config': str(stage1_dir / 'stage1_config.py'),
        'stage2_config': str(work_dir / 'stage2_config.py'),
        'split_file': str(work_dir / 'splits' / 'labeled.txt'),
        'work_dir': str(work_dir),
        'time/stage1_s': round(stage1_seconds, 2),
        'time/stage2_s': round(stage2_seconds, 2),
    })
    if get_rank() == 0:
        write_whole(result_file, strict_json.dumps(result, indent=2).encode())
    barrier()
    return result


def labelled_fraction_of(spec: TrialSpec) -> float:
    """The fraction of the stage-2 training ids that the trial trains with their ground truth:
    0 for WSSS; for a ``split_file``, the ids it lists over all training ids; else the spec's
    ``labelled_fraction`` (as asked: ``round(fraction * N)`` ids, at least one, are labelled)."""
    if spec.task == 'wsss':
        return 0.0
    if spec.split_file is None:
        return spec.labelled_fraction
    labelled, unlabelled = labelled_split(spec, stage2_config(spec))
    return len(labelled) / (len(labelled) + len(unlabelled))


def stage1_run_dir(cfg1: Config, stage1_cache: Path) -> Path:
    """The folder of the stage-1 run of the resolved stage-1 config ``cfg1`` in
    ``stage1_cache``: named by a digest of the config's text and of the data in its
    ``data_root`` (:func:`~harness.data.fingerprint.dataset_fingerprint`), so that exactly the
    trials whose stage 1 is the same (threshold, seed, overrides, data) share it, and another
    dataset at the same path is another run."""
    return Path(stage1_cache) / digest_of(
        cfg1.pretty_text + '\0' + dataset_fingerprint(cfg1.data_root))


def check_work_dir(work_dir: Path, spec: TrialSpec) -> None:
    """Raises :class:`WorkDirInUse` if ``work_dir`` holds a trial of a spec other than ``spec``
    (``spec.json`` lists what differs), or trial output without a recorded spec."""
    spec_file = Path(work_dir) / SPEC_FILE
    wanted = json.loads(strict_json.dumps(spec.resolved().to_dict()))
    if spec_file.is_file():
        recorded = json.loads(spec_file.read_text())
        differences = [f'{key}: {recorded.get(key)!r} there, {value!r} here'
                       for key, value in wanted.items() if recorded.get(key) != value]
        if differences:
            raise WorkDirInUse(f'{work_dir} holds a trial of another spec '
                               f'({"; ".join(differences)}): choose another work dir')
    elif any((Path(work_dir) / name).exists() for name in ('result.json', 'stage2')):
        raise WorkDirInUse(f'{work_dir} holds trial output but no {SPEC_FILE}, so whether it is '
                           'this trial cannot be told: choose another work dir')


def _claim_work_dir(work_dir: Path, spec: TrialSpec) -> None:
    """Checks ``work_dir`` (see :func:`check_work_dir`) and records the spec there (rank 0)."""
    check_work_dir(work_dir, spec)
    if get_rank() == 0 and not (work_dir / SPEC_FILE).is_file():
        work_dir.mkdir(parents=True, exist_ok=True)
        write_whole(work_dir / SPEC_FILE, strict_json.dumps(spec.to_dict(), indent=2).encode())
    barrier()


def _stage2_training_config(spec: TrialSpec, work_dir: Path, stage1_dir: Path) -> Config:
    """The stage-2 config of the trial with its split written to ``<work_dir>/splits``: the
    labelled ids with their masks, the others with the pseudo-masks of the stage-1 run in
    ``stage1_dir``, whose backbone stage 2 starts from with ``stage2_init_from_stage1``."""
    cfg = _for_this_machine(stage2_config(spec))
    pseudo_masks = stage1_dir / 'pseudo_masks'
    labelled, unlabelled = labelled_split(spec, cfg)
    labelled_part, pseudo_part = cfg.labelled_dataset, cfg.pseudo_labelled_dataset
    labelled_part.ann_file = str(splits.write_ids(work_dir / 'splits' / 'labeled.txt', labelled))
    pseudo_part.ann_file = str(splits.write_ids(work_dir / 'splits' / 'unlabeled.txt', unlabelled))
    if unlabelled and not pseudo_masks.is_dir():
        raise FileNotFoundError(f'pseudo-mask folder {pseudo_masks} not found: stage 1 did not '
                                'write it (see PAMRHook in the stage-1 config)')
    pseudo_part.data_prefix.seg_map_path = str(pseudo_masks)
    parts = [part for part, ids in ((labelled_part, labelled), (pseudo_part, unlabelled)) if ids]
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=parts)
    if spec.stage2_init_from_stage1:
        checkpoint = (stage1_dir / 'last_checkpoint').read_text().strip()
        cfg.model.pretrained = None
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint,
                                           prefix='backbone.')
    cfg.work_dir = str(work_dir / 'stage2')
    if get_rank() == 0:
        cfg.dump(str(work_dir / 'stage2_config.py'))
    return cfg


def _run_stage1_once(cfg: Config, stage1_dir: Path,
                     report: Optional[Report]) -> Tuple[Dict[str, Any], bool]:
    """Trains stage 1 into ``stage1_dir`` unless a finished run is there; returns its metrics
    and whether they are the finished run's."""
    done_file = stage1_dir / 'stage1_done.json'
    with _exclusive(stage1_dir.with_name(stage1_dir.name + '.lock')):
        if done_file.is_file():
            return json.loads(done_file.read_text()), True
        cfg.work_dir = str(stage1_dir)
        pseudo_metrics_file = stage1_dir / 'pseudo_masks_metrics.json'
        masks_written = (stage1_dir / 'pseudo_masks').is_dir() and pseudo_metrics_file.is_file()
        if masks_written:
            # Interrupted after the masks were written: do not let PAMRHook run into them.
            cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'PAMRHook']
        if get_rank() == 0:
            stage1_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(str(stage1_dir / 'stage1_config.py'))
        metrics = _run_stage(cfg, 'stage1', report)
        if masks_written:  # PAMRHook published these before the interruption
            metrics.update(json.loads(pseudo_metrics_file.read_text()))
        if get_rank() == 0:
            write_whole(done_file, strict_json.dumps(metrics, indent=2).encode())
        barrier()
    return metrics, False


def _run_stage(cfg: Config, prefix: str, report: Optional[Report]) -> Dict[str, float]:
    """Trains one MMEngine config (resuming from its work dir); returns the last value of each
    metric it published (:class:`TrialMetricsBackend`), on every rank."""
    from mmengine.runner import Runner

    # The newest checkpoint that loads (a damaged one is named and passed over); without one, the
    # config's own load_from (None: initialisation).
    resume_from = resumable_checkpoint(cfg.work_dir)
    cfg.resume = resume_from is not None
    if cfg.resume:
        cfg.load_from = resume_from
    cfg.launcher = 'pytorch' if is_distributed() else 'none'
    if is_distributed() and not torch.cuda.is_available():
        # MMEngine's default DDP wrapper passes device_ids=[LOCAL_RANK], which CPU modules reject.
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    # One channel for metrics: validation logs keep their ``val/`` prefix for the writer.
    cfg.log_processor = {**cfg.get('log_processor', {}), 'log_with_hierarchy': True}
    cfg.visualizer.vis_backends = [*cfg.visualizer.get('vis_backends', []),
                                   dict(type='TrialMetricsBackend', stage=prefix)]
    runner = Runner.from_cfg(cfg)
    if runner.rank == 0:
        writer = runner.visualizer.get_backend('TrialMetricsBackend')
    else:  # the visualizer publishes on rank 0 only
        writer = TrialMetricsBackend(cfg.work_dir, prefix)
        runner.register_hook(_ValidationReport(writer))
    writer.sink = report
    runner.register_hook(RandomStateHook())  # a resumed stage ends as an uninterrupted one
    with trusted_checkpoint_loading():  # the checkpoints are this trial's own
        runner.train()
    if runner.val_loop is not None and not any(key.startswith(f'{prefix}/')
                                               for key in writer.latest):
        # Resumed after its last checkpoint, the stage trained and validated nothing: its last
        # validation had not ended. It ends now, on the same weights.
        runner.val_loop.run()
    shut_down_dataloader_workers(runner)
    latest = [writer.latest]
    broadcast_object_list(latest)  # what rank 0's writer received, on every rank
    return latest[0]


def shut_down_dataloader_workers(runner: Any) -> None:
    """Ends the worker processes of the finished ``runner``'s train, val and test dataloaders.

    A finished MMEngine runner keeps them: the iter-based train loop holds its iterator, a
    ``persistent_workers`` loader its own. Left alone they end when the garbage collector frees
    the runner, at some allocation of the next stage, where each worker's join runs into
    PyTorch's 5-s timeout (docs/benchmarks.md: ``benchmarks/bench_startup.py``).
    """
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    # The private attributes: the public properties would build a loop that was never built.
    for loop in (runner._train_loop, runner._val_loop, runner._test_loop):
        for owner in (getattr(loop, 'dataloader', None),
                      getattr(loop, 'dataloader_iterator', None)):
            iterator = getattr(owner, '_iterator', None)
            if isinstance(iterator, _MultiProcessingDataLoaderIter):
                iterator._shutdown_workers()
                owner._iterator = None


def _ensure_bundled_dataset(cfg: Config) -> None:
    """Generates the bundled dataset when a config names it and it is not there yet; one that is
    there must be of this code's generator version (of any settings: tests use a smaller one).

    Raises:
        ValueError: on every rank, naming the folder, for a dataset of another generator version.
    """
    if cfg.get('dataset_type') != 'SyntheticShapesDataset':
        return
    root = Path(cfg.data_root)
    if get_rank() == 0 and not root.exists():
        synthetic.ensure_dataset(root)
    barrier()
    synthetic.check_dataset(root)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """A file lock held by rank 0 (other ranks wait at a barrier): one stage-1 run per hash."""
    if get_rank() != 0:
        barrier()
        yield
        barrier()
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, 'w') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        barrier()
        try:
            yield
        finally:
            barrier()
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _trial_lock(work_dir: Path, wait_s: float) -> Iterator[None]:
    """Holds ``<work_dir>/trial.lock`` (rank 0; an exclusive ``flock``, which the kernel
    releases when the process ends, however it ends) while the block runs.

    Raises:
        WorkDirLocked: on every rank, naming the folder and the holder, when another process
            still holds it after ``wait_s`` seconds.
    """
    handle, refusal = None, None
    if get_rank() == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        handle = open(work_dir / TRIAL_LOCK, 'a+')
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _lock_holder(handle)
                    handle.close()
                    handle = None
                    refusal = (f'{work_dir} is in use by a running trial ({holder}): wait for it '
                               'to end (then run again to read its result), or choose another '
                               'work dir')
                    break
                time.sleep(min(1.0, wait_s))
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(f'process {os.getpid()} on {socket.gethostname()}\n')
            handle.flush()
    shared = [refusal]
    broadcast_object_list(shared)
    if shared[0] is not None:
        raise WorkDirLocked(shared[0])
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def _lock_holder(handle: IO[str]) -> str:
    """The line the trial lock's holder wrote (``process <pid> on <host>``). The holder writes it
    just after taking the lock, so an empty file is read again for up to a second."""
    for _ in range(LOCK_HOLDER_READS):
        handle.seek(0)
        holder = handle.read().strip()
        if holder:
            return holder
        time.sleep(0.1)
    return 'another process'


def _for_this_machine(cfg: Config) -> Config:
    """``cfg`` with SyncBN turned into BN where there is no CUDA (SyncBN runs on GPUs only)."""
    if not torch.cuda.is_available() and replace_sync_bn(cfg) and get_rank() == 0:
        print_log('no CUDA here: SyncBN trains as BN (the statistics of each worker\'s batch)',
                  logger='current', level=logging.WARNING)
    return cfg


def load_spec(path: Optional[str], assignments: Sequence[str]) -> Tuple[TrialSpec, List[str]]:
    """The spec of an experiment file (any MMEngine config format) plus ``key=value`` overrides,
    and the spec keys they set (canonical names; ``stageN.<key>`` overrides not included)."""
    values: Dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f'experiment file {path} not found')
        content = (read_yaml(Path(path)) if Path(path).suffix in ('.yaml', '.yml') else
                   Config.fromfile(path).to_dict())
        if not isinstance(content, dict):
            raise InvalidSetting(f'experiment file {path}: the top level must be a mapping of '
                                 f'TrialSpec keys, got {type(content).__name__}')
        values = canonical_keys(content, source=path)
    overrides = parse_assignments(list(assignments))
    spec = TrialSpec.from_mapping(values, source=path or 'the trial').with_overrides(overrides)
    explicit = set(values) | {SHORT_NAMES.get(key, key) for key in overrides
                              if key.partition('.')[0] not in STAGES}
    return spec, sorted(explicit)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """The command line: checks everything, runs the trial, prints its result as the last line
    (strict JSON). A bad setting exits with status 2 and one line naming it, before any training.
    """
    parser = argparse.ArgumentParser(description='Run one EPS++ trial (stage 1 -> stage 2).')
    parser.add_argument('experiment', nargs='?',
                        help='experiment file with TrialSpec keys (YAML, .py or .json); '
                        'default: the bundled SSSS setting, fraction 1/4, IRD')
    parser.add_argument('--set', dest='assignments', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='a TrialSpec key (or fraction / threshold), or stage1.<cfg key> / '
                        'stage2.<cfg key> (MMEngine cfg-options); repeatable')
    parser.add_argument('--work-dir', help='the trial folder, holding its stage-1 run too '
                        '(default: outputs/trials/<task>-f<fraction>-t<threshold>-s<seed>-<hash>, '
                        'stage-1 runs shared in outputs/trials/stage1)')
    parser.add_argument('--stage1-cache', help='folder of stage-1 runs to share with other '
                        'trials (a run is reused by the trials with the same stage-1 config)')
    args = parser.parse_args(argv)
    source = args.experiment or '--set'
    try:
        spec, explicit = load_spec(args.experiment, args.assignments)
        if args.work_dir:
            work_dir, stage1_cache = Path(args.work_dir), Path(args.work_dir) / 'stage1'
        else:
            work_dir = Path('outputs') / 'trials' / spec.short_id()
            stage1_cache = work_dir.parent / 'stage1'
        stage1_cache = Path(args.stage1_cache) if args.stage1_cache else stage1_cache
        check_folder_argument(work_dir, '--work-dir')
        check_folder_argument(stage1_cache, '--stage1-cache')
        check_trials([spec], explicit, source, labels=[''])
        check_amp([spec], torch.cuda.is_available(), source)
        check_work_dir(work_dir, spec)
        warning = None if torch.cuda.is_available() else sync_bn_warning([spec], source)
        if warning:
            print(warning, file=sys.stderr)
    except (InvalidSetting, KeyError, ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f'error: {message_of(error)}\n')
    if (work_dir / 'result.json').is_file():
        print(f'{work_dir} holds a finished trial of this spec; printing its result')
    try:
        result = run_trial(spec, work_dir, stage1_cache)
    except WorkDirLocked as error:
        parser.exit(2, f'error: {error}\n')
    except (DiskFullError, DamagedCheckpointError) as error:
        parser.exit(1, f'error: {error}\n')
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        parser.exit(1, f'error: no space left for {error.filename or "a file of the trial"} '
                    f'({error.strerror}); make room there and run again: the trial resumes\n')
    print(strict_json.dumps(result))
    return result


if __name__ == '__main__':
    main()
