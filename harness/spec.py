"""What one trial runs: :class:`TrialSpec`, its keys, their values and how overrides apply.

A spec checks each value alone; :mod:`harness.validation` checks what needs configs, data or the
other trials.
"""
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from harness.data import splits
from harness.strict_json import is_integer, is_number

TASKS = ('wsss', 'ssss')
SHORT_NAMES = {'fraction': 'labelled_fraction', 'threshold': 'saliency_threshold'}
STAGES = ('stage1', 'stage2')
# Seeds go to numpy, torch and Python's random: numpy takes 0 <= seed < 2**32.
SEED_LIMIT = 2**32
# Keys holding paths: resolved before they travel to Ray workers, which run elsewhere.
PATH_KEYS = ('stage1_config', 'stage2_config', 'split_file', 'data_root')


@dataclass
class TrialSpec:
    """What one trial runs. Paths are resolved against the current directory.

    Attributes:
        stage1_config: MMEngine config of the stage-1 network (``EPSClassifier``).
        stage2_config: MMEngine config of the stage-2 segmentation network.
        task: ``'wsss'`` (stage 2 on pseudo-masks only) or ``'ssss'`` (labelled fraction with
            ground truth, pseudo-masks for the rest).
        labelled_fraction: SSSS: fraction in [0, 1] of the training ids with ground truth
            (``'1/8'`` or ``0.125``; 0 is the same trial as WSSS, 1 fully supervised).
        split_file: SSSS: a file of labelled ids (one per line) used instead of the fraction.
        saliency_threshold: The IRD threshold of ``B()`` in (0, 1) (stage 1
            ``model.loss_sal.threshold``; used only with an ``IRDLoss`` stage 1).
        seed: Seed of both stages and of the labelled subset, an integer in [0, 2**32).
        data_root: Dataset folder for both stages (default: the configs' own ``data_root``).
        amp: Mixed precision for both stages (MMEngine's ``AmpOptimWrapper``; needs CUDA).
        stage2_init_from_stage1: Stage 2's backbone starts from the trained stage-1 backbone
            (the same architecture) instead of its config's initialisation.
        stage1: MMEngine ``cfg-options`` for stage 1 (dotted keys that must exist).
        stage2: MMEngine ``cfg-options`` for stage 2.

    Raises:
        ValueError: a value of the wrong type or out of range.
        FileNotFoundError: a stage config file is missing.
    """

    stage1_config: str = 'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
    stage2_config: str = 'mm_configs/stage2/deeplabv3plus_r18-tiny_1xb16-600i_shapes-64x64.py'
    task: str = 'ssss'
    labelled_fraction: Any = 0.25
    split_file: Optional[str] = None
    saliency_threshold: float = 0.5
    seed: int = 0
    data_root: Optional[str] = None
    amp: bool = False
    stage2_init_from_stage1: bool = False
    stage1: Dict[str, Any] = field(default_factory=dict)
    stage2: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f'task {self.task!r} is not one of {TASKS}')
        self.labelled_fraction = splits.parse_fraction(self.labelled_fraction)
        threshold = self.saliency_threshold
        if not is_number(threshold) or not 0.0 < threshold < 1.0:
            raise ValueError(f'saliency_threshold {threshold!r} must be a number in (0, 1)')
        self.saliency_threshold = float(threshold)
        if not is_integer(self.seed) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f'seed {self.seed!r} must be an integer in [0, 2**32)')
        self.seed = int(self.seed)
        for name in ('amp', 'stage2_init_from_stage1'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} {getattr(self, name)!r} must be true or false')
        for name in ('split_file', 'data_root'):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f'{name} {value!r} must be a path (a non-empty string) or null')
        for stage in STAGES:
            if not isinstance(getattr(self, stage), dict):
                raise ValueError(f'{stage} {getattr(self, stage)!r} must be a mapping of '
                                 f'MMEngine config keys to values')
        for name in ('stage1_config', 'stage2_config'):
            if not Path(getattr(self, name)).is_file():
                raise FileNotFoundError(f'{name} {getattr(self, name)} not found')

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = 'the trial') -> 'TrialSpec':
        """Builds a spec from a dict; unknown keys raise ``KeyError`` with the valid ones."""
        return cls(**canonical_keys(values, source))

    def with_overrides(self, overrides: Mapping[str, Any]) -> 'TrialSpec':
        """A copy with ``overrides`` applied: spec fields (or short names) and ``stageN.<key>``."""
        values = dataclasses.asdict(self)
        values['stage1'], values['stage2'] = dict(self.stage1), dict(self.stage2)
        for key, value in overrides.items():
            stage, _, option = key.partition('.')
            if stage in STAGES and option:
                values[stage][option] = value
            else:
                values[SHORT_NAMES.get(key, key)] = value
        return TrialSpec.from_mapping(values, source='the overrides')

    def resolved(self) -> 'TrialSpec':
        """A copy whose paths are absolute (Ray workers run in other directories)."""
        return dataclasses.replace(self, **{key: absolute(getattr(self, key)) for key in PATH_KEYS})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def short_id(self) -> str:
        """A readable, unique name for the trial's work dir."""
        digest = digest_of(json.dumps(self.to_dict(), sort_keys=True, default=str))
        fraction = f'-f{self.labelled_fraction:g}' if self.task == 'ssss' else ''
        return f'{self.task}{fraction}-t{self.saliency_threshold:g}-s{self.seed}-{digest}'


def spec_keys() -> list:
    return [f.name for f in dataclasses.fields(TrialSpec)]


def canonical_keys(values: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """``values`` with short names replaced by the field names; unknown keys raise ``KeyError``."""
    valid = spec_keys()
    resolved = {}
    for key, value in values.items():
        name = SHORT_NAMES.get(key, key)
        if name not in valid:
            raise KeyError(f'unknown key {key!r} in {source}; valid keys: {valid} '
                           f'(short names: {SHORT_NAMES})')
        resolved[name] = value
    return resolved


def absolute(path: Optional[str]) -> Optional[str]:
    return None if path is None else str(Path(path).resolve())


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
