"""Pseudo-masks from a trained stage-1 model: written as palette PNGs, scored with mIoU.

:class:`~harness.eps.pamr_hook.PAMRHook` calls :func:`generate_pseudo_masks` after training;
``python -m harness.pseudo_masks`` does it on demand from a config and a checkpoint
(:func:`read_checkpoint`, :func:`load_weights`).
"""
import pickle
import re
import shutil
import textwrap
import warnings
from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.evaluator import Evaluator
from PIL import Image
from torch.utils.data import DataLoader

from mmseg.structures import SegDataSample
from .checkpoints import replaced_whole, trusted_checkpoint_loading
from .metrics import PerClassIoUMetric

MAX_REASONS_CHARS = 300  # of MMEngine's message, which names every mismatched weight


def write_palette_png(path: Path, mask: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Writes ``mask`` (``[H, W]`` class indices 0..C, 255 ignore) as a palette PNG, atomically."""
    image = Image.fromarray(mask.astype(np.uint8), mode='P')
    flat = [value for colour in palette for value in colour]
    flat += [0] * (3 * 255 - len(flat)) + [224, 224, 192]  # VOC's colour for 255 (ignore)
    image.putpalette(flat)
    with replaced_whole(path) as partial:
        image.save(partial, format='PNG')


def check_ground_truth(sample: SegDataSample, num_classes: int, ignore_index: int = 255) -> None:
    """The ground-truth mask of ``sample`` holds only ``0..num_classes-1`` and ``ignore_index``
    (the IoU would silently drop any other value).

    Raises:
        ValueError: naming the mask file and the values outside that range.
    """
    values = torch.unique(sample.gt_sem_seg.data)
    bad = [int(v) for v in values if (v < 0 or v >= num_classes) and v != ignore_index]
    if bad:
        raise ValueError(f'ground-truth mask {sample.metainfo.get("seg_map_path")} holds class '
                         f'indices {bad}; valid are 0..{num_classes - 1} and {ignore_index} '
                         '(ignore)')


def generate_pseudo_masks(model: torch.nn.Module, dataloader: DataLoader, out_dir: Path,
                          metric_prefix: str = 'pseudo') -> Dict[str, float]:
    """Runs ``model.test_step`` over ``dataloader`` and writes ``out_dir/<img_id>.png``.

    The masks (for :class:`EPSClassifier`: argmax over the ``C + 1`` maps, 0 = background) go
    to ``<out_dir>.partial`` (a stale one is replaced), renamed to ``out_dir`` when complete.
    In a distributed run each rank writes its shard and rank 0 renames.

    Args:
        model (nn.Module): The segmentor.
        dataloader (DataLoader): Loader of the split.
        out_dir (Path): Output folder; must not exist.
        metric_prefix (str): Prefix of the metric keys. Default: 'pseudo'.

    Returns:
        dict[str, float]: ``<metric_prefix>/mIoU`` and ``<metric_prefix>/IoU.<class>``
        (percent) where every sample has ground truth, else an empty dict.

    Raises:
        FileExistsError: If ``out_dir`` already exists.
        ValueError: If a ground-truth value is outside the classes and 255 (no folder is left).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f'pseudo-mask folder {out_dir} already exists; it is not '
                              'overwritten: remove it or write to another folder')
    partial = out_dir.with_name(out_dir.name + '.partial')
    rank, _ = get_dist_info()
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()

    dataset = dataloader.dataset
    evaluator = Evaluator(PerClassIoUMetric(prefix=metric_prefix))
    evaluator.dataset_meta = dataset.metainfo
    has_ground_truth = True
    num_classes = len(dataset.metainfo['classes'])
    model.eval()
    try:
        with torch.no_grad():
            for batch in dataloader:
                outputs: Sequence[SegDataSample] = model.test_step(batch)
                for sample in outputs:
                    mask = sample.pred_sem_seg.data.squeeze(0).cpu().numpy()
                    image_id = sample.metainfo.get('img_id') or Path(sample.img_path).stem
                    write_palette_png(partial / f'{image_id}.png', mask,
                                      dataset.metainfo['palette'])
                has_ground_truth &= all('gt_sem_seg' in sample for sample in outputs)
                if has_ground_truth:
                    for sample in outputs:
                        check_ground_truth(sample, num_classes)
                    evaluator.process(data_samples=outputs, data_batch=batch)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    metrics = evaluator.evaluate(len(dataset)) if has_ground_truth else {}
    metrics = {key: float(value) for key, value in metrics.items()}
    if rank == 0:
        partial.rename(out_dir)
    barrier()
    return metrics


def read_checkpoint(checkpoint: str) -> dict:
    """The content of the checkpoint file ``checkpoint`` (read on the CPU).

    Raises:
        ValueError: one line naming the file, for one that torch cannot read (not a checkpoint,
            truncated, empty) or that holds no mapping of weights.
    """
    from mmengine.runner import CheckpointLoader

    try:
        with trusted_checkpoint_loading(), warnings.catch_warnings():
            # A checkpoint the user names and so trusts: torch's warning that it is loaded with
            # weights_only=False says nothing new.
            warnings.filterwarnings('ignore', message='Environment variable TORCH_FORCE_NO_WEIGHTS')
            content = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu',
                                                      logger='silent')
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f'checkpoint {checkpoint} cannot be read as a PyTorch checkpoint '
                         f'({reason}); name a .pth file that training saved') from error
    if not isinstance(content, dict):
        raise ValueError(f'checkpoint {checkpoint} holds a {type(content).__name__}, not the '
                         'mapping of weights (state_dict) that training saves')
    return content


def load_weights(model: torch.nn.Module, content: dict, checkpoint: str, config: str) -> None:
    """Loads the weights of ``content`` (see :func:`read_checkpoint`) into ``model`` with
    MMEngine's strict loading (a checkpoint of another network must not go unnoticed).

    Raises:
        ValueError: one line naming the checkpoint and the config, with MMEngine's reasons
            (missing, unexpected and mis-shaped weights) shortened.
    """
    from mmengine.runner import load_state_dict

    state_dict = content.get('state_dict', content)
    # A model saved inside (Distributed)DataParallel has its weights under 'module.'.
    state_dict = {re.sub(r'^module\.', '', key): value for key, value in state_dict.items()}
    try:
        load_state_dict(model, state_dict, strict=True, logger='current')
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reasons = textwrap.shorten('; '.join(lines), MAX_REASONS_CHARS, placeholder=' ...')
        raise ValueError(f'checkpoint {checkpoint} does not fit the model of {config} (weights '
                         f'missing, unexpected or of another shape): {reasons}') from error


def build_model(cfg: Any) -> torch.nn.Module:
    """The model of ``cfg`` (its ``custom_imports`` imported), built as its runner builds it."""
    from mmengine.registry import DefaultScope
    from mmengine.utils import import_modules_from_strings

    from mmseg.registry import MODELS
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        return MODELS.build(cfg.model)
