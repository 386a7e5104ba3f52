"""Hook that turns the trained stage-1 model into pseudo-masks on disk."""
import json
from pathlib import Path
from typing import Dict

from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmseg.registry import HOOKS
from .checkpoints import write_whole
from .metrics import finite_or_none
from .pseudo_masks import generate_pseudo_masks


@HOOKS.register_module()
class PAMRHook(Hook):
    """After training, writes the pseudo-masks of a split and logs their mIoU.

    The masks are :class:`EPSClassifier` predictions (refined as its ``test_cfg`` says), saved
    as palette PNGs ``<work_dir>/<out_dir>/<img_id>.png`` (``0..C``, 0 = background, 255
    ignore). Where the split has masks, ``pseudo/mIoU`` and ``pseudo/IoU.<class>`` are logged
    and saved to ``<work_dir>/<out_dir>_metrics.json``.

    Args:
        dataloader (dict): Dataloader config of the split, e.g. the training ids with the
            validation pipeline (no augmentation) and, when available, the masks.
        out_dir (str): Folder under the work dir. Default: 'pseudo_masks'.

    Raises:
        FileExistsError: In ``after_train``, if the folder exists (it is never overwritten).
    """

    priority = 'LOW'

    def __init__(self, dataloader: dict, out_dir: str = 'pseudo_masks') -> None:
        self.dataloader = dataloader
        self.out_dir = out_dir

    def after_train(self, runner: Runner) -> None:
        out_dir = Path(runner.work_dir) / self.out_dir
        dataloader = runner.build_dataloader(self.dataloader, seed=runner.seed)
        metrics: Dict[str, float] = generate_pseudo_masks(runner.model, dataloader, out_dir)
        runner.logger.info(f'pseudo-masks written to {out_dir}: {metrics}')
        if metrics:
            # A class absent from the split has IoU NaN (null in the JSON file).
            runner.visualizer.add_scalars(metrics, step=runner.iter)
            write_whole(out_dir.with_name(out_dir.name + '_metrics.json'),
                        json.dumps(finite_or_none(metrics), allow_nan=False).encode())
