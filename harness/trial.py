"""One EPS++ experiment end to end: stage 1 -> pseudo-masks -> stage 2 -> val metrics.

A trial is the unit the sweep launches. Stand-alone::

    python -m harness.trial                                   # bundled SSSS, fraction 1/4, IRD
    python -m harness.trial experiments/trials/shapes_wsss.yaml --set saliency_threshold=0.4
    python -m harness.trial --set task=ssss --set labelled_fraction=1/8 \
        --set stage2.optim_wrapper.optimizer.lr=0.001

The last line printed is the result as JSON. Inside a torch.distributed process group that
someone else started (Ray Train), every rank calls :func:`run_trial` with the same arguments.
"""
import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.hooks import Hook

from harness.data import splits, synthetic
from harness.eps.checkpoints import trusted_checkpoint_loading
from harness.overrides import apply_overrides, parse_assignments

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TASKS = ('wsss', 'ssss')
SHORT_NAMES = {'fraction': 'labelled_fraction', 'threshold': 'saliency_threshold'}
Report = Callable[[Dict[str, Any]], None]


@dataclass
class TrialSpec:
    """What one trial runs. Paths are resolved against the current directory.

    Attributes:
        stage1_config: MMEngine config of the stage-1 network (``EPSClassifier``).
        stage2_config: MMEngine config of the stage-2 segmentation network.
        task: ``'wsss'`` (stage 2 on pseudo-masks only) or ``'ssss'`` (labelled fraction with
            ground truth, pseudo-masks for the rest).
        labelled_fraction: SSSS: fraction in (0, 1] of the training ids with ground truth
            (``'1/8'`` or ``0.125``); 1 is fully supervised. Ignored for WSSS.
        split_file: SSSS: a file of labelled ids (one per line) used instead of the fraction.
        saliency_threshold: The IRD threshold of ``B()`` (stage 1 ``model.loss_sal.threshold``;
            only meaningful when the stage-1 saliency loss is ``IRDLoss``).
        seed: Seed of both stages and of the labelled subset.
        data_root: Dataset folder for both stages (default: the configs' own ``data_root``).
        stage1: MMEngine ``cfg-options`` for stage 1 (dotted keys that must exist).
        stage2: MMEngine ``cfg-options`` for stage 2.
    """

    stage1_config: str = 'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
    stage2_config: str = 'mm_configs/stage2/deeplabv3plus_r18-tiny_1xb16-600i_shapes-64x64.py'
    task: str = 'ssss'
    labelled_fraction: Any = 0.25
    split_file: Optional[str] = None
    saliency_threshold: float = 0.5
    seed: int = 0
    data_root: Optional[str] = None
    stage1: Dict[str, Any] = field(default_factory=dict)
    stage2: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f'task {self.task!r} is not one of {TASKS}')
        self.labelled_fraction = splits.parse_fraction(self.labelled_fraction)
        if not 0.0 < float(self.saliency_threshold) < 1.0:
            raise ValueError(f'saliency_threshold {self.saliency_threshold!r} must lie in (0, 1)')
        for name in ('stage1_config', 'stage2_config'):
            if not Path(getattr(self, name)).is_file():
                raise FileNotFoundError(f'{name} {getattr(self, name)} not found')

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = 'the trial') -> 'TrialSpec':
        """Builds a spec from a dict; unknown keys raise ``KeyError`` with the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        resolved = {}
        for key, value in values.items():
            name = SHORT_NAMES.get(key, key)
            if name not in valid:
                raise KeyError(f'unknown key {key!r} in {source}; valid keys: {valid} '
                               f'(short names: {SHORT_NAMES})')
            resolved[name] = value
        return cls(**resolved)

    def with_overrides(self, overrides: Mapping[str, Any]) -> 'TrialSpec':
        """A copy with ``overrides`` applied: spec fields (or short names) and ``stageN.<key>``."""
        values = dataclasses.asdict(self)
        values['stage1'], values['stage2'] = dict(self.stage1), dict(self.stage2)
        for key, value in overrides.items():
            stage, _, option = key.partition('.')
            if stage in ('stage1', 'stage2') and option:
                values[stage][option] = value
            else:
                values[SHORT_NAMES.get(key, key)] = value
        return TrialSpec.from_mapping(values, source='the overrides')

    def resolved(self) -> 'TrialSpec':
        """A copy whose paths are absolute (Ray workers run in other directories)."""
        return dataclasses.replace(
            self, stage1_config=_absolute(self.stage1_config),
            stage2_config=_absolute(self.stage2_config), split_file=_absolute(self.split_file),
            data_root=_absolute(self.data_root))

    def short_id(self) -> str:
        """A readable, unique name for the trial's work dir."""
        digest = _digest(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))
        fraction = f'-f{self.labelled_fraction:g}' if self.task == 'ssss' else ''
        return f'{self.task}{fraction}-t{self.saliency_threshold:g}-s{self.seed}-{digest}'


class _MetricsRecorder(Hook):
    """Keeps the metrics of the last validation and hands every validation to ``report``."""

    priority = 'VERY_LOW'

    def __init__(self, prefix: str, report: Optional[Report]) -> None:
        self.prefix = prefix
        self.report = report
        self.metrics: Dict[str, float] = {}

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self.metrics = {f'{self.prefix}/{k}': float(v) for k, v in (metrics or {}).items()}
        if self.report is not None:
            self.report({**self.metrics, f'{self.prefix}/iter': runner.iter})


def run_trial(spec: TrialSpec, work_dir: Path, stage1_cache: Optional[Path] = None,
              report: Optional[Report] = None) -> Dict[str, Any]:
    """Runs stage 1 (or reuses it), writes the split, runs stage 2; returns the metrics.

    Args:
        spec: What to run (paths resolved against the current directory).
        work_dir: The trial's own folder. A finished trial (``result.json``) is not run again;
            an interrupted one resumes from its last MMEngine checkpoint.
        stage1_cache: Folder of finished stage-1 runs, keyed by a hash of the resolved stage-1
            config, shared by the trials of a sweep (default: ``<work_dir>/../stage1``).
        report: Called with the metrics after every validation of either stage (Ray Train's
            report, in a sweep); every rank calls it equally often.

    Returns:
        ``val/mIoU`` and ``val/IoU.<class>`` (stage 2 on val), ``pseudo/mIoU`` and
        ``pseudo/IoU.<class>`` (pseudo-masks on the train split), ``stage1/mIoU`` (pseudo-masks
        on val), the task, labelled fraction, saliency threshold, seed, the resolved config and
        split files, and ``time/stage1_s`` / ``time/stage2_s`` (wall seconds; 0 when reused).
    """
    spec = spec.resolved()
    work_dir = Path(work_dir).resolve()
    result_file = work_dir / 'result.json'
    if result_file.is_file():
        return json.loads(result_file.read_text())
    work_dir.mkdir(parents=True, exist_ok=True)
    stage1_cache = Path(stage1_cache or work_dir.parent / 'stage1').resolve()

    stage1_cfg = _stage1_config(spec)
    _ensure_bundled_dataset(stage1_cfg)
    stage1_dir = stage1_cache / _digest(stage1_cfg.pretty_text)
    started = time.perf_counter()
    stage1_result = _run_stage1_once(stage1_cfg, stage1_dir, report)
    stage1_seconds = time.perf_counter() - started if not stage1_result['reused'] else 0.0

    stage2_cfg = _stage2_config(spec, work_dir, stage1_dir / 'pseudo_masks')
    started = time.perf_counter()
    stage2_metrics = _run_stage(stage2_cfg, 'val', report)
    stage2_seconds = time.perf_counter() - started

    result = {
        **stage2_metrics,
        **stage1_result['metrics'],
        'task': spec.task,
        'labelled_fraction': spec.labelled_fraction if spec.task == 'ssss' else 0.0,
        'saliency_threshold': spec.saliency_threshold,
        'seed': spec.seed,
        'stage1_reused': stage1_result['reused'],
        'stage1_config': str(stage1_dir / 'stage1_config.py'),
        'stage2_config': str(work_dir / 'stage2_config.py'),
        'split_file': str(work_dir / 'splits' / 'labeled.txt'),
        'work_dir': str(work_dir),
        'time/stage1_s': round(stage1_seconds, 2),
        'time/stage2_s': round(stage2_seconds, 2),
    }
    if _rank() == 0:
        _write_atomically(result_file, json.dumps(result, indent=2))
    _barrier()
    return result


def _stage1_config(spec: TrialSpec) -> Config:
    cfg = Config.fromfile(spec.stage1_config)
    apply_overrides(cfg, spec.stage1, source=spec.stage1_config)
    _set_data_root(cfg, spec.data_root or _absolute(cfg.data_root))
    loss_sal = cfg.model.get('loss_sal')
    if loss_sal is not None and loss_sal.get('type') == 'IRDLoss':
        loss_sal.threshold = float(spec.saliency_threshold)
    cfg.randomness = dict(seed=spec.seed)
    return cfg


def _stage2_config(spec: TrialSpec, work_dir: Path, pseudo_masks: Path) -> Config:
    cfg = Config.fromfile(spec.stage2_config)
    apply_overrides(cfg, spec.stage2, source=spec.stage2_config)
    _set_data_root(cfg, spec.data_root or _absolute(cfg.data_root))
    labelled_part, pseudo_part = cfg.labelled_dataset, cfg.pseudo_labelled_dataset
    train_ids = splits.read_ids(Path(labelled_part.data_root) / labelled_part.ann_file)
    if spec.task == 'wsss':
        labelled, unlabelled = [], sorted(train_ids)
    elif spec.split_file:
        labelled, unlabelled = splits.split_from_file(train_ids, spec.split_file)
    else:
        labelled, unlabelled = splits.split_by_fraction(train_ids, spec.labelled_fraction,
                                                        spec.seed)
    labelled_part.ann_file = str(splits.write_ids(work_dir / 'splits' / 'labeled.txt', labelled))
    pseudo_part.ann_file = str(splits.write_ids(work_dir / 'splits' / 'unlabeled.txt', unlabelled))
    if unlabelled and not pseudo_masks.is_dir():
        raise FileNotFoundError(f'pseudo-mask folder {pseudo_masks} not found: stage 1 did not '
                                'write it (see PAMRHook in the stage-1 config)')
    pseudo_part.data_prefix.seg_map_path = str(pseudo_masks)
    parts = [part for part, ids in ((labelled_part, labelled), (pseudo_part, unlabelled)) if ids]
    cfg.train_dataloader.dataset = dict(type='ConcatDataset', datasets=parts)
    cfg.randomness = dict(seed=spec.seed)
    cfg.work_dir = str(work_dir / 'stage2')
    if _rank() == 0:
        cfg.dump(str(work_dir / 'stage2_config.py'))
    return cfg


def _run_stage1_once(cfg: Config, stage1_dir: Path, report: Optional[Report]) -> Dict[str, Any]:
    """Trains stage 1 into ``stage1_dir`` unless a finished run is there; returns its metrics."""
    done_file = stage1_dir / 'stage1_done.json'
    with _exclusive(stage1_dir.with_name(stage1_dir.name + '.lock')):
        if done_file.is_file():
            return {'metrics': json.loads(done_file.read_text()), 'reused': True}
        cfg.work_dir = str(stage1_dir)
        pseudo_metrics_file = stage1_dir / 'pseudo_masks_metrics.json'
        if (stage1_dir / 'pseudo_masks').is_dir() and pseudo_metrics_file.is_file():
            # Interrupted after the masks were written: do not let PAMRHook run into them.
            cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'PAMRHook']
        if _rank() == 0:
            stage1_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(str(stage1_dir / 'stage1_config.py'))
        metrics = _run_stage(cfg, 'stage1', report)
        if pseudo_metrics_file.is_file():
            metrics.update(json.loads(pseudo_metrics_file.read_text()))
        if _rank() == 0:
            _write_atomically(done_file, json.dumps(metrics, indent=2))
        _barrier()
    return {'metrics': metrics, 'reused': False}


def _run_stage(cfg: Config, prefix: str, report: Optional[Report]) -> Dict[str, float]:
    """Trains one MMEngine config (resuming from its work dir); returns its last val metrics."""
    from mmengine.runner import Runner

    cfg.resume = True  # MMEngine resumes from <work_dir>/last_checkpoint when there is one
    cfg.launcher = 'pytorch' if _distributed() else 'none'
    if _distributed() and not torch.cuda.is_available():
        # MMEngine's default DDP wrapper passes device_ids=[LOCAL_RANK], which CPU modules reject.
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    runner = Runner.from_cfg(cfg)
    recorder = _MetricsRecorder(prefix, report)
    runner.register_hook(recorder)
    with trusted_checkpoint_loading():  # the checkpoints are this trial's own
        runner.train()
    return recorder.metrics


def _set_data_root(cfg: Config, data_root: str) -> None:
    """Points every ``data_root`` of the config (dataloaders, hooks, templates) at one folder."""
    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if 'data_root' in node:
                node['data_root'] = data_root
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for key in list(cfg.keys()):
        visit(cfg[key])
    cfg.data_root = data_root


def _ensure_bundled_dataset(cfg: Config) -> None:
    """Generates the bundled dataset when a config names it and it is not there yet."""
    if cfg.get('dataset_type') == 'SyntheticShapesDataset' and not Path(cfg.data_root).exists():
        if _rank() == 0:
            synthetic.ensure_dataset(cfg.data_root)
        _barrier()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """A file lock held by rank 0 (other ranks wait at a barrier): one stage-1 run per hash."""
    if _rank() != 0:
        _barrier()
        yield
        _barrier()
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, 'w') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _barrier()
        try:
            yield
        finally:
            _barrier()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _absolute(path: Optional[str]) -> Optional[str]:
    return None if path is None else str(Path(path).resolve())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f'.{path.name}.{os.getpid()}')
    partial.write_text(text)
    os.replace(partial, path)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def load_spec(path: Optional[str], assignments: Sequence[str]) -> TrialSpec:
    """The spec of an experiment file (any MMEngine config format) plus ``key=value`` overrides."""
    spec = TrialSpec()
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f'experiment file {path} not found')
        spec = TrialSpec.from_mapping(Config.fromfile(path).to_dict(), source=path)
    return spec.with_overrides(parse_assignments(list(assignments)))


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description='Run one EPS++ trial (stage 1 -> stage 2).')
    parser.add_argument('experiment', nargs='?',
                        help='experiment file with TrialSpec keys (YAML, .py or .json); '
                        'default: the bundled SSSS setting, fraction 1/4, IRD')
    parser.add_argument('--set', dest='assignments', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='a TrialSpec key (or fraction / threshold), or stage1.<cfg key> / '
                        'stage2.<cfg key> (MMEngine cfg-options); repeatable')
    parser.add_argument('--work-dir', help='the trial folder (default: '
                        'outputs/trials/<task>-f<fraction>-t<threshold>-s<seed>-<hash>)')
    args = parser.parse_args(argv)
    spec = load_spec(args.experiment, args.assignments)
    work_dir = Path(args.work_dir or Path('outputs') / 'trials' / spec.short_id())
    if (work_dir / 'result.json').is_file():
        print(f'{work_dir} holds a finished trial of this spec; printing its result')
    result = run_trial(spec, work_dir)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
