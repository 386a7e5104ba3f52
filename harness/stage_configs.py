"""The MMEngine configs of a trial's two stages, built from its :class:`TrialSpec`.

Building them reads the config files, the split file and the training ids, and writes nothing.
"""
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from mmengine.config import Config

from harness.amp import amp_optim_wrapper
from harness.data import splits
from harness.overrides import apply_overrides
from harness.spec import TrialSpec, absolute

# The two parts of a stage-2 training set (see mm_configs/_base_/datasets/shapes_voc_stage2.py).
STAGE2_PARTS = ('labelled_dataset', 'pseudo_labelled_dataset')
# Batch norms that synchronise their statistics across workers: GPUs only.
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


def stage1_config(spec: TrialSpec) -> Config:
    """The stage-1 config file with ``spec.stage1``, data root, IRD threshold, seed and amp."""
    cfg = _common(spec, spec.stage1_config, spec.stage1)
    if saliency_loss_type(cfg) == 'IRDLoss':
        cfg.model.loss_sal.threshold = float(spec.saliency_threshold)
    return cfg


def stage2_config(spec: TrialSpec) -> Config:
    """The stage-2 config file with ``spec.stage2``, data root, seed and amp (no split yet)."""
    return _common(spec, spec.stage2_config, spec.stage2)


def _common(spec: TrialSpec, config: str, overrides: dict) -> Config:
    cfg = Config.fromfile(config)
    apply_overrides(cfg, overrides, source=config)
    set_data_root(cfg, data_root_of(spec, cfg))
    cfg.randomness = dict(seed=spec.seed)
    if spec.amp:
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper)
    return cfg


def replace_sync_bn(cfg: Config) -> List[str]:
    """Turns every ``SyncBN`` / ``MMSyncBN`` of ``cfg.model`` into ``BN``, in place.

    Returns:
        The dotted keys it changed (``model.backbone.norm_cfg``, ...).
    """
    changed: List[str] = []
    for node, key in _mappings(cfg.get('model'), 'model'):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            changed.append(key)
    return changed


def labelled_split(spec: TrialSpec, cfg: Config) -> Tuple[List[str], List[str]]:
    """``(labelled, unlabelled)`` training ids of stage 2: none labelled for WSSS, those of
    ``split_file``, or a seeded ``labelled_fraction`` of the ids of the labelled part's split.

    Raises:
        FileNotFoundError: the split file or the training split is missing.
        ValueError: the training split holds no ids, or the split file names ids that are not
            training ids.
    """
    part = cfg.labelled_dataset
    train_split = Path(part.data_root) / part.ann_file
    train_ids = splits.read_ids(train_split)
    if not train_ids:
        raise ValueError(f'training split {train_split} holds no ids: there is nothing to train '
                         'on; write one image id per line there (or point data_root at the '
                         'dataset)')
    if spec.task == 'wsss':
        return [], sorted(train_ids)
    if spec.split_file:
        return splits.split_from_file(train_ids, spec.split_file)
    return splits.split_by_fraction(train_ids, spec.labelled_fraction, spec.seed)


def saliency_loss_type(cfg: Config) -> Any:
    """The ``type`` of the stage-1 model's ``loss_sal`` (None for a CAM-only config)."""
    loss_sal = cfg.get('model', {}).get('loss_sal')
    return None if loss_sal is None else loss_sal.get('type')


def data_root_of(spec: TrialSpec, cfg: Config) -> str:
    """The trial's data root: ``spec.data_root``, else the config's, as an absolute path."""
    return spec.data_root or absolute(cfg.data_root)


def set_data_root(cfg: Config, data_root: str) -> None:
    """Points every ``data_root`` of the config (dataloaders, hooks, templates) at one folder."""
    for key in list(cfg.keys()):
        for node, _ in _mappings(cfg[key], key):
            if 'data_root' in node:
                node['data_root'] = data_root
    cfg.data_root = data_root


def _mappings(node: Any, key: str) -> Iterator[Tuple[Dict[str, Any], str]]:
    """Every dict in ``node`` (itself included, lists entered) with its dotted key below ``key``;
    a dict may be changed in place before the walk enters it."""
    if isinstance(node, dict):
        yield node, key
        for name, value in node.items():
            yield from _mappings(value, f'{key}.{name}')
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _mappings(value, f'{key}.{index}')
