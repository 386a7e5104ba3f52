"""The sweep file (plain YAML, docs/sweeps.md) -> a validated :class:`SweepConfig`.

:func:`load_sweep` reads the file (a key given twice is an error) and validates it against
:class:`SweepFile` and the :class:`~harness.spec.TrialSpec` keys; :func:`check_grid` checks the
trial of every grid point (:func:`harness.validation.check_trials`); :func:`check_resources`
compares what a trial asks for with the machines. Every error is a :class:`SweepConfigError`
naming the file, the key, the value and what is valid.
"""
import dataclasses
import itertools
import math
import sys
from pathlib import Path
from typing import (Annotated, Any, Dict, Iterator, List, Literal, Mapping, Optional, Tuple, Type,
                    Union)

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.spec import (PATH_KEYS, SEED_LIMIT, SHORT_NAMES, STAGES, TrialSpec, canonical_keys,
                          spec_keys)
from harness.strict_json import is_number
from harness.tracking import default_tracking_uri
from harness.validation import (InvalidSetting, check_folder_argument, check_trials, message_of,
                                read_yaml, sync_bn_warning)

DISTRIBUTIONS = ('grid_search', 'choice', 'uniform', 'loguniform')
# The Tune trial only drives its TorchTrainer; the CPUs belong to the Train workers. A non-zero
# request keeps Tune from launching every trial at once.
TRAINABLE_CPUS = 0.01
DEFAULT_STORAGE_PATH = 'outputs/sweeps'
# The most grid points a sweep may have: every one is built and checked before the sweep starts
# (seconds per hundred points: docs/benchmarks.md), and each grid_search point is a trial.
MAX_GRID_POINTS = 500


class SweepConfigError(InvalidSetting):
    """A sweep file that cannot run; the message names the file, key, value and valid choices."""


class _Settings(BaseModel):
    """A section of the sweep file: unknown keys, and values of another type or out of range, are
    refused; each field's ``description`` says what is valid, in the words of the error."""

    model_config = ConfigDict(extra='forbid', frozen=True, strict=True)


class Resources(_Settings):
    """What one trial's Ray Train worker group holds.

    Attributes:
        num_workers: Ray Train workers (processes of one torch.distributed group) per trial.
        cpus_per_worker: Logical CPUs per worker (Ray sets the worker's thread count from it).
        gpus_per_worker: GPUs per worker; > 0 selects NCCL, 0 selects gloo on CPU.
    """

    num_workers: int = Field(1, ge=1, description='an integer >= 1')
    cpus_per_worker: float = Field(1.0, gt=0, description='a number > 0')
    gpus_per_worker: float = Field(
        0.0, ge=0, description='a number >= 0: a fraction of one GPU (0.25 shares a GPU between '
        '4 workers) or a whole number')

    @field_validator('gpus_per_worker')
    @classmethod
    def _fraction_or_whole(cls, value: float) -> float:
        if value > 1 and not value.is_integer():
            raise ValueError('neither a fraction of one GPU nor a whole number')
        return value


class Scheduler(_Settings):
    """Tune's trial scheduler on ``val/mIoU`` (mode max).

    Attributes:
        type: ``'fifo'`` (every trial runs to the end) or ``'asha'`` (early stopping).
        grace_period: ASHA: stage-2 iterations (``val/iter``) before a trial may be stopped.
        reduction_factor: ASHA: fraction 1/reduction_factor of the trials go on at each rung.
        max_t: ASHA: stage-2 iterations of the longest trial (its ``train_cfg.max_iters``).
    """

    type: Literal['fifo', 'asha'] = Field('fifo', description="one of ['fifo', 'asha']")
    grace_period: Optional[int] = Field(
        None, ge=1, description='an integer >= 1 in stage-2 iterations (val/iter)')
    reduction_factor: float = Field(4.0, gt=1, description='a number > 1')
    max_t: Optional[int] = Field(
        None, ge=1, description='an integer >= 1 in stage-2 iterations (val/iter)')


class MlflowSettings(_Settings):
    """Where trials are tracked.

    Attributes:
        tracking_uri: Any MLflow URI; default ``sqlite:///<storage_path>/mlflow.db``.
        experiment_name: MLflow experiment; default the sweep's name.
    """

    tracking_uri: Optional[str] = Field(None, description='an MLflow tracking URI, or null')
    experiment_name: Optional[str] = Field(None, description='a string, or null')


class RaySettings(_Settings):
    """Which Ray cluster runs the sweep.

    Attributes:
        address: ``''`` starts a local Ray; ``'auto'`` or ``'host:port'`` joins a running cluster
            (``ray start --head``), whose dashboard settings then apply.
        dashboard_host: Interface the dashboard of a local Ray listens on.
        dashboard_port: Port of that dashboard.
        include_dashboard: Start the dashboard with a local Ray.
    """

    address: str = Field('', description="'' (a local Ray), 'auto' or 'host:port'")
    dashboard_host: str = Field('127.0.0.1', description='an interface, e.g. 127.0.0.1')
    dashboard_port: int = Field(8265, ge=1, le=65535, description='a TCP port 1..65535')
    include_dashboard: bool = Field(True, description='true or false')


class FailureSettings(_Settings):
    """Fault tolerance of one trial.

    Attributes:
        max_failures: Times Ray Train restarts a trial's worker group after a worker died, and
            times Ray Tune starts a trial again after its Tune actor died (with its node, say);
            either way the trial resumes from its last checkpoint. A trial that fails on every
            attempt runs up to ``(max_failures + 1) ** 2`` times. -1: without limit.
    """

    max_failures: int = Field(0, ge=-1, description='an integer >= 0, or -1 for no limit')


class SweepFile(_Settings):
    """The sweep settings of a sweep file: every top-level key but the fixed trial values."""

    name: str = Field(pattern=r'^[A-Za-z0-9][A-Za-z0-9_.-]*$', description=(
        "a folder name of letters, digits, '_', '.', '-' (it names the sweep's folder and MLflow "
        'experiment)'))
    search_space: Dict[str, Any] = Field(
        default_factory=dict, description='a mapping of keys to {distribution: values}')
    overrides: Dict[str, Any] = Field(
        default_factory=dict, description='a mapping of TrialSpec keys or stageN.<cfg key>')
    seeds: Optional[List[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]]] = Field(
        None, min_length=1, description='a non-empty list of integers in [0, 2**32), e.g. [0, 1, 2]')
    num_samples: int = Field(1, ge=1, description='an integer >= 1')
    max_concurrent_trials: Optional[int] = Field(
        None, ge=1, description='an integer >= 1, or null for no limit')
    resources: Resources = Field(default_factory=Resources, description='a mapping')
    scheduler: Scheduler = Field(default_factory=Scheduler,
                                 description="'fifo', 'asha' or a mapping with a type")
    storage_path: str = Field(DEFAULT_STORAGE_PATH, description='a folder path')
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description='a mapping')
    ray: RaySettings = Field(default_factory=RaySettings, description='a mapping')
    failure: FailureSettings = Field(default_factory=FailureSettings, description='a mapping')


SWEEP_KEYS = tuple(SweepFile.model_fields)


class SweepConfig(SweepFile):
    """A validated sweep file (:class:`SweepFile`) ready to run: paths absolute (resolved against
    the working directory), the search space parsed, the fixed trial values apart.

    Attributes:
        source: The sweep file.
        spec: Fixed :class:`~harness.trial.TrialSpec` values (canonical key names).
        search_space: ``key -> (distribution, values)``; ``values`` is the list of
            ``grid_search`` / ``choice`` or the ``[low, high]`` of ``uniform`` / ``loguniform``.
        working_dir: The folder the sweep was started from; relative paths inside the MMEngine
            configs (``data_root``) are relative to it, in the workers too.
        raw: The file's content as read, stored with the sweep so a resume can compare it.
    """

    source: str
    spec: Dict[str, Any]
    search_space: Dict[str, Tuple[str, List[Any]]]
    working_dir: str = Field(default_factory=lambda: str(Path.cwd()))
    raw: Dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def experiment_dir(self) -> Path:
        """The Tune experiment folder ``<storage_path>/<name>``."""
        return Path(self.storage_path) / self.name

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or default_tracking_uri(self.storage_path)

    @property
    def experiment_name(self) -> str:
        return self.mlflow.experiment_name or self.name


def load_sweep(path: Union[str, Path], storage_path: Optional[str] = None,
               address: Optional[str] = None) -> SweepConfig:
    """Reads and type-checks a sweep file; ``storage_path`` / ``address`` replace the file's.

    Raises:
        SweepConfigError: for a missing file, invalid YAML, an unknown key, a wrong type or an
            impossible value (the message names the key and the valid choices).
    """
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f'sweep file {path} not found')
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SweepConfigError(f'{path}: the top level must be a mapping of keys, got '
                               f'{type(raw).__name__}')
    return parse_sweep(raw, str(path), storage_path=storage_path, address=address)


def parse_sweep(raw: Mapping[str, Any], source: str, storage_path: Optional[str] = None,
                address: Optional[str] = None) -> SweepConfig:
    """Builds a :class:`SweepConfig` from the mapping of a sweep file (see :func:`load_sweep`)."""
    valid_spec_keys = spec_keys()
    raw = dict(raw)
    valid_keys = {*SWEEP_KEYS, *valid_spec_keys, *SHORT_NAMES}
    unknown = [key for key in raw if key not in valid_keys]
    if unknown:
        raise SweepConfigError(
            f'{source}: unknown key(s) {unknown}; valid keys: sweep settings {list(SWEEP_KEYS)} '
            f'and fixed trial values {valid_spec_keys} (short names {list(SHORT_NAMES)})')
    settings = {key: value for key, value in raw.items() if key in SWEEP_KEYS
                and not (key == 'storage_path' and storage_path)}
    if isinstance(settings.get('scheduler'), str):
        settings['scheduler'] = {'type': settings['scheduler']}
    file = _validated(SweepFile, settings, source)
    _check_scheduler(file.scheduler, settings.get('scheduler', {}), source)

    # TrialSpec's default config paths are relative too: ship them resolved.
    spec = {f.name: f.default for f in dataclasses.fields(TrialSpec)
            if f.name in PATH_KEYS and isinstance(f.default, str)}
    spec.update((SHORT_NAMES.get(key, key), value) for key, value in raw.items()
                if key not in SWEEP_KEYS)
    spec = {key: _absolute_if_path(key, value) for key, value in spec.items()}
    search_space = _search_space(file.search_space, source)
    overrides = {key: _absolute_if_path(key, value) for key, value in file.overrides.items()}
    both = sorted(set(overrides) & set(search_space))
    if both:
        raise SweepConfigError(f'{source}: {both} set both in overrides and in search_space; '
                               'keep each key in one of them')
    if file.seeds is not None:
        _require(len(set(file.seeds)) == len(file.seeds), source, 'seeds', file.seeds,
                 'distinct seeds (a repeated seed trains the same trial twice)')
        for where, keys in (('a fixed value', spec), ('search_space', search_space),
                            ('overrides', overrides)):
            if 'seed' in keys:
                raise SweepConfigError(f'{source}: seed is set both by seeds and in {where}; '
                                       'keep one of them')
    sampled = any(distribution != 'grid_search' for distribution, _ in search_space.values())
    _require(file.num_samples == 1 or sampled, source, 'num_samples', file.num_samples,
             '1 for a sweep without choice / uniform / loguniform axes: every repeat of a grid '
             'point would train the same trial (for repeats, use seeds: [0, 1, ...])')
    storage = storage_path or file.storage_path
    _require('://' not in storage, source, 'storage_path', storage,
             'a folder path (shared by all nodes, e.g. NFS): trials keep their work dirs there')
    try:
        check_folder_argument(storage, 'storage_path')
    except InvalidSetting as error:
        raise SweepConfigError(f'{source}: {error}') from error
    ray = file.ray if address is None else file.ray.model_copy(update={'address': address})
    return SweepConfig(**{**dict(file), 'source': source, 'spec': spec, 'ray': ray,
                          'search_space': search_space, 'overrides': overrides,
                          'storage_path': str(Path(storage).resolve()), 'raw': raw})


def grid_axes(sweep: SweepConfig) -> Dict[str, List[Any]]:
    """The values of every search-space axis (each value of ``grid_search`` / ``choice`` axes,
    both bounds of ``uniform`` / ``loguniform`` axes) and the seeds, by key."""
    axes = {key: list(values) for key, (_, values) in sweep.search_space.items()}
    if sweep.seeds is not None:
        axes['seed'] = list(sweep.seeds)
    return axes


def grid_points(sweep: SweepConfig) -> Iterator[Dict[str, Any]]:
    """The overrides of every grid point: every combination of :func:`grid_axes`, plus the fixed
    overrides.

    For a sweep of grid axes only, these are exactly its trials (once per ``num_samples``).
    """
    axes = grid_axes(sweep)
    for combination in itertools.product(*axes.values()):
        yield {**sweep.overrides, **dict(zip(axes, combination))}


def check_grid(sweep: SweepConfig, make_bundled: bool = True) -> int:
    """Builds every grid point's TrialSpec and checks them all (see
    :func:`harness.validation.check_trials`); returns the number of grid points.

    With ``make_bundled``, the bundled dataset is generated here when absent (once, before trials
    race for it); without, nothing is written.

    Raises:
        SweepConfigError: naming the grid point and what is wrong with it.
    """
    try:
        base = TrialSpec.from_mapping(sweep.spec, source=sweep.source)
    except (KeyError, ValueError, FileNotFoundError) as error:
        raise SweepConfigError(f'{sweep.source}: fixed trial values: {message_of(error)}') \
            from error
    axes = grid_axes(sweep)
    points = math.prod(len(values) for values in axes.values())
    if points > MAX_GRID_POINTS:
        sizes = ' x '.join(f'{key} {len(values)}' for key, values in axes.items())
        raise SweepConfigError(
            f'{sweep.source}: search_space has {points:,} grid points ({sizes}), more than '
            f'{MAX_GRID_POINTS:,}: each is a trial (or, for choice / uniform / loguniform axes, a '
            'value checked with every other axis) checked before the sweep starts; split the '
            'sweep into several files (one per value of an axis) or use fewer values')
    specs, labels = [], []
    for point in grid_points(sweep):
        label = f'the trial with overrides {point}'
        try:
            specs.append(base.with_overrides(point))
        except (KeyError, ValueError, FileNotFoundError) as error:
            raise SweepConfigError(f'{sweep.source}: {label} is invalid: {message_of(error)}') \
                from error
        labels.append(label)
    if any(spec.amp for spec in specs) and sweep.resources.gpus_per_worker == 0:
        raise SweepConfigError(f'{sweep.source}: amp is true, but resources.gpus_per_worker is '
                               '0: mixed precision runs on GPUs only; give the workers GPUs or '
                               'set amp: false')
    try:
        check_trials(specs, explicit_keys(sweep), sweep.source, labels, make_bundled)
    except InvalidSetting as error:
        raise SweepConfigError(str(error)) from error
    if sweep.resources.gpus_per_worker == 0:
        warning = sync_bn_warning(specs, sweep.source)
        if warning:
            print(warning, file=sys.stderr)
    return len(specs)


def explicit_keys(sweep: SweepConfig) -> List[str]:
    """The TrialSpec keys (canonical names) that the sweep file sets: fixed values, search-space
    axes, overrides and seeds; ``stageN.<key>`` config keys are not spec keys."""
    keys = [key for key in sweep.raw if key not in SWEEP_KEYS]
    keys += [key for key in [*sweep.search_space, *sweep.overrides]
             if key.partition('.')[0] not in STAGES]
    keys += ['seed'] if sweep.seeds is not None else []
    return sorted(canonical_keys(dict.fromkeys(keys), sweep.source))


def check_resources(sweep: SweepConfig, nodes: List[Dict[str, float]], where: str) -> None:
    """A trial's worker group must fit the machines that will run it.

    Args:
        sweep: The sweep (its ``resources``).
        nodes: The ``CPU`` and ``GPU`` counts of each node of the cluster (one entry for the local
            machine when Ray is not started yet).
        where: How to name those machines in the message (``'this machine'``, the address).

    Raises:
        SweepConfigError: naming the resource key, what it asks for and what there is.
    """
    resources = sweep.resources
    for name, key in (('CPU', 'cpus_per_worker'), ('GPU', 'gpus_per_worker')):
        amount = getattr(resources, key)
        largest = max((node.get(name, 0.0) for node in nodes), default=0.0)
        if amount > largest:
            raise SweepConfigError(
                f'{sweep.source}: resources.{key}: {amount:g} {name}(s) per worker, but no node of '
                f'{where} has that many (the largest has {largest:g}); Ray would leave the trials '
                f'PENDING forever. Lower it or run on a cluster that has them (--address)')
        total = sum(node.get(name, 0.0) for node in nodes)
        needed = resources.num_workers * amount + (TRAINABLE_CPUS if name == 'CPU' else 0.0)
        if needed > total:
            raise SweepConfigError(
                f'{sweep.source}: one trial needs resources.num_workers {resources.num_workers} x '
                f'{key} {amount:g} = {needed:g} {name}(s), but {where} has {total:g}; Ray would '
                'leave the trials PENDING forever')
    # A worker's CPUs and GPUs come from one node: enough in total can still be too few per node.
    fits = sum(_workers_that_fit(node, resources.cpus_per_worker, resources.gpus_per_worker)
               for node in nodes)
    if fits < resources.num_workers:
        per_node = ', '.join(f"{node.get('CPU', 0.0):g} CPU + {node.get('GPU', 0.0):g} GPU"
                             for node in nodes)
        raise SweepConfigError(
            f'{sweep.source}: one trial needs resources.num_workers {resources.num_workers} '
            f'worker(s) of {resources.cpus_per_worker:g} CPU + {resources.gpus_per_worker:g} GPU '
            f'each on one node, but the nodes of {where} ({per_node}) hold {fits}; Ray would '
            'leave the trials PENDING forever')


def _workers_that_fit(node: Dict[str, float], cpus: float, gpus: float) -> float:
    """How many workers of ``cpus`` CPUs and ``gpus`` GPUs one node of ``node``'s resources
    holds (infinitely many when a worker asks for neither)."""
    fit = math.floor(node.get('CPU', 0.0) / cpus) if cpus > 0 else math.inf
    if gpus > 0:
        fit = min(fit, math.floor(node.get('GPU', 0.0) / gpus))
    return fit


def _search_space(raw: Dict[str, Any], source: str) -> Dict[str, Tuple[str, List[Any]]]:
    space = {}
    for key, domain in raw.items():
        where = f'search_space.{key}'
        if not isinstance(domain, dict) or len(domain) != 1:
            raise SweepConfigError(f'{source}: {where}: {domain!r} must be a mapping with one of '
                                   f'{list(DISTRIBUTIONS)}, e.g. {{grid_search: [0.3, 0.5]}}')
        (distribution, values), = domain.items()
        if distribution not in DISTRIBUTIONS:
            raise SweepConfigError(f'{source}: {where}: unknown distribution {distribution!r}; '
                                   f'valid: {list(DISTRIBUTIONS)}')
        where = f'{where}.{distribution}'
        if not isinstance(values, list) or not values:
            raise SweepConfigError(f'{source}: {where}: {values!r} must be a non-empty list')
        if distribution in ('uniform', 'loguniform'):
            numeric = len(values) == 2 and all(is_number(v) for v in values)
            _require(numeric and values[0] < values[1], source, where, values,
                     'a list [low, high] of two numbers with low < high')
            _require(distribution == 'uniform' or values[0] > 0, source, where, values,
                     'bounds > 0 (loguniform samples the logarithm)')
        space[key] = (distribution, [_absolute_if_path(key, value) for value in values])
    return space


def _check_scheduler(scheduler: Scheduler, raw: Mapping[str, Any], source: str) -> None:
    if scheduler.type == 'asha':
        for key in ('grace_period', 'max_t'):
            _require(getattr(scheduler, key) is not None, source, f'scheduler.{key}', None,
                     Scheduler.model_fields[key].description)
        _require(scheduler.grace_period <= scheduler.max_t, source, 'scheduler.grace_period',
                 scheduler.grace_period, f'at most max_t ({scheduler.max_t})')
    elif raw.keys() - {'type'}:
        raise SweepConfigError(f'{source}: scheduler: {sorted(raw.keys() - {"type"})} only '
                               "apply to type 'asha'")


def _validated(model: Type[_Settings], raw: Mapping[str, Any], source: str) -> Any:
    """``model`` built from ``raw``; the first problem is one line naming the key (``section.key``
    inside a section) and what is valid (the field's ``description``)."""
    try:
        return model(**raw)
    except ValidationError as error:
        problem = error.errors()[0]
    owner, value, path, field = model, raw, [], None
    for part in problem['loc']:  # down through the sections to the field that failed
        if not (isinstance(value, dict) and part in owner.model_fields):
            break
        field, value = owner.model_fields[part], value.get(part)
        path.append(part)
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, _Settings)):
            break
        owner = field.annotation
    where = '.'.join(path)
    if problem['type'] == 'extra_forbidden':
        unknown = sorted(set(value) - set(owner.model_fields))
        raise SweepConfigError(f'{source}: {where}: unknown key(s) {unknown}; valid keys: '
                               f'{list(owner.model_fields)}') from None
    if problem['type'] == 'missing':
        raise SweepConfigError(f'{source}: {where} is missing; expected {field.description}')
    raise _invalid(source, where, value, field.description) from None


def _invalid(source: str, where: str, value: Any, valid: str) -> SweepConfigError:
    return SweepConfigError(f'{source}: {where}: {value!r} is not valid; expected {valid}')


def _require(condition: bool, source: str, where: str, value: Any, valid: str) -> None:
    if not condition:
        raise _invalid(source, where, value, valid)


def _absolute_if_path(key: str, value: Any) -> Any:
    return str(Path(value).resolve()) if key in PATH_KEYS and isinstance(value, str) else value
