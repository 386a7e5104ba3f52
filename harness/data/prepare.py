"""Turns the PASCAL VOC 2012 + SBD and MS COCO 2014 downloads into the layouts the configs read.

Command line::

    python -m harness.data.prepare voc --voc VOC --sbd SBD --saliency SAL [--out DATA_ROOT] \\
        [--workers N]
    python -m harness.data.prepare coco --train-images TRAIN --val-images VAL \\
        --annotations ANN --saliency SAL [--out DATA_ROOT] [--workers N]

Every input is a folder or an archive as downloaded (tar, tgz or zip), read in place:

- ``VOC``: ``VOCtrainval_11-May-2012.tar`` or its ``VOCdevkit/`` folder.
- ``SBD``: ``benchmark.tgz`` or its ``benchmark_RELEASE/`` folder (``dataset/cls/<id>.mat``,
  struct ``GTcls`` with field ``Segmentation``; ``dataset/{train,val}.txt``).
- ``TRAIN`` / ``VAL``: ``train2014.zip`` / ``val2014.zip`` or their folders.
- ``ANN``: ``annotations_trainval2014.zip`` or its ``annotations/`` folder
  (``instances_{train,val}2014.json``).
- ``SAL``: a folder or zip of ``<id>.png`` saliency maps (every training id needs one).

Writes the layouts of ``mm_configs/_base_/datasets/{voc12aug,coco14}_*.py`` (docs/data.md).
Inputs are checked before anything is written: problems exit with status 2 and one line giving
each kind's count and first examples. Images from input folders are hard-linked (symlinked
across file systems). A rerun keeps right files, restores missing ones and rewrites others.
"""
import argparse
import functools
import io
import json
import os
import tarfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from harness.data.synthetic import VOC_COLORMAP
from harness.eps.checkpoints import replaced_whole

VOC_DATA_ROOT = 'data/VOCdevkit/VOC2012'  # data_root of mm_configs/_base_/datasets/voc12aug_*.py
COCO_DATA_ROOT = 'data/coco2014'  # data_root of mm_configs/_base_/datasets/coco14_*.py
VOC_NUM_CLASSES = 20
COCO_NUM_CLASSES = 80
IGNORE = 255
EXAMPLES = 3  # ids or files named per kind of problem

# A file's content as a picklable reference for worker processes:
# ('file', path) | ('tar', archive, offset, size) | ('zip', archive, member) | ('bytes', data)
Ref = tuple


class InputError(ValueError):
    """Inputs that cannot be converted; the message has the count and first examples of each
    kind of problem."""


class Problems:
    """Problems found in the inputs, grouped by kind: count and first examples."""

    def __init__(self) -> None:
        self.by_kind: Dict[str, List[str]] = defaultdict(list)

    def add(self, kind: str, examples: Iterable[str]) -> None:
        examples = list(examples)
        if examples:
            self.by_kind[kind].extend(examples)

    def raise_if_any(self) -> None:
        if self.by_kind:
            lines = [f'{len(examples)} {kind} (e.g. {", ".join(examples[:EXAMPLES])})'
                     for kind, examples in self.by_kind.items()]
            raise InputError('refused, nothing written: ' + '; '.join(lines))


class Source:
    """Read access to the files of a download: a folder, a tar archive (any compression) or a zip.

    Args:
        path: The folder or archive.
        what: Its name in error messages.
        keep: For a compressed tar, which members (relative POSIX names) to read into memory
            when it is opened; reading another raises InputError.

    Raises:
        InputError: ``path`` is not a folder, tar or zip archive.
    """

    def __init__(self, path: str, what: str, keep: Callable[[str], bool] = lambda name: True):
        self.path = Path(path)
        self.what = what
        self._cache: Dict[str, bytes] = {}
        self._offsets: Dict[str, Tuple[int, int]] = {}
        if self.path.is_dir():
            self.kind = 'folder'
            self.names = sorted(
                (Path(folder) / name).relative_to(self.path).as_posix()
                for folder, _, files in os.walk(self.path, followlinks=True) for name in files)
        elif zipfile.is_zipfile(self.path):
            self.kind = 'zip'
            with zipfile.ZipFile(self.path) as archive:
                self.names = [info.filename for info in archive.infolist() if not info.is_dir()]
        elif self.path.is_file() and tarfile.is_tarfile(self.path):
            self.kind = 'tar'
            try:
                with tarfile.open(self.path, 'r:') as archive:
                    self._offsets = {_clean(m.name): (m.offset_data, m.size)
                                     for m in archive.getmembers() if m.isfile()}
            except tarfile.ReadError:  # compressed: one streaming pass
                with tarfile.open(self.path, 'r|*') as archive:
                    for member in archive:
                        if member.isfile():
                            self._offsets[_clean(member.name)] = (-1, member.size)
                            if keep(_clean(member.name)):
                                self._cache[_clean(member.name)] = archive.extractfile(
                                    member).read()
            self.names = list(self._offsets)
        else:
            raise InputError(f'{what} {path}: not found, or not a folder, tar or zip archive')

    def find_root(self, marker: str) -> str:
        """The shortest prefix ``p`` such that ``p + marker`` is a member (``''`` at the top)."""
        prefixes = [name[:-len(marker)] for name in self.names
                    if name == marker or name.endswith('/' + marker)]
        if not prefixes:
            raise InputError(f'{self.what} {self.path}: holds no {marker} (is it the right '
                             'download?)')
        return min(prefixes, key=len)

    def ref(self, name: str) -> Ref:
        if self.kind == 'folder':
            return ('file', str(self.path / name))
        if self.kind == 'zip':
            return ('zip', str(self.path), name)
        if name in self._cache:
            return ('bytes', self._cache[name])
        offset, size = self._offsets[name]
        if offset < 0:
            raise InputError(f'{self.what} {self.path}: {name} was not read from the compressed '
                             'archive; unpack it and pass the folder')
        return ('tar', str(self.path), offset, size)

    def read(self, name: str) -> bytes:
        return read_ref(self.ref(name))


def _clean(name: str) -> str:
    return name[2:] if name.startswith('./') else name


@functools.lru_cache(maxsize=8)
def _zip(path: str) -> zipfile.ZipFile:  # one open archive per worker process
    return zipfile.ZipFile(path)


def read_ref(ref: Ref) -> bytes:
    kind = ref[0]
    if kind == 'file':
        return Path(ref[1]).read_bytes()
    if kind == 'zip':
        return _zip(ref[1]).read(ref[2])
    if kind == 'tar':
        with open(ref[1], 'rb') as archive:
            archive.seek(ref[2])
            return archive.read(ref[3])
    return ref[1]


# ---- writing (worker functions: one task each, returning what was done) ----

def place_file(task: Tuple[Ref, str]) -> str:
    """Puts ``ref``'s file at ``target``: from an input folder a hard link (else a symbolic one),
    else its bytes. Returns ``'kept'`` (already right), ``'written'`` or ``'replaced'``."""
    ref, target = task
    target = Path(target)
    existed = target.exists()
    if ref[0] == 'file':
        if existed and (os.path.samefile(ref[1], target)
                        or target.read_bytes() == Path(ref[1]).read_bytes()):
            return 'kept'
        source = os.path.realpath(ref[1])
        with replaced_whole(target) as partial:
            try:
                os.link(source, partial)
            except OSError:  # another file system, or no hard links there
                os.symlink(source, partial)
    else:
        data = read_ref(ref)
        if existed and target.read_bytes() == data:
            return 'kept'
        with replaced_whole(target) as partial:
            partial.write_bytes(data)
    return 'replaced' if existed else 'written'


def mask_png(mask: np.ndarray) -> bytes:
    """A class-index mask (``uint8 [H, W]``) as a PNG with VOC's palette (255: VOC's ignore
    colour)."""
    image = Image.fromarray(mask.astype(np.uint8), mode='P')
    image.putpalette(VOC_COLORMAP.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def place_mask(task: Tuple[bytes, str]) -> str:
    """Writes the mask PNG ``data`` at ``target`` unless a file with the same pixels is there."""
    data, target = task
    target = Path(target)
    existed = target.exists()
    if existed:
        try:
            if np.array_equal(np.asarray(Image.open(target)),
                              np.asarray(Image.open(io.BytesIO(data)))):
                return 'kept'
        except OSError:
            pass
    with replaced_whole(target) as partial:
        partial.write_bytes(data)
    return 'replaced' if existed else 'written'


def class_labels(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``float32 [C]``: 1 for the classes 1..C present in ``mask`` (0 and 255 not counted)."""
    labels = np.zeros(num_classes, np.float32)
    present = np.unique(mask)
    present = present[(present > 0) & (present <= num_classes)]
    labels[present.astype(np.int64) - 1] = 1.0
    return labels


def out_of_range(mask: np.ndarray, num_classes: int) -> List[int]:
    values = np.unique(mask)
    return [int(v) for v in values if v > num_classes and v != IGNORE]


# ---- PASCAL VOC 2012 + SBD ----

MaskRead = Tuple[str, Optional[bytes], Optional[np.ndarray], str]


def read_voc_mask(task: Tuple[str, Ref]) -> MaskRead:
    """``(id, PNG bytes, labels float32[20], problem)`` of a VOC ``SegmentationClass`` palette
    PNG, kept as it is (its 255 borders included)."""
    image_id, ref = task
    data = read_ref(ref)
    try:
        image = Image.open(io.BytesIO(data))
        if image.mode not in ('P', 'L'):
            return image_id, None, None, f'{image_id}: a {image.mode} image, not class indices'
        mask = np.asarray(image)
    except OSError as error:
        return image_id, None, None, f'{image_id}: {error}'
    bad = out_of_range(mask, VOC_NUM_CLASSES)
    if bad:
        return image_id, None, None, f'{image_id}: values {bad}'
    return image_id, data, class_labels(mask, VOC_NUM_CLASSES), ''


def read_sbd_mask(task: Tuple[str, Ref]) -> MaskRead:
    """``(id, PNG bytes, labels float32[20], problem)`` of an SBD ``cls/<id>.mat``
    (``GTcls.Segmentation``), as a palette PNG."""
    from scipy.io import loadmat

    image_id, ref = task
    try:
        content = loadmat(io.BytesIO(read_ref(ref)), squeeze_me=True, struct_as_record=False)
    except (ValueError, TypeError, OSError, NotImplementedError) as error:
        return image_id, None, None, f'{image_id}.mat: not a MATLAB file ({error})'
    segmentation = getattr(content.get('GTcls'), 'Segmentation', None)
    if segmentation is None:
        return image_id, None, None, f'{image_id}.mat: no GTcls.Segmentation'
    mask = np.asarray(segmentation)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer) or mask.size == 0:
        return image_id, None, None, (f'{image_id}.mat: GTcls.Segmentation is '
                                      f'{mask.dtype}{list(mask.shape)}')
    bad = out_of_range(mask, VOC_NUM_CLASSES) or ([int(mask.min())] if mask.min() < 0 else [])
    if bad:
        return image_id, None, None, f'{image_id}.mat: values {bad}'
    mask = mask.astype(np.uint8)
    return image_id, mask_png(mask), class_labels(mask, VOC_NUM_CLASSES), ''


def _ids(source: Source, name: str) -> List[str]:
    return [line.split()[0] for line in source.read(name).decode().splitlines() if line.strip()]


def _run(step: str, func: Callable, tasks: list, workers: int) -> list:
    print(f'{step}: {len(tasks)} files', flush=True)
    if not tasks:
        return []
    from mmengine.utils import track_parallel_progress

    results = track_parallel_progress(func, tasks, nproc=max(1, min(workers, len(tasks))),
                                      chunksize=max(1, min(64, len(tasks) // (4 * workers) or 1)))
    print(flush=True)
    return results


class Writer:
    """Writes one layout under ``root`` and counts, per step, what was kept, written, replaced."""

    def __init__(self, root: Path, workers: int) -> None:
        self.root = root
        self.workers = workers
        self.counts: Dict[str, Counter] = {}

    def run(self, step: str, func: Callable, tasks: list) -> list:
        for folder in {Path(task[-1]).parent for task in tasks}:
            folder.mkdir(parents=True, exist_ok=True)
        results = _run(step, func, tasks, self.workers)
        self.counts[step] = Counter(results)
        return results

    def files(self, step: str, contents: Dict[str, bytes]) -> None:
        """Writes small files (lists, labels) given as ``{path under root: bytes}``."""
        tasks = [(('bytes', data), str(self.root / name)) for name, data in contents.items()]
        self.run(step, place_file, tasks)

    def summary(self) -> List[str]:
        return [f'  {step}: ' + ', '.join(f'{count} {what}' for what, count in
                                          sorted(counts.items()))
                for step, counts in self.counts.items()]


def ids_text(ids: Sequence[str]) -> bytes:
    return ''.join(f'{i}\n' for i in ids).encode()


def labels_npy(labels: Dict[str, np.ndarray]) -> bytes:
    """``np.save`` of ``{id: float32[C]}`` (the ``cls_labels.npy`` of WSSS code)."""
    buffer = io.BytesIO()
    np.save(buffer, labels, allow_pickle=True)
    return buffer.getvalue()


def prepare_voc(voc: str, sbd: str, saliency: str, out: str, workers: int) -> List[str]:
    """Writes the VOC 2012 + SBD layout (see the module docstring); returns the summary lines.

    Raises:
        InputError: the inputs miss files or hold malformed ones (nothing is written then).
    """
    voc_source = Source(voc, 'VOC')
    sbd_source = Source(sbd, 'SBD', keep=lambda name: name.endswith(('.txt', '.mat'))
                        and '/inst/' not in name and '/img/' not in name)
    sal_source = Source(saliency, 'saliency')
    voc_root = voc_source.find_root('ImageSets/Segmentation/train.txt')
    sbd_root = sbd_source.find_root('dataset/train.txt')
    voc_train = _ids(voc_source, voc_root + 'ImageSets/Segmentation/train.txt')
    voc_val = _ids(voc_source, voc_root + 'ImageSets/Segmentation/val.txt')
    sbd_train = _ids(sbd_source, sbd_root + 'dataset/train.txt')
    sbd_val = _ids(sbd_source, sbd_root + 'dataset/val.txt')
    train_aug = sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))
    voc_masked = sorted(set(voc_train) | set(voc_val))
    aug_ids = sorted(set(voc_masked) | set(sbd_train) | set(sbd_val))
    images = sorted(set(train_aug) | set(voc_val))

    voc_names, sbd_names = set(voc_source.names), set(sbd_source.names)
    sal_by_id = {Path(name).stem: name for name in sal_source.names if name.endswith('.png')}
    problems = Problems()
    problems.add('ids without an image in VOC JPEGImages/', [
        i for i in images if f'{voc_root}JPEGImages/{i}.jpg' not in voc_names])
    problems.add('VOC train/val ids without a mask in VOC SegmentationClass/', [
        i for i in voc_masked if f'{voc_root}SegmentationClass/{i}.png' not in voc_names])
    sbd_only = sorted(set(aug_ids) - set(voc_masked))
    problems.add('SBD ids without dataset/cls/<id>.mat', [
        i for i in sbd_only if f'{sbd_root}dataset/cls/{i}.mat' not in sbd_names])
    problems.add('train_aug ids without a saliency map <id>.png in SAL', [
        i for i in train_aug if i not in sal_by_id])
    problems.raise_if_any()

    voc_masks = _run('reading VOC masks', read_voc_mask, [
        (i, voc_source.ref(f'{voc_root}SegmentationClass/{i}.png')) for i in voc_masked], workers)
    sbd_masks = _run('reading SBD masks', read_sbd_mask, [
        (i, sbd_source.ref(f'{sbd_root}dataset/cls/{i}.mat')) for i in sbd_only], workers)
    problems.add('VOC masks that are not class indices 0..20, 255',
                 [problem for *_, problem in voc_masks if problem])
    problems.add('malformed SBD masks', [problem for *_, problem in sbd_masks if problem])
    problems.raise_if_any()
    masks = {image_id: data for image_id, data, _, _ in voc_masks + sbd_masks}
    labels = {image_id: vector for image_id, _, vector, _ in voc_masks + sbd_masks}

    root = Path(out)
    writer = Writer(root, workers)
    writer.run('JPEGImages', place_file, [
        (voc_source.ref(f'{voc_root}JPEGImages/{i}.jpg'), str(root / 'JPEGImages' / f'{i}.jpg'))
        for i in images])
    writer.run('SegmentationClass', place_file, [
        (voc_source.ref(f'{voc_root}SegmentationClass/{i}.png'),
         str(root / 'SegmentationClass' / f'{i}.png')) for i in voc_masked])
    writer.run('SegmentationClassAug', place_mask, [
        (masks[i], str(root / 'SegmentationClassAug' / f'{i}.png')) for i in aug_ids])
    with_saliency = [i for i in images if i in sal_by_id]
    writer.run('SALImages', place_file, [
        (sal_source.ref(sal_by_id[i]), str(root / 'SALImages' / f'{i}.png'))
        for i in with_saliency])
    writer.files('lists and labels', {
        'ImageSets/Segmentation/train.txt': ids_text(voc_train),
        'ImageSets/Segmentation/val.txt': ids_text(voc_val),
        'ImageSets/Segmentation/train_aug.txt': ids_text(train_aug),
        'cls_labels.npy': labels_npy({i: labels[i] for i in images})})

    frequency = np.sum([labels[i] for i in train_aug], axis=0).astype(int)
    from mmseg.datasets import PascalVOCDataset

    classes = PascalVOCDataset.METAINFO['classes'][1:]
    return [f'{root}: train_aug {len(train_aug)}, train {len(voc_train)}, val {len(voc_val)} ids',
            *writer.summary(),
            '  train_aug images per class: ' + ', '.join(
                f'{name} {count}' for name, count in zip(classes, frequency)),
            f'  skipped: {len(sal_by_id) - len(with_saliency)} saliency maps of ids in no split, '
            f'{len(images) - len(with_saliency)} val ids without a saliency map (not needed)']


# ---- MS COCO 2014 ----

def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """An object's pixels (``bool [H, W]``) from COCO's polygons, uncompressed or compressed RLE,
    decoded by pycocotools."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation['counts'], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def coco_mask(objects: Sequence[Tuple[object, int, bool]], height: int,
              width: int) -> np.ndarray:
    """The semantic mask (``uint8 [H, W]``) of an image's objects ``(segmentation, class index
    1..80, iscrowd)``.

    Where objects overlap the smaller one (by pixel count; ties: the later) wins; crowd regions
    are 255 where no object lies.
    """
    mask = np.zeros((height, width), np.uint8)
    crowd = np.zeros((height, width), bool)
    painted = []
    for order, (segmentation, index, iscrowd) in enumerate(objects):
        pixels = decode_segmentation(segmentation, height, width)
        if iscrowd:
            crowd |= pixels
        else:
            painted.append((-int(pixels.sum()), order, pixels, index))
    covered = np.zeros((height, width), bool)
    for _, _, pixels, index in sorted(painted, key=lambda item: item[:2]):
        mask[pixels] = index
        covered |= pixels
    mask[crowd & ~covered] = IGNORE
    return mask


def place_coco_mask(task: Tuple[list, int, int, str]) -> str:
    objects, height, width, target = task
    return place_mask((mask_png(coco_mask(objects, height, width)), target))


def _segmentation_problem(segmentation) -> str:
    if isinstance(segmentation, list):
        if segmentation and all(isinstance(polygon, list) and len(polygon) >= 6
                                and len(polygon) % 2 == 0 for polygon in segmentation):
            return ''
        return 'polygons need an even number (>= 6) of coordinates each'
    if isinstance(segmentation, dict) and isinstance(segmentation.get('counts'), (list, str)) \
            and isinstance(segmentation.get('size'), list):
        return ''
    return 'neither polygons nor RLE (counts, size)'


def prepare_coco(train_images: str, val_images: str, annotations: str, saliency: str, out: str,
                 workers: int) -> List[str]:
    """Writes the COCO 2014 layout (see the module docstring); returns the summary lines.

    Raises:
        InputError: the inputs miss files or hold malformed ones (nothing is written then).
    """
    annotation_source = Source(annotations, 'annotations')
    sal_source = Source(saliency, 'saliency')
    sal_by_id = {Path(name).stem: name for name in sal_source.names if name.endswith('.png')}
    problems = Problems()
    splits, skipped = {}, {}
    for split, folder, images in (('train', 'train2014', train_images),
                                  ('val', 'val2014', val_images)):
        name = f'instances_{folder}.json'
        content = json.loads(annotation_source.read(annotation_source.find_root(name) + name))
        missing_keys = [key for key in ('images', 'annotations', 'categories')
                        if key not in content]
        if missing_keys:
            raise InputError(f'annotations {annotations}: {name} has no {missing_keys}')
        categories = sorted(category['id'] for category in content['categories'])
        if len(categories) != COCO_NUM_CLASSES:
            raise InputError(f'annotations {annotations}: {name} has {len(categories)} '
                             f'categories; COCO has {COCO_NUM_CLASSES}')
        index_of = {category: index + 1 for index, category in enumerate(categories)}
        image_source = Source(images, f'{split} images')
        jpgs = {Path(member).name: member for member in image_source.names
                if member.endswith('.jpg')}
        by_image = {image['id']: image for image in content['images']}
        objects = defaultdict(list)
        for annotation in content['annotations']:
            where = f'{name} annotation {annotation.get("id")}'
            if annotation.get('image_id') not in by_image:
                problems.add('annotations of unknown images', [where])
            elif annotation.get('category_id') not in index_of:
                problems.add('annotations of unknown categories', [where])
            elif _segmentation_problem(annotation.get('segmentation')):
                problems.add('malformed segmentations', [
                    f'{where}: {_segmentation_problem(annotation.get("segmentation"))}'])
            else:
                objects[annotation['image_id']].append(
                    (annotation['segmentation'], index_of[annotation['category_id']],
                     bool(annotation.get('iscrowd', 0))))
        listed = sorted((by_image[image_id] for image_id, found in objects.items()
                         if any(not crowd for _, _, crowd in found)),
                        key=lambda image: image['file_name'])
        problems.add(f'{split} images without their file in {images}', [
            image['file_name'] for image in listed if image['file_name'] not in jpgs])
        if split == 'train':
            problems.add('train ids without a saliency map <id>.png in SAL', [
                Path(image['file_name']).stem for image in listed
                if Path(image['file_name']).stem not in sal_by_id])
        splits[split] = (folder, image_source, jpgs, listed, objects)
        skipped[split] = len(by_image) - len(listed)
    problems.raise_if_any()

    root = Path(out)
    writer = Writer(root, workers)
    labels, lists, counted = {}, {}, Counter()
    for split, (folder, image_source, jpgs, listed, objects) in splits.items():
        ids = [Path(image['file_name']).stem for image in listed]
        lists[f'ImageSets/{split}.txt'] = ids_text(ids)
        writer.run(f'JPEGImages/{folder}', place_file, [
            (image_source.ref(jpgs[image['file_name']]),
             str(root / 'JPEGImages' / folder / image['file_name'])) for image in listed])
        writer.run(f'SegmentationClass/{folder}', place_coco_mask, [
            (objects[image['id']], image['height'], image['width'],
             str(root / 'SegmentationClass' / folder / f'{image_id}.png'))
            for image_id, image in zip(ids, listed)])
        with_saliency = [i for i in ids if i in sal_by_id]
        writer.run(f'SALImages ({split})', place_file, [
            (sal_source.ref(sal_by_id[i]), str(root / 'SALImages' / f'{i}.png'))
            for i in with_saliency])
        counted[split] = len(ids)
        if split == 'train':
            for image_id, image in zip(ids, listed):
                vector = np.zeros(COCO_NUM_CLASSES, np.float32)
                for _, index, crowd in objects[image['id']]:
                    if not crowd:
                        vector[index - 1] = 1.0
                labels[image_id] = vector
    writer.files('lists and labels', {**lists, 'cls_labels.npy': labels_npy(labels)})
    frequency = np.sum(list(labels.values()), axis=0).astype(int) if labels else []
    from harness.eps.datasets import COCO_CLASSES

    common = sorted(zip(frequency, COCO_CLASSES[1:]), reverse=True)[:10]
    return [f'{root}: train {counted["train"]}, val {counted["val"]} ids '
            '(images with at least one non-crowd object)',
            *writer.summary(),
            '  train images per class, the 10 most frequent: ' + ', '.join(
                f'{name} {count}' for count, name in common),
            f'  skipped: {skipped["train"]} train and {skipped["val"]} val images without a '
            'non-crowd object']


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='dataset', required=True)
    voc = commands.add_parser('voc', help='PASCAL VOC 2012 + SBD (train_aug)')
    voc.add_argument('--voc', required=True,
                     help='VOCtrainval_11-May-2012.tar or its VOCdevkit/ folder')
    voc.add_argument('--sbd', required=True, help='benchmark.tgz or its benchmark_RELEASE/ folder')
    voc.add_argument('--out', default=VOC_DATA_ROOT,
                     help=f'output folder (default: the VOC configs\' {VOC_DATA_ROOT})')
    coco = commands.add_parser('coco', help='MS COCO 2014')
    coco.add_argument('--train-images', required=True, help='train2014.zip or its folder')
    coco.add_argument('--val-images', required=True, help='val2014.zip or its folder')
    coco.add_argument('--annotations', required=True,
                      help='annotations_trainval2014.zip or its annotations/ folder')
    coco.add_argument('--out', default=COCO_DATA_ROOT,
                      help=f'output folder (default: the COCO configs\' {COCO_DATA_ROOT})')
    for command in (voc, coco):
        command.add_argument('--saliency', required=True,
                             help='folder or zip of <id>.png saliency maps')
        command.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                             help='processes (default: one per core)')
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.exit(2, f'error: --workers {args.workers}: give 1 or more\n')
    try:
        if args.dataset == 'voc':
            summary = prepare_voc(args.voc, args.sbd, args.saliency, args.out, args.workers)
        else:
            summary = prepare_coco(args.train_images, args.val_images, args.annotations,
                                   args.saliency, args.out, args.workers)
    except InputError as error:
        parser.exit(2, f'error: {error}\n')
    print('\n'.join(summary))
    print(f'Check it against a config: python -m harness.data.check {args.out} --config CONFIG')


if __name__ == '__main__':
    main()
