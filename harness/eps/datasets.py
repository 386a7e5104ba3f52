"""Datasets in the PASCAL VOC layout with image-level labels and saliency maps."""
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

VOC_LAYOUT = ('<data_root>/JPEGImages/<id>.jpg, <data_root>/SegmentationClassAug/<id>.png '
              '(or SegmentationClass), <data_root>/SALImages/<id>.png, '
              '<data_root>/ImageSets/Segmentation/<split>.txt, optionally <data_root>/cls_labels.npy')
COCO_LAYOUT = ('<data_root>/JPEGImages/{train2014,val2014}/<id>.jpg, '
               '<data_root>/SegmentationClass/{train2014,val2014}/<id>.png (class indices 0..80), '
               '<data_root>/SALImages/<id>.png, <data_root>/ImageSets/{train,val}.txt, '
               '<data_root>/cls_labels.npy')


def _voc_colormap(n: int) -> np.ndarray:
    """The PASCAL VOC colormap: label i -> RGB from the interleaved bits of i; (n, 3) uint8."""
    colours = np.zeros((n, 3), dtype=np.uint8)
    for label in range(n):
        value, rgb = label, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        colours[label] = rgb
    return colours


VOC_COLORMAP = _voc_colormap(256)  # (256, 3) uint8, row i the colour of label i

# The bundled dataset's classes, and the kinds of saliency error it injects with the value of
# each in its ``SaliencyErrors/<id>.png`` (0: no injected error).
SHAPES_CLASSES = ('background', 'disc', 'square', 'triangle', 'cross', 'ring')
SHAPES_PALETTE = VOC_COLORMAP[:len(SHAPES_CLASSES)].tolist()
ERROR_KINDS = ('missing_class', 'missing_object', 'false_coverage')
ERROR_KIND_VALUES = {kind: index + 1 for index, kind in enumerate(ERROR_KINDS)}

# MS COCO's 80 object classes in the order of its category ids (the order of WSSS code's
# cls_labels.npy and label PNGs: index i is the i-th class, 0 is background).
COCO_CLASSES = (
    'background', 'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck',
    'boat', 'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')


def read_class_labels_from_mask(mask_path: str, num_classes: int) -> np.ndarray:
    """Image-level labels of the classes present in a mask.

    Args:
        mask_path (str): Label PNG of class indices (0 background, 255 ignore).
        num_classes (int): Number of foreground classes ``C``.

    Returns:
        np.ndarray: float32 ``[C]`` in {0, 1}.

    Raises:
        ValueError: If the mask holds an index outside ``0..C`` and 255 (naming the file).
    """
    values = np.unique(np.asarray(Image.open(mask_path)))
    unknown = [int(v) for v in values if v > num_classes and v != 255]
    if unknown:
        raise ValueError(f'mask {mask_path} holds class indices {unknown}; valid are 0..'
                         f'{num_classes} (0 = background) and 255 (ignore)')
    labels = np.zeros(num_classes, dtype=np.float32)
    present = [int(v) for v in values if 0 < v <= num_classes]
    labels[np.asarray(present, dtype=np.int64) - 1] = 1.0
    return labels


@DATASETS.register_module()
class WSSSVOCDataset(BaseSegDataset):
    """PASCAL VOC 2012 for weak supervision: images, image-level labels, saliency, masks.

    Layout (relative to ``data_root``, as in the EPS code)::

        JPEGImages/<id>.jpg                 data_prefix['img_path']
        SegmentationClassAug/<id>.png       data_prefix['seg_map_path']   (optional)
        SALImages/<id>.png                  data_prefix['saliency_path']  (optional)
        SaliencyErrors/<id>.png             data_prefix['saliency_errors_path'] (optional: the
                                            bundled data's per-pixel saliency error kinds)
        ImageSets/Segmentation/<split>.txt  ann_file, one id per line
        cls_labels.npy                      labels_file (optional)

    A folder is used only if its key is in ``data_prefix``. Each sample gets ``img_id``, the
    paths, and ``class_labels`` (float32 ``[C]``, foreground classes) from ``labels_file``
    (``np.save`` of ``{id: [C] array}``, as WSSS code) or else from the masks. Every file is
    checked when the dataset is built.

    Args:
        labels_file (str, optional): ``cls_labels.npy``, relative to ``data_root`` unless
            absolute. Default: None (labels from the masks).
        saliency_suffix (str): Suffix of the saliency maps. Default: '.png'.
        img_suffix (str): Suffix of the images. Default: '.jpg'.
        seg_map_suffix (str): Suffix of the masks. Default: '.png'.
        **kwargs: ``BaseSegDataset`` arguments (``ann_file``, ``data_root``, ``data_prefix``,
            ``pipeline``, ...).

    Raises:
        FileNotFoundError: If the split file, a folder, a sample's file or ``labels_file`` is
            missing.
        KeyError: If an image has no entry in ``labels_file``.
        ValueError: If an image's labels have the wrong shape or cannot be found, or a mask
            holds an unknown class index.
    """

    METAINFO = PascalVOCDataset.METAINFO
    LAYOUT = VOC_LAYOUT  # named in the errors for a missing split file or folder

    def __init__(self, labels_file: Optional[str] = None, saliency_suffix: str = '.png',
                 img_suffix: str = '.jpg', seg_map_suffix: str = '.png', **kwargs) -> None:
        self.labels_file = labels_file
        self.saliency_suffix = saliency_suffix
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    @property
    def num_foreground_classes(self) -> int:
        # ``metainfo`` returns a deep copy (slow, called once per image): read the dataset's own.
        return len(self._metainfo['classes']) - 1

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'{type(self).__name__}: split file {self.ann_file} not found '
                                    f'(data_root={self.data_root}). Expected layout: {self.LAYOUT}')
        for key, folder in self.data_prefix.items():
            if folder and not osp.isdir(folder):
                raise FileNotFoundError(f'{type(self).__name__}: folder {folder} '
                                        f"(data_prefix['{key}']) not found. Expected layout: "
                                        f'{self.LAYOUT}')
        data_list = super().load_data_list()
        saliency_dir = self.data_prefix.get('saliency_path')
        errors_dir = self.data_prefix.get('saliency_errors_path')
        labels_by_id = self._load_labels_file()
        for info in data_list:
            image_id = osp.splitext(osp.basename(info['img_path']))[0]
            info['img_id'] = image_id
            if saliency_dir is not None:
                info['saliency_path'] = osp.join(saliency_dir, image_id + self.saliency_suffix)
            if errors_dir is not None:
                info['saliency_errors_path'] = osp.join(errors_dir, image_id + '.png')
            for key in ('img_path', 'seg_map_path', 'saliency_path', 'saliency_errors_path'):
                if key in info and not osp.isfile(info[key]):
                    raise FileNotFoundError(f'{type(self).__name__}: {key} of {image_id!r} not '
                                            f'found: {info[key]} (split {self.ann_file})')
            info['class_labels'] = self._class_labels(image_id, info, labels_by_id)
        return data_list

    def _load_labels_file(self) -> Optional[Dict[str, np.ndarray]]:
        if self.labels_file is None:
            return None
        path = self.labels_file if osp.isabs(self.labels_file) else osp.join(
            self.data_root or '', self.labels_file)
        if not osp.isfile(path):
            raise FileNotFoundError(f'{type(self).__name__}: labels_file {path} not found')
        return np.load(path, allow_pickle=True).item()

    def _class_labels(self, image_id: str, info: dict,
                      labels_by_id: Optional[Dict[str, np.ndarray]]) -> np.ndarray:
        if labels_by_id is not None:
            if image_id not in labels_by_id:
                raise KeyError(f'{type(self).__name__}: image {image_id!r} has no entry in '
                               f'labels_file {self.labels_file}')
            labels = np.asarray(labels_by_id[image_id], dtype=np.float32)
            if labels.shape != (self.num_foreground_classes, ):
                raise ValueError(f'{type(self).__name__}: labels of {image_id!r} in '
                                 f'{self.labels_file} have shape {labels.shape}, expected '
                                 f'({self.num_foreground_classes},)')
            return labels
        if 'seg_map_path' not in info:
            raise ValueError(f'{type(self).__name__}: no image-level labels for {image_id!r}: give '
                             "labels_file or a mask folder (data_prefix['seg_map_path'])")
        return read_class_labels_from_mask(info['seg_map_path'], self.num_foreground_classes)


@DATASETS.register_module()
class SyntheticShapesDataset(WSSSVOCDataset):
    """The bundled dataset (``python -m harness.data.synthetic``): VOC layout, shape classes."""

    METAINFO = dict(classes=SHAPES_CLASSES, palette=SHAPES_PALETTE)


@DATASETS.register_module()
class WSSSCOCODataset(WSSSVOCDataset):
    """MS COCO 2014 for weak supervision, in the layout of the EPS code (``script/coco_eps.sh``)::

        JPEGImages/{train2014,val2014}/<id>.jpg         data_prefix['img_path']
        SegmentationClass/{train2014,val2014}/<id>.png  data_prefix['seg_map_path'] (0..80, 255)
        SALImages/<id>.png                              data_prefix['saliency_path']
        ImageSets/{train,val}.txt                       ann_file (COCO_train2014_000000000009...)
        cls_labels.npy                                  labels_file ({id: float32[80]})

    80 classes plus background (:data:`COCO_CLASSES`); everything else is
    :class:`WSSSVOCDataset`'s.
    """

    # Label PNGs in the VOC colormap, extended to 81 labels.
    METAINFO = dict(classes=COCO_CLASSES,
                    palette=VOC_COLORMAP[:len(COCO_CLASSES)].tolist())
    LAYOUT = COCO_LAYOUT
