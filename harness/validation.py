"""Checks that run before anything trains or is written, shared by ``harness.sweep`` (with and
without ``--check``) and ``harness.trial``: stage configs, data, ignored or repeated settings, and
where results go. Every failure is an :class:`InvalidSetting` with a one-line message.
"""
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Set, Union

import yaml
from mmengine.config import Config

from harness.spec import TrialSpec
from harness.strict_json import is_integer, is_number

# The trial sets this from its saliency_threshold; a second way to set it could only disagree.
THRESHOLD_KEY = 'model.loss_sal.threshold'
SQLITE_PREFIX = 'sqlite:///'
SERVER_TIMEOUT_S = 5.0
STAGE1_MODEL = 'EPSClassifier'  # the model of every stage-1 config
# Free space (MiB) a checkpoint folder needs: catches a full disk, not an estimate of the need.
MIN_FREE_MIB = 64
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
MERGE_TAG = 'tag:yaml.org,2002:merge'
_MISSING = object()


class InvalidSetting(ValueError):
    """A setting that cannot run; the message names it and what is valid (one line)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (merge keys allowed)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'key {key!r} is given twice in one mapping (keep one)',
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The content of the YAML file ``path`` (safe tags only, a key given twice refused).

    Raises:
        InvalidSetting: naming the file, line and column of a syntax error.
    """
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, 'problem_mark', None)
        where = f' (line {mark.line + 1}, column {mark.column + 1})' if mark else ''
        problem = getattr(error, 'problem', None) or str(error).splitlines()[0]
        raise InvalidSetting(f'{path} is not valid YAML{where}: {problem}') from error


def check_trials(specs: Sequence[TrialSpec], explicit: Collection[str], source: str,
                 labels: Optional[Sequence[str]] = None, make_bundled: bool = True) -> None:
    """Checks the trials of a sweep (or the one trial of ``harness.trial``) before anything runs.

    Args:
        specs: The trials' specs (resolved paths or relative to the working directory).
        explicit: Spec keys (canonical names) that the user set: a setting that the trials would
            ignore is an error only when the user asked for it.
        source: What the settings came from (a sweep file, ``--set``), for the messages.
        labels: How each trial is named in messages (default: ``trial <index>``; an empty label
            uses ``source`` alone).
        make_bundled: Generate the bundled dataset at the configs' own ``data_root`` when it is
            absent, after every other check passed (False: write nothing and skip its data check).

    Raises:
        InvalidSetting: naming the trial, the setting and what is valid.
    """
    from harness.stage_configs import stage1_config, stage2_config

    labels = list(labels or [f'trial {index}' for index in range(len(specs))])
    wheres = [f'{source}: {label}' if label else source for label in labels]
    stage_configs = []
    for spec, where in zip(specs, wheres):
        if THRESHOLD_KEY in spec.stage1:
            raise InvalidSetting(
                f'{where}: stage1.{THRESHOLD_KEY} is the trial\'s saliency_threshold: set '
                f'saliency_threshold (short name threshold) instead')
        cfg1 = _built(stage1_config, spec, 'stage1', where)
        cfg2 = _built(stage2_config, spec, 'stage2', where)
        check_ranges(cfg1, 'stage1', where)
        check_ranges(cfg2, 'stage2', where)
        _check_settings_used(spec, cfg1, explicit, where)
        _check_stage_roles(spec, cfg1, cfg2, where)
        _check_stage2_init(spec, cfg1, cfg2, where)
        stage_configs.append((cfg1, cfg2))
    _check_distinct(specs, labels, [cfg1 for cfg1, _ in stage_configs], source)
    for spec, where, (cfg1, cfg2) in zip(specs, wheres, stage_configs):
        _check_data(spec, cfg1, cfg2, 'data_root' in explicit, where, make_bundled)


def _integer(low: int, also: Optional[int] = None) -> Callable[[Any], bool]:
    return lambda value: is_integer(value) and (value >= low or value == also)


def _number(low: float, high: float = math.inf,
            low_included: bool = True) -> Callable[[Any], bool]:
    return lambda value: (is_number(value) and math.isfinite(value) and value < high
                          and (value >= low if low_included else value > low))


# (dotted key, valid values in words, test) of stage-config settings that must lie in a range.
# Out of range, a stage would train nothing or fail after the stages before it trained.
RANGES = (
    *((f'train_cfg.{key}', 'an integer >= 1', _integer(1))
      for key in ('max_iters', 'max_epochs', 'val_interval')),
    ('default_hooks.checkpoint.interval', 'an integer >= 1, or -1 (no checkpoints)',
     _integer(1, also=-1)),
    ('default_hooks.logger.interval', 'an integer >= 1', _integer(1)),
    *((f'{loader}.batch_size', 'an integer >= 1', _integer(1)) for loader in DATALOADERS),
    *((f'{loader}.num_workers', 'an integer >= 0', _integer(0)) for loader in DATALOADERS),
    ('optim_wrapper.optimizer.lr', 'a number > 0', _number(0.0, low_included=False)),
    ('optim_wrapper.optimizer.weight_decay', 'a number >= 0', _number(0.0)),
    ('optim_wrapper.optimizer.momentum', 'a number in [0, 1)', _number(0.0, 1.0)),
    ('optim_wrapper.accumulative_counts', 'an integer >= 1', _integer(1)),
)
SCHEDULER_RANGES = (
    ('begin', 'an integer >= 0', _integer(0)),
    ('end', 'an integer >= 1', _integer(1)),
    ('eta_min', 'a number >= 0', _number(0.0)),
)


def check_ranges(cfg: Config, stage: str, where: str) -> None:
    """Checks the :data:`RANGES` settings of one stage's config, and :data:`SCHEDULER_RANGES`
    and ``begin < end`` of each ``param_scheduler``.

    Raises:
        InvalidSetting: naming ``<stage>.<key>``, the value and the valid range.
    """
    def refuse(key: str, value: Any, valid: str) -> None:
        raise InvalidSetting(f'{where}: {stage}.{key} is {value!r}, out of range: it must be '
                             f'{valid}')

    values = cfg.to_dict()
    for key, valid, test in RANGES:
        value = _lookup(values, key)
        if value is not _MISSING and not test(value):
            refuse(key, value, valid)
    schedulers = values.get('param_scheduler') or []
    for index, scheduler in enumerate(schedulers if isinstance(schedulers, list) else [schedulers]):
        for name, valid, test in SCHEDULER_RANGES:
            if name in scheduler and not test(scheduler[name]):
                refuse(f'param_scheduler.{index}.{name}', scheduler[name], valid)
        begin, end = scheduler.get('begin', 0), scheduler.get('end')
        if end is not None and end <= begin:
            refuse(f'param_scheduler.{index}.end', end,
                   f'greater than param_scheduler.{index}.begin ({begin})')


def _lookup(values: Dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of ``values`` (a config as a dict), or :data:`_MISSING`."""
    node: Any = values
    for part in key.split('.'):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def sync_bn_warning(specs: Sequence[TrialSpec], source: str) -> Optional[str]:
    """A one-line warning naming the stage configs that use SyncBN (which needs GPUs and is
    replaced by BN without them, see :func:`harness.stage_configs.replace_sync_bn`), or None.
    """
    from harness.stage_configs import replace_sync_bn, stage1_config, stage2_config

    configs, seen = set(), set()
    for spec in specs:
        for stage, build in (('stage1', stage1_config), ('stage2', stage2_config)):
            config = getattr(spec, f'{stage}_config')
            built = (config, json.dumps(getattr(spec, stage), sort_keys=True, default=str))
            if built not in seen and replace_sync_bn(build(spec)):
                configs.add(config)
            seen.add(built)
    if not configs:
        return None
    return (f'warning: {source}: {", ".join(sorted(configs))} use SyncBN, which needs GPUs: '
            'without them the trials train with BN (each worker normalises with the statistics '
            'of its own batch); give the workers GPUs to train with SyncBN')


def check_amp(specs: Sequence[TrialSpec], cuda_available: bool, source: str) -> None:
    """Raises :class:`InvalidSetting` if a trial sets ``amp`` and ``cuda_available`` is False."""
    from harness.amp import AmpUnavailableError, check_amp_available

    if any(spec.amp for spec in specs):
        try:
            check_amp_available(cuda_available)
        except AmpUnavailableError as error:
            raise InvalidSetting(f'{source}: {error}') from error


def check_folder_argument(path: Union[str, Path], argument: str,
                          min_free_mib: float = MIN_FREE_MIB) -> Path:
    """Checks that ``path`` is, or can be created as, a folder this process can write to, on a
    disk with at least ``min_free_mib`` MiB free. Writes nothing that stays.

    Args:
        path: The folder (it need not exist).
        argument: How the user named it (``--work-dir``, ``storage_path``), for the message.
        min_free_mib: Free space (MiB) the disk must have; 0 for no check.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InvalidSetting: naming the argument and the path, when the folder cannot be created or
            written or its disk has too little free space.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InvalidSetting(f'{argument} {path} is a file, not a folder: name a folder (new or '
                             'existing)')
    existing = target.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidSetting(f'{argument} {path} cannot be written: {existing} is a file, not a '
                             'folder, so no folder can be created under it; name a folder')
    try:
        os.rmdir(tempfile.mkdtemp(prefix='.write-probe-', dir=existing))
    except OSError as error:
        raise InvalidSetting(f'{argument} {path} cannot be written: no folder can be created in '
                             f'{existing} ({error.strerror}); name a folder you can write '
                             'to') from error
    free_mib = shutil.disk_usage(existing).free / 2 ** 20
    if free_mib < min_free_mib:
        raise InvalidSetting(f'{argument} {path}: the disk of {existing} has {free_mib:.1f} MiB '
                             f'free, less than the {min_free_mib:g} MiB needed; free some space '
                             'or name a folder on another disk')
    return target


def check_tracking_uri(uri: str, create: bool, key: str = 'mlflow.tracking_uri') -> None:
    """Checks an MLflow tracking URI without creating anything.

    The scheme must be one of :func:`tracking_uri_schemes`. ``sqlite:///PATH``: PATH's folder
    must exist with ``create``, PATH itself without. ``http(s)://``: the server's ``/health``
    must answer within :data:`SERVER_TIMEOUT_S` seconds.

    Raises:
        InvalidSetting: naming ``key``, the URI and what is wrong.
    """
    scheme = urllib.parse.urlparse(uri).scheme
    schemes = tracking_uri_schemes()
    if scheme.partition('+')[0] not in schemes:
        raise InvalidSetting(f'{key} {uri}: MLflow has no tracking store for scheme {scheme!r}; '
                             f'valid schemes: {sorted(schemes - {""})}, e.g. '
                             'sqlite:///<folder>/mlflow.db or http://<host>:5000')
    if uri.startswith(SQLITE_PREFIX):
        database = Path(uri[len(SQLITE_PREFIX):])
        if create and not database.parent.is_dir():
            raise InvalidSetting(f'{key} {uri}: folder {database.parent} does not exist; create '
                                 'it or name an existing one (nothing is created for you)')
        if not create and not database.is_file():
            raise InvalidSetting(f'{key} {uri}: no MLflow store at {database}; name the store '
                                 'a sweep wrote (default sqlite:///<storage_path>/mlflow.db)')
    elif uri.startswith(('http://', 'https://')):
        health = uri.rstrip('/') + '/health'
        try:
            urllib.request.urlopen(health, timeout=SERVER_TIMEOUT_S).close()
        except OSError as error:  # URLError and timeouts included
            reason = getattr(error, 'reason', error)
            raise InvalidSetting(f'{key} {uri}: the MLflow server did not answer {health} '
                                 f'within {SERVER_TIMEOUT_S:g} s ({reason}); start it '
                                 '(mlflow server) or fix the URI') from error


def stage1_config_file(path: Union[str, Path], argument: str) -> Config:
    """The stage-1 config file ``path`` (model :data:`STAGE1_MODEL`), read by MMEngine.

    Raises:
        InvalidSetting: naming ``argument`` and the file, when it is missing, cannot be read as
            an MMEngine config or is not a stage-1 config.
    """
    if not Path(path).is_file():
        raise InvalidSetting(f'{argument} {path} not found')
    try:
        cfg = Config.fromfile(str(path))
    except Exception as error:  # MMEngine raises what the file's parser raises
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InvalidSetting(f'{argument} {path} cannot be read as an MMEngine config '
                             f'({reason})') from error
    model = cfg.get('model')
    model_type = model.get('type') if isinstance(model, dict) else None
    if model_type != STAGE1_MODEL:
        raise InvalidSetting(f'{argument} {path} is not a stage-1 config: its model is '
                             f'{model_type!r}, not {STAGE1_MODEL!r} (stage-1 configs: '
                             'mm_configs/eps/)')
    return cfg


def tracking_uri_schemes() -> Set[str]:
    """The URI schemes MLflow has a tracking store for, its own and installed plugins'."""
    from mlflow.store.db.db_types import DATABASE_ENGINES

    plugins = importlib.metadata.entry_points(group='mlflow.tracking_store')
    return {'', 'file', 'http', 'https', 'databricks', 'databricks-uc', 'uc', *DATABASE_ENGINES,
            *(plugin.name for plugin in plugins)}


def message_of(error: BaseException) -> str:
    """The message of an error as a user should read it (``KeyError`` quotes its own)."""
    return error.args[0] if isinstance(error, KeyError) and error.args else str(error)


def _built(build: Callable[[TrialSpec], Config], spec: TrialSpec, stage: str,
           where: str) -> Config:
    """A stage config of ``spec``, with override errors turned into :class:`InvalidSetting`."""
    try:
        return build(spec)
    except (KeyError, TypeError) as error:
        raise InvalidSetting(f'{where}: {stage} override: {message_of(error)}') from error
    except AttributeError as error:
        raise InvalidSetting(f'{where}: {getattr(spec, stage + "_config")} has no {error.name}: '
                             'every stage config needs a data_root') from error


def _check_settings_used(spec: TrialSpec, cfg1: Config, explicit: Collection[str],
                         where: str) -> None:
    """A setting the user gave must change the trial."""
    from harness.stage_configs import saliency_loss_type

    loss_type = saliency_loss_type(cfg1)
    if 'saliency_threshold' in explicit and loss_type != 'IRDLoss':
        raise InvalidSetting(
            f'{where}: saliency_threshold is set, but {spec.stage1_config} trains with loss_sal '
            f'{loss_type}, which has no threshold (only IRDLoss has): every value would train '
            'the same trial; remove saliency_threshold or use an IRDLoss stage-1 config')
    if spec.task == 'wsss':
        for key in ('labelled_fraction', 'split_file'):
            if key in explicit:
                raise InvalidSetting(
                    f'{where}: {key} is set, but task is wsss, which trains stage 2 on '
                    f'pseudo-masks only: remove {key}, or use task ssss')
    elif spec.split_file and 'labelled_fraction' in explicit:
        raise InvalidSetting(f'{where}: both split_file and labelled_fraction are set; the split '
                             'file decides the labelled ids: keep one of them')


def _check_stage_roles(spec: TrialSpec, cfg1: Config, cfg2: Config, where: str) -> None:
    """Stage 1 must write pseudo-masks when stage 2 needs them; stage 2 must have its parts."""
    from harness.stage_configs import STAGE2_PARTS

    missing = [part for part in STAGE2_PARTS if part not in cfg2]
    if missing:
        raise InvalidSetting(
            f'{where}: {spec.stage2_config} has no {missing}: a stage-2 config defines its '
            'training set as labelled_dataset + pseudo_labelled_dataset (see '
            'mm_configs/_base_/datasets/shapes_voc_stage2.py)')
    needs_pseudo_masks = spec.task == 'wsss' or spec.split_file or spec.labelled_fraction < 1
    hooks = [hook.get('type') for hook in cfg1.get('custom_hooks', [])]
    if needs_pseudo_masks and 'PAMRHook' not in hooks:
        raise InvalidSetting(
            f'{where}: {spec.stage1_config} has no PAMRHook in custom_hooks, so stage 1 writes no '
            'pseudo-masks, which stage 2 needs (task wsss, or ssss with a fraction < 1)')


# Backbone settings that do not change its weights (SyncBN is BN with synchronised statistics).
BACKBONE_KEYS_WITHOUT_WEIGHTS = ('out_indices', 'norm_cfg', 'norm_eval', 'init_cfg', 'pretrained')


def _check_stage2_init(spec: TrialSpec, cfg1: Config, cfg2: Config, where: str) -> None:
    """With ``stage2_init_from_stage1``, the two backbones must be one architecture."""
    if not spec.stage2_init_from_stage1:
        return
    first, second = ({key: value for key, value in cfg.model.backbone.items()
                      if key not in BACKBONE_KEYS_WITHOUT_WEIGHTS} for cfg in (cfg1, cfg2))
    differing = sorted(key for key in first.keys() | second.keys()
                       if first.get(key) != second.get(key))
    if differing:
        raise InvalidSetting(
            f'{where}: stage2_init_from_stage1 is set, but the backbones of {spec.stage1_config} '
            f'and {spec.stage2_config} differ in {differing}: stage 2 can start from stage 1\'s '
            'weights only with the same backbone')


def _check_distinct(specs: Sequence[TrialSpec], labels: Sequence[str], stage1_cfgs: List[Config],
                    source: str) -> None:
    """No two trials may train the same thing (settings that a trial does not use aside)."""
    from harness.stage_configs import saliency_loss_type

    seen: Dict[str, str] = {}
    for spec, label, cfg1 in zip(specs, labels, stage1_cfgs):
        used = spec.resolved().to_dict()
        if spec.task == 'wsss':  # the same as ssss without labelled ids
            used.update(task='ssss', labelled_fraction=0.0, split_file=None)
        elif spec.split_file:
            used.update(labelled_fraction=None)
        if saliency_loss_type(cfg1) != 'IRDLoss':
            used.update(saliency_threshold=None)
        identity = json.dumps(used, sort_keys=True, default=str)
        if identity in seen:
            raise InvalidSetting(f'{source}: {seen[identity]} and {label} would train the same '
                                 'trial (the settings that differ, if any, are not used by it): '
                                 'remove the repeated value')
        seen[identity] = label


def _check_data(spec: TrialSpec, cfg1: Config, cfg2: Config, data_root_given: bool, where: str,
                make_bundled: bool) -> None:
    """The dataset folder, the stage-2 training split, the split file and what the stage
    configs' datasets read (a sample of ids, :mod:`harness.data.check`)."""
    from harness.data import synthetic
    from harness.data.check import QUICK_SAMPLE, check_config
    from harness.stage_configs import labelled_split

    root = Path(cfg1.data_root)
    bundled = cfg1.get('dataset_type') == 'SyntheticShapesDataset'
    named = 'data_root' if data_root_given else f'data_root of {spec.stage1_config}'
    if not root.exists():
        if bundled and not data_root_given:
            if not make_bundled:
                return
            synthetic.ensure_dataset(root)  # the configs' own bundled dataset, made on first use
        else:
            hint = (f'To put the bundled dataset there: python -m harness.data.synthetic --out '
                    f'{root}' if bundled else 'Put the dataset there or set data_root. Expected '
                    f'layout: {_layout(cfg1)}')
            raise InvalidSetting(f'{where}: dataset folder {root} ({named}) not found. {hint}')
    elif bundled:
        try:  # one of an older generator lacks files that the configs read (SaliencyErrors/)
            synthetic.check_dataset(root)
        except ValueError as error:
            raise InvalidSetting(f'{where}: dataset folder {root} ({named}): {error}') from error
    try:
        labelled_split(spec, cfg2)
    except (FileNotFoundError, ValueError) as error:
        raise InvalidSetting(f'{where}: {error}') from error
    for cfg, config in ((cfg1, spec.stage1_config), (cfg2, spec.stage2_config)):
        problems = check_config(cfg, sample=QUICK_SAMPLE)
        if problems:
            raise InvalidSetting(
                f'{where}: dataset {root} does not hold what {config} reads: '
                + '; '.join(problems.lines())
                + f' (every problem: python -m harness.data.check {root} --config {config})')


def _layout(cfg: Config) -> str:
    """The folder layout the config's dataset class expects (for messages)."""
    import harness.eps  # noqa: F401  (registers the dataset classes)
    from harness.eps.datasets import VOC_LAYOUT
    from mmseg.registry import DATASETS

    dataset_class = DATASETS.get(cfg.get('dataset_type', ''))
    return getattr(dataset_class, 'LAYOUT', VOC_LAYOUT)
