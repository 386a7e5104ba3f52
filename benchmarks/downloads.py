"""Small stand-ins for the VOC 2012, SBD and COCO 2014 downloads, in their genuine formats.

Each ``*_files`` function returns ``{member name: bytes}`` laid out as the real download
(``VOCdevkit/VOC2012/...``, ``benchmark_RELEASE/dataset/...``, ``train2014/...``,
``annotations/instances_*.json``); :func:`write_archive` packs them as tar, tgz or zip, or writes
them as a folder. Used by the tests of ``harness.data.prepare`` and by ``bench_prepare.py``.
"""
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy.io import savemat
from scipy.sparse import csc_matrix

from harness.data.synthetic import VOC_COLORMAP

# COCO 2014's 80 category ids: 1..90 with these ten unused.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91)
                          if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
Files = Dict[str, bytes]


def jpeg_bytes(height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='JPEG', quality=90)
    return buffer.getvalue()


def png_bytes(values: np.ndarray, palette: bool = False) -> bytes:
    """A PNG of ``values``: grey (8 or 16 bits, by dtype), or with VOC's palette."""
    if palette:
        image = Image.fromarray(values.astype(np.uint8), mode='P')
        image.putpalette(VOC_COLORMAP.ravel().tolist())
    else:
        image = Image.fromarray(values)
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def object_mask(height: int, width: int, objects: Iterable[Tuple[int, int, int, int, int]],
                border: int = 0) -> np.ndarray:
    """``uint8 [H, W]``: rectangles ``(class, top, left, bottom, right)`` on background 0, each
    ringed by ``border`` pixels of 255 (VOC's ignore band) when ``border`` > 0."""
    mask = np.zeros((height, width), np.uint8)
    for index, top, left, bottom, right in objects:
        if border:
            mask[max(0, top - border):bottom + border, max(0, left - border):right + border] = 255
        mask[top:bottom, left:right] = index
    return mask


def voc_files(masks: Dict[str, np.ndarray], train: Sequence[str], val: Sequence[str],
              image_sizes: Dict[str, Tuple[int, int]]) -> Files:
    """``VOCdevkit/VOC2012``: JPEGImages for every id of ``image_sizes``, SegmentationClass
    palette PNGs for ``masks``, ImageSets/Segmentation/{train,val}.txt."""
    root = 'VOCdevkit/VOC2012/'
    files = {f'{root}JPEGImages/{i}.jpg': jpeg_bytes(h, w, seed)
             for seed, (i, (h, w)) in enumerate(sorted(image_sizes.items()))}
    files.update({f'{root}SegmentationClass/{i}.png': png_bytes(mask, palette=True)
                  for i, mask in masks.items()})
    files[f'{root}ImageSets/Segmentation/train.txt'] = ''.join(f'{i}\n' for i in train).encode()
    files[f'{root}ImageSets/Segmentation/val.txt'] = ''.join(f'{i}\n' for i in val).encode()
    return files


def sbd_mat(mask: np.ndarray) -> bytes:
    """An SBD ``cls/<id>.mat``: struct ``GTcls`` with ``Segmentation``, ``Boundaries`` and
    ``CategoriesPresent`` (as in ``benchmark_RELEASE``)."""
    buffer = io.BytesIO()
    present = np.unique(mask)
    boundaries = np.empty((20, 1), dtype=object)  # one sparse logical matrix per class
    for index in range(20):
        boundaries[index, 0] = csc_matrix(mask.shape, dtype=bool)
    savemat(buffer, {'GTcls': {
        'Segmentation': mask.astype(np.uint8),
        'Boundaries': boundaries,
        'CategoriesPresent': present[(present > 0) & (present < 255)].astype(np.uint8)}},
        do_compression=True)
    return buffer.getvalue()


def sbd_files(masks: Dict[str, np.ndarray], train: Sequence[str], val: Sequence[str]) -> Files:
    """``benchmark_RELEASE/dataset``: cls/<id>.mat, train.txt, val.txt."""
    root = 'benchmark_RELEASE/dataset/'
    files = {f'{root}cls/{i}.mat': sbd_mat(mask) for i, mask in masks.items()}
    files[f'{root}train.txt'] = ''.join(f'{i}\n' for i in train).encode()
    files[f'{root}val.txt'] = ''.join(f'{i}\n' for i in val).encode()
    return files


def saliency_files(sizes: Dict[str, Tuple[int, int]]) -> Files:
    """``<id>.png`` grey saliency maps of the given ``(height, width)``."""
    files = {}
    for seed, (i, (h, w)) in enumerate(sorted(sizes.items())):
        values = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
        files[f'{i}.png'] = png_bytes(values)
    return files


def coco_instances(images: List[dict], annotations: List[dict]) -> bytes:
    """An ``instances_*.json`` with COCO's 80 categories (ids 1..90 with gaps)."""
    categories = [dict(id=i, name=f'category {i}', supercategory='thing')
                  for i in COCO_CATEGORY_IDS]
    return json.dumps(dict(info={}, licenses=[], images=images, annotations=annotations,
                           categories=categories)).encode()


def write_archive(path: Path, files: Files) -> Path:
    """``files`` as ``path``: a ``.zip``, ``.tar``, ``.tgz``/``.tar.gz``, or else a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == '.zip':
        with zipfile.ZipFile(path, 'w') as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    elif path.name.endswith(('.tar', '.tgz', '.tar.gz')):
        with tarfile.open(path, 'w' if path.suffix == '.tar' else 'w:gz') as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    else:
        for name, data in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return path
