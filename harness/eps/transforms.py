"""Pipeline transforms for saliency maps and image-level labels."""
from typing import Optional

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmengine.structures import PixelData

from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadSaliencyMap(BaseTransform):
    """Reads the saliency map of an image (as in the EPS code: a grey PNG, 0..255).

    Required keys: ``saliency_path``; ``img`` (and ``img_path``) when the size is to be checked,
    so place it after ``LoadImageFromFile``. Added key: ``gt_saliency``, ``uint8 [H, W]``.
    Geometric augmentations must treat it like the image: wrap them in mmcv's
    ``TransformBroadcaster`` with ``mapping=dict(img=['img', 'gt_saliency'])`` (see the configs).

    Args:
        backend_args: MMEngine file backend arguments.
    """

    path_key = 'saliency_path'
    out_key = 'gt_saliency'
    what = 'saliency map'
    hint = "data_prefix=dict(saliency_path='SALImages')"

    def __init__(self, backend_args: Optional[dict] = None) -> None:
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        path = results.get(self.path_key)
        if path is None:
            raise KeyError(f'{type(self).__name__}: the sample has no `{self.path_key}`; give the '
                           f'dataset that folder, e.g. {self.hint}')
        try:
            data = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError as error:
            raise FileNotFoundError(f'{self.what} not found: {path}') from error
        grey = mmcv.imfrombytes(data, flag='grayscale', backend='pillow')
        image = results.get('img')
        if image is not None and grey.shape[:2] != image.shape[:2]:
            raise ValueError(f'{self.what} {path} is {grey.shape[1]}x{grey.shape[0]} '
                             f'(WxH) but its image {results.get("img_path")} is '
                             f'{image.shape[1]}x{image.shape[0]}; they must be the same size')
        results[self.out_key] = grey
        return results


@TRANSFORMS.register_module()
class LoadSaliencyErrors(LoadSaliencyMap):
    """Reads the per-pixel saliency error kinds of the bundled dataset (``SaliencyErrors/``, a
    grey PNG: 0 none, 1 missing class, 2 missing object, 3 false object coverage).

    Required keys: ``saliency_errors_path``. Added key: ``gt_saliency_errors``, ``uint8 [H, W]``.
    For evaluation pipelines (no geometric augmentation).
    """

    path_key = 'saliency_errors_path'
    out_key = 'gt_saliency_errors'
    what = 'saliency error map'
    hint = "data_prefix=dict(saliency_errors_path='SaliencyErrors')"


@TRANSFORMS.register_module()
class PackWSSSInputs(PackSegInputs):
    """``PackSegInputs`` that also packs the saliency map and the image-level labels.

    The saliency map becomes ``data_sample.gt_saliency`` (``PixelData``, float ``[1, H, W]`` in
    [0, 1]), the saliency error kinds (when loaded) ``data_sample.gt_saliency_errors`` (uint8
    ``[1, H, W]``); the labels travel in the metainfo as ``class_labels`` (float ``[C]``, foreground
    classes only), so that every model method that sees image metas sees them too.
    """

    def __init__(self, meta_keys=('img_path', 'seg_map_path', 'saliency_path', 'img_id',
                                  'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
                                  'flip_direction', 'reduce_zero_label', 'class_labels')) -> None:
        super().__init__(meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        if 'gt_saliency' in results:
            saliency = np.ascontiguousarray(results['gt_saliency'], dtype=np.float32) / 255.0
            packed['data_samples'].gt_saliency = PixelData(data=torch.from_numpy(saliency)[None])
        if 'gt_saliency_errors' in results:
            kinds = np.ascontiguousarray(results['gt_saliency_errors'], dtype=np.uint8)
            packed['data_samples'].gt_saliency_errors = PixelData(
                data=torch.from_numpy(kinds)[None])
        return packed
