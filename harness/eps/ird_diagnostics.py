"""How well IRD's dropped region ``N`` finds the saliency map's errors, against ground truth.

Errors ``E = B(M_s) XOR F`` with ``F`` the ground-truth foreground (``0 < mask < 255``);
``N = B(M_r) XOR B(M_s)`` (:meth:`IRDLoss.inconsistent_region`). Precision ``|N & E| / |N|``,
recall ``|N & E| / |E|`` and, for the error kinds ``K`` the bundled data injects
(``SaliencyErrors/``), share ``|N & K| / |N|`` (``other``: ``N`` outside every kind) and recall
``|N & K| / |K|``. Pixels marked 255 count nowhere; a ratio with an empty denominator is None.
"""
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from PIL import Image
from torch import Tensor

from mmseg.registry import HOOKS
from .arguments import is_integer
from .checkpoints import write_whole
from .datasets import ERROR_KIND_VALUES
from .ird_loss import IRDLoss

IGNORE_INDEX = 255
METRIC_PREFIX = 'ird'


def _unwrapped(runner: Runner) -> torch.nn.Module:
    """The runner's model without its DDP (or other MMEngine) wrapper."""
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def error_counts(dropped: Tensor, salient: Tensor, mask: Tensor,
                 error_kinds: Optional[Tensor] = None) -> Dict[str, int]:
    """Pixel counts of one image.

    Args:
        dropped (Tensor): ``N``, bool ``[H, W]``.
        salient (Tensor): ``B(M_s)``, bool ``[H, W]``.
        mask (Tensor): Ground-truth class indices ``[H, W]`` (0 background, 255 ignore).
        error_kinds (Tensor, optional): Values of :data:`ERROR_KIND_VALUES` ``[H, W]`` (0 none).

    Returns:
        dict[str, int]: ``dropped`` ``|N|``, ``errors`` ``|E|``, ``dropped_errors``
        ``|N & E|`` and, with ``error_kinds``, ``kind.<kind>`` ``|K|`` and ``dropped.<kind>``
        ``|N & K|``.
    """
    valid = mask != IGNORE_INDEX
    dropped = dropped & valid
    errors = (salient != (mask > 0)) & valid
    counts = {'dropped': int(dropped.sum()), 'errors': int(errors.sum()),
              'dropped_errors': int((dropped & errors).sum())}
    if error_kinds is not None:
        for kind, value in ERROR_KIND_VALUES.items():
            region = (error_kinds == value) & valid
            counts[f'kind.{kind}'] = int(region.sum())
            counts[f'dropped.{kind}'] = int((dropped & region).sum())
    return counts


def summarise(counts: Mapping[str, int]) -> Dict[str, Optional[float]]:
    """Ratios in percent (2 decimals; None for an empty denominator) of :func:`error_counts` or
    their :func:`total`: ``precision``, ``recall`` and, with kinds, ``share.<kind>``,
    ``share.other``, ``recall.<kind>``."""
    def ratio(numerator: int, denominator: int) -> Optional[float]:
        return round(100.0 * numerator / denominator, 2) if denominator else None

    summary = {'precision': ratio(counts['dropped_errors'], counts['dropped']),
               'recall': ratio(counts['dropped_errors'], counts['errors'])}
    kinds = [kind for kind in ERROR_KIND_VALUES if f'kind.{kind}' in counts]
    if kinds:
        on_kinds = 0
        for kind in kinds:
            summary[f'share.{kind}'] = ratio(counts[f'dropped.{kind}'], counts['dropped'])
            summary[f'recall.{kind}'] = ratio(counts[f'dropped.{kind}'], counts[f'kind.{kind}'])
            on_kinds += counts[f'dropped.{kind}']
        summary['share.other'] = ratio(counts['dropped'] - on_kinds, counts['dropped'])
    return summary


def total(per_image: Sequence[Mapping[str, int]]) -> Dict[str, int]:
    """The sum of per-image :func:`error_counts`."""
    summed: Dict[str, int] = {}
    for counts in per_image:
        for key, value in counts.items():
            summed[key] = summed.get(key, 0) + value
    return summed


@HOOKS.register_module()
class IRDDiagnosticsHook(Hook):
    """Measures IRD's dropped region against the saliency errors (see the module docstring).

    Every ``interval`` iterations after the loss's warm-up, and after training, rank 0 runs the
    model in eval mode on ``dataloader`` and logs the totals as ``ird/<ratio>`` (percent; NaN for
    None) with the iteration as step. After training it writes ``<work_dir>/<out_dir>.json``
    (totals, and every image's counts and ratios) and ``<work_dir>/<out_dir>/<img_id>.png``
    (``N`` as 0/255).

    Args:
        dataloader (dict): Dataloader config of a split with images, saliency, masks and image
            labels, and an un-augmented pipeline ending in ``PackWSSSInputs`` (optionally with
            ``LoadSaliencyErrors``). Rank 0 reads every image in order (workers not persistent).
        interval (int): Iterations between measurements, >= 0 (0: after training only).
            Default: 0.
        out_dir (str): Name of the outputs under the work dir. Default: 'ird_diagnostics'.

    Raises:
        ValueError: If ``interval`` is not an integer >= 0.
        TypeError: In ``before_train``, if the model's ``loss_sal`` is not an
            :class:`IRDLoss`.
    """

    priority = 'LOW'

    def __init__(self, dataloader: dict, interval: int = 0,
                 out_dir: str = 'ird_diagnostics') -> None:
        if not is_integer(interval) or interval < 0:
            raise ValueError(f'IRDDiagnosticsHook: interval must be an integer >= 0, got '
                             f'{interval!r}')
        self.dataloader = dataloader
        self.interval = interval
        self.out_dir = out_dir

    def before_train(self, runner: Runner) -> None:
        loss = getattr(_unwrapped(runner), 'loss_sal', None)
        if not isinstance(loss, IRDLoss):
            raise TypeError(f'IRDDiagnosticsHook measures IRDLoss, but the model trains with '
                            f'loss_sal {type(loss).__name__}: remove the hook from custom_hooks')
        if runner.rank == 0 and not isinstance(self.dataloader, torch.utils.data.DataLoader):
            self.dataloader = _every_image_in_order(
                runner.build_dataloader(self.dataloader, seed=runner.seed))

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        iteration = runner.iter + 1
        warmup = _unwrapped(runner).loss_sal.warmup_iters
        # The last iteration is measured by after_train.
        if (self.interval and iteration % self.interval == 0 and warmup < iteration
                < runner.max_iters):
            self._measure(runner, iteration, keep_images=False)

    def after_train(self, runner: Runner) -> None:
        self._measure(runner, runner.iter, keep_images=True)

    def _measure(self, runner: Runner, iteration: int, keep_images: bool) -> None:
        if runner.rank == 0:
            model = _unwrapped(runner)
            was_training = model.training
            model.eval()
            per_image = measure(model, self.dataloader)
            model.train(was_training)
            metrics = {f'{METRIC_PREFIX}/{key}': value
                       for key, value in summarise(total(
                           [record['counts'] for record in per_image.values()])).items()}
            runner.visualizer.add_scalars(  # NaN: no value (an empty denominator)
                {key: math.nan if value is None else value for key, value in metrics.items()},
                step=iteration)
            runner.logger.info(f'IRD diagnostics at iteration {iteration}: {metrics}')
            if keep_images:
                self._write(Path(runner.work_dir), per_image, metrics)

    def _write(self, work_dir: Path, per_image: Dict[str, Dict[str, Any]],
               metrics: Dict[str, Any]) -> None:
        folder = work_dir / self.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        for image_id, record in per_image.items():
            Image.fromarray(record.pop('dropped_region')).save(folder / f'{image_id}.png')
        report = {'total': metrics, 'images': {
            image_id: {**record['counts'], **summarise(record['counts'])}
            for image_id, record in per_image.items()}}
        write_whole(folder.with_name(f'{self.out_dir}.json'),
                    json.dumps(report, indent=1, allow_nan=False).encode())


def measure(model: torch.nn.Module, dataloader: Any) -> Dict[str, Dict[str, Any]]:
    """``N`` and the counts of every image of ``dataloader``, at its un-padded size.

    Args:
        model (nn.Module): :class:`EPSClassifier` with an :class:`IRDLoss`.
        dataloader: Loader of packed samples with ``gt_saliency``, ``gt_sem_seg`` and
            ``class_labels``.

    Returns:
        dict: ``{img_id: {'counts': error_counts(...), 'dropped_region': uint8 [H, W]}}``,
        the region 0 kept, 255 dropped.
    """
    loss: IRDLoss = model.loss_sal
    results: Dict[str, Dict[str, Any]] = {}
    with torch.no_grad():
        for batch in dataloader:
            data = model.data_preprocessor(batch, False)
            inputs, samples = data['inputs'], data['data_samples']
            maps, _ = model.decode_head(model.extract_feat(inputs))
            labels = torch.stack([torch.as_tensor(s.metainfo['class_labels']) for s in samples])
            saliency = _padded([s.gt_saliency.data for s in samples], inputs.shape[-2:])
            dropped = loss.inconsistent_region(maps, saliency.to(inputs.device),
                                               labels.to(inputs.device), inputs)
            for index, sample in enumerate(samples):
                height, width = sample.metainfo['img_shape'][:2]
                region = dropped[index, 0, :height, :width].cpu()
                kinds = sample.gt_saliency_errors.data[0] if 'gt_saliency_errors' in sample \
                    else None
                counts = error_counts(region, sample.gt_saliency.data[0] > loss.threshold,
                                      sample.gt_sem_seg.data[0], kinds)
                results[sample.metainfo['img_id']] = {
                    'counts': counts, 'dropped_region': region.numpy().astype(np.uint8) * 255}
    return results


def _every_image_in_order(built: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
    """A loader of every image of ``built``'s dataset, in order, with its batch size, collate
    function, workers and pinned memory.

    Rank 0 measures alone (a distributed sampler would give it only its share); workers are not
    persistent, so each pass ends its own.
    """
    return torch.utils.data.DataLoader(
        built.dataset, batch_size=built.batch_size, collate_fn=built.collate_fn,
        num_workers=built.num_workers, pin_memory=built.pin_memory)


def _padded(maps: List[Tensor], size: Sequence[int]) -> Tensor:
    """``[B, 1, H, W]`` from ``[1, h, w]`` maps, zero-padded at the bottom/right like the batch."""
    return torch.stack([torch.nn.functional.pad(
        m, (0, size[1] - m.shape[-1], 0, size[0] - m.shape[-2])) for m in maps])

