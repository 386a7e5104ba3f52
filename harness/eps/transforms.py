"""Pipeline transforms for saliency maps and image-level labels."""
import io
from typing import Optional

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmengine.structures import PixelData
from PIL import Image

from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS


SIXTEEN_BIT_GREY_MODES = ('I;16', 'I;16L', 'I;16B')


def read_grey_map(data: bytes, path: str, what: str = 'saliency map') -> np.ndarray:
    """Decodes a grey map (e.g. saliency in 0..255) from the bytes of its image file.

    Args:
        data (bytes): Content of the image file.
        path (str): Its path, for the error message.
        what (str): What the map is, for the error message. Default: 'saliency map'.

    Returns:
        np.ndarray: uint8 ``[H, W]``: an 8-bit grey image as stored, a 16-bit grey PNG scaled
        by ``round(v * 255 / 65535)``.

    Raises:
        ValueError: For any other mode (colour, palette, binary, 32-bit), naming the file.
    """
    with Image.open(io.BytesIO(data)) as image:
        mode = image.mode
        if mode == 'L':
            return np.array(image, dtype=np.uint8)
        if mode in SIXTEEN_BIT_GREY_MODES or (mode == 'I' and image.format == 'PNG'):
            values = np.asarray(image).astype(np.int64)  # PNG's 16-bit grey opens as I;16 or I
            if values.min() >= 0 and values.max() <= 65535:
                return ((values * 255 + 32767) // 65535).astype(np.uint8)
    raise ValueError(f'{what} {path} is a {mode!r} image; expected a grey PNG of 8 bits (0..255) '
                     'or 16 bits (0..65535, scaled to 0..255)')


@TRANSFORMS.register_module()
class LoadSaliencyMap(BaseTransform):
    """Load the saliency map of an image: a grey PNG in 0..255 as in the EPS code (a 16-bit
    grey PNG is scaled, see :func:`read_grey_map`).

    Required keys: ``saliency_path``; ``img`` (and ``img_path``) to check the size, so place it
    after ``LoadImageFromFile``. Added key: ``gt_saliency``, uint8 ``[H, W]``. Geometric
    augmentations must treat it like the image, e.g. mmcv's ``TransformBroadcaster`` with
    ``mapping=dict(img=['img', 'gt_saliency'])``.

    Args:
        backend_args (dict, optional): MMEngine file backend arguments. Default: None.

    Raises:
        KeyError: If the sample has no path key.
        FileNotFoundError: If the map does not exist.
        ValueError: If the map is not grey or differs in size from ``img``.
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
        grey = read_grey_map(data, path, self.what)
        image = results.get('img')
        if image is not None and grey.shape[:2] != image.shape[:2]:
            raise ValueError(f'{self.what} {path} is {grey.shape[1]}x{grey.shape[0]} '
                             f'(WxH) but its image {results.get("img_path")} is '
                             f'{image.shape[1]}x{image.shape[0]}; they must be the same size')
        results[self.out_key] = grey
        return results


@TRANSFORMS.register_module()
class LoadSaliencyErrors(LoadSaliencyMap):
    """Load the per-pixel saliency error kinds of the bundled dataset (``SaliencyErrors/``, a
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

    Adds ``data_sample.gt_saliency`` (``PixelData``, float32 ``[1, H, W]`` in [0, 1]), when
    loaded ``data_sample.gt_saliency_errors`` (uint8 ``[1, H, W]``), and ``class_labels``
    (float ``[C]``, foreground classes) in the metainfo, where every model method sees it.

    Args:
        meta_keys (Sequence[str]): Keys packed into the metainfo. Default: mmseg's keys plus
            ``saliency_path``, ``img_id`` and ``class_labels``.
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
