"""The figure of a stage-1 run's pseudo-masks: a row per training image, from the image and
its saliency map to the CAM, IRD's dropped region and the pseudo-mask (logged with every trial).
"""
import json
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np


def write_pseudo_mask_grid(stage1_config: Path, threshold: float, out_path: Path,
                           count: int = 4) -> Path:
    """Draws ``count`` training images as rows: image | saliency | CAM (:func:`foreground_cams`)
    | dropped by IRD (N, titled with the image's IRD precision and recall) | saliency errors
    (``(saliency > threshold) xor ground-truth foreground``, saliency in [0, 1]) | pseudo-mask;
    writes a PNG to ``out_path`` and returns it. ``stage1_config``: the config dumped into a
    stage-1 folder, next to ``last_checkpoint``, ``pseudo_masks/`` and (EPS++)
    ``ird_diagnostics/`` and ``ird_diagnostics.json``; without these the N column is left out,
    without ground truth the errors column.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mmengine.config import Config
    from PIL import Image

    cfg = Config.fromfile(str(stage1_config))
    image_dir, truth_dir = _pseudo_mask_split(cfg)
    saliency_dir = Path(cfg.data_root) / cfg.train_dataloader.dataset.data_prefix['saliency_path']
    stage1_dir = stage1_config.parent
    dropped_dir = stage1_dir / 'ird_diagnostics'
    masks = sorted((stage1_dir / 'pseudo_masks').glob('*.png'))
    # IRD is measured on a split of its own (VOC: train, within train_aug): prefer images in both.
    masks = ([path for path in masks if (dropped_dir / path.name).is_file()] or masks)[:count]
    images = [Image.open(next(image_dir.glob(f'{path.stem}.*'))).convert('RGB') for path in masks]
    cams = foreground_cams(cfg, (stage1_dir / 'last_checkpoint').read_text().strip(),
                           [np.asarray(image) for image in images])
    diagnostics = stage1_dir / 'ird_diagnostics.json'
    per_image = json.loads(diagnostics.read_text())['images'] if diagnostics.is_file() else {}
    columns = ['image', 'saliency', 'CAM (foreground)']
    columns += ['dropped by IRD (N)'] if dropped_dir.is_dir() else []
    columns += [f'saliency errors (t={threshold:g})'] if truth_dir is not None else []
    columns += ['pseudo-mask']
    figure, axes = plt.subplots(len(masks), len(columns), squeeze=False,
                                figsize=(2 * len(columns), 2 * len(masks)))
    for row, mask_path, image, cam in zip(axes, masks, images, cams):
        image_id = mask_path.stem
        saliency = np.asarray(Image.open(saliency_dir / f'{image_id}.png').convert('L')) / 255.0
        blank = np.zeros(saliency.shape, bool)  # no such file for this image
        panels = [(image, None), (saliency, 'gray'), (cam, 'jet')]
        if dropped_dir.is_dir():
            dropped = dropped_dir / f'{image_id}.png'
            panels.append((np.asarray(Image.open(dropped)) > 0 if dropped.is_file() else blank,
                           'Reds'))
        if truth_dir is not None:
            truth_file = truth_dir / f'{image_id}.png'
            truth = np.asarray(Image.open(truth_file)) if truth_file.is_file() else None
            panels.append((blank if truth is None else
                           ((truth > 0) & (truth != 255)) ^ (saliency > threshold), 'Purples'))
        panels.append((Image.open(mask_path).convert('RGB'), None))
        for axis, (panel, colour_map) in zip(row, panels):
            scale = {} if colour_map is None else {'cmap': colour_map, 'vmin': 0, 'vmax': 1}
            axis.imshow(panel, **scale)
            axis.set_axis_off()
        scores = per_image.get(image_id)
        if scores is not None:
            row[0].set_title(f'IRD precision {_percent(scores.get("precision"))}\n'
                             f'recall {_percent(scores.get("recall"))}', fontsize=7)
    for axis, title in zip(axes[0], columns):
        axis.set_title(f'{title}\n{axis.get_title()}'.strip(), fontsize=8)
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    return out_path


def _pseudo_mask_split(cfg: Any) -> Tuple[Path, Optional[Path]]:
    """The image folder and ground-truth mask folder (``None`` if absent) of the split the
    config's ``PAMRHook`` writes pseudo-masks for; without the hook, the training images and
    ``None``."""
    data_root = Path(cfg.data_root)
    hook = next((hook for hook in cfg.get('custom_hooks', []) if hook['type'] == 'PAMRHook'), None)
    dataset = hook['dataloader']['dataset'] if hook else cfg.train_dataloader.dataset
    prefix = dataset['data_prefix']
    truth = prefix.get('seg_map_path') if hook else None
    truth_dir = data_root / truth if truth and (data_root / truth).is_dir() else None
    return data_root / prefix['img_path'], truth_dir


def _percent(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.0f}%'


def foreground_cams(cfg: Any, checkpoint: str, images: List[np.ndarray]) -> List[np.ndarray]:
    """The stage-1 network's foreground maps ``[H, W]`` in [0, 1] of RGB ``[H, W, 3]`` uint8
    images: the largest class score over the classes it predicts (sigmoid > 0.5), before PAMR,
    resized to the image."""
    import torch
    import torch.nn.functional as F
    from mmseg.apis import init_model

    import harness.eps  # noqa: F401  (registers the stage-1 components)
    from harness.eps.checkpoints import trusted_checkpoint_loading

    with trusted_checkpoint_loading():  # a checkpoint this project's trial wrote
        model = init_model(cfg, checkpoint, device='cpu')
    cams = []
    with torch.no_grad():
        for image in images:
            bgr = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)
            inputs = model.data_preprocessor({'inputs': [bgr]}, False)['inputs']
            maps, logits = model.decode_head(model.extract_feat(inputs))
            scores = model.class_scores(maps, (logits.sigmoid() > 0.5).to(logits.dtype))
            cam = F.interpolate(scores[:, 1:].amax(1, keepdim=True), size=image.shape[:2],
                                mode='bilinear', align_corners=False)
            cams.append(cam[0, 0].clamp(0, 1).numpy())
    return cams
