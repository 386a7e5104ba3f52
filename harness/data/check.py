"""Checks a dataset folder against what a config's datasets read.

Command line::

    python -m harness.data.check DATA_ROOT --config CONFIG [--config CONFIG2] [--sample N] \\
        [--workers N]

Each WSSS dataset of the config (see :func:`datasets_of`), with ``data_root`` set to
``DATA_ROOT``, must find its split file and folders and, for every listed id, the image, saliency
map, mask and saliency error map the config reads, and labels in ``cls_labels.npy`` with one
value per foreground class. Saliency maps must be 8- or 16-bit grey PNGs; maps and masks the
image's size; mask values ``0..C`` (``C`` foreground classes) or 255. Prints one line per kind of
problem (count, first examples). Exit status: 0 if none, 1 if any, 2 for bad arguments.
"""
import argparse
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

EXAMPLES = 3  # named per kind of problem
QUICK_SAMPLE = 500  # ids per dataset whose pixels the check before training reads
_CACHE: Dict[str, 'Problems'] = {}


class Problems:
    """Problems by kind; each kind keeps its examples in order, once each."""

    def __init__(self) -> None:
        self.by_kind: Dict[str, Dict[str, None]] = OrderedDict()

    def add(self, kind: str, example: str) -> None:
        self.by_kind.setdefault(kind, OrderedDict())[example] = None

    def update(self, other: 'Problems') -> None:
        for kind, examples in other.by_kind.items():
            for example in examples:
                self.add(kind, example)

    def __bool__(self) -> bool:
        return bool(self.by_kind)

    def lines(self) -> List[str]:
        """One line per kind: ``<count> <kind>: <first examples>``."""
        return [f'{len(examples)} {kind}: ' + ', '.join(list(examples)[:EXAMPLES])
                + (', ...' if len(examples) > EXAMPLES else '')
                for kind, examples in self.by_kind.items()]


def _dataset_class(type_name: str):
    import harness.eps  # noqa: F401  (registers the dataset classes)
    from harness.eps.datasets import WSSSVOCDataset
    from mmseg.registry import DATASETS

    found = DATASETS.get(type_name) if isinstance(type_name, str) else type_name
    return found if isinstance(found, type) and issubclass(found, WSSSVOCDataset) else None


def datasets_of(cfg) -> List[dict]:
    """The WSSS dataset configs (``dict``) a config reads, once each, in config order.

    WSSS datasets: ``WSSSVOCDataset`` and its subclasses (``WSSSCOCODataset``,
    ``SyntheticShapesDataset``) with an ``ann_file``. Stage 2's ``pseudo_labelled_dataset`` is
    left out (stage 1 writes its masks).
    """
    found: Dict[str, dict] = OrderedDict()

    def visit(node, key=None) -> None:
        if key == 'pseudo_labelled_dataset':
            return
        if isinstance(node, dict):
            if 'ann_file' in node and _dataset_class(node.get('type')) is not None:
                found.setdefault(json.dumps(node, sort_keys=True, default=str), node)
            for child_key, value in node.items():
                visit(value, child_key)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
    return list(found.values())


def _joined(data_root: str, path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    return path if os.path.isabs(path) else os.path.join(data_root or '', path)


PixelTask = Tuple[str, Tuple[Tuple[str, str], ...], Tuple[str, ...], int]


def inspect_pixels(task: PixelTask) -> List[Tuple[str, str]]:
    """Problems of one image's pixels, as ``[(kind, example)]``.

    Args:
        task: ``(image path, ((grey map path, what), ...), (mask path, ...), num_classes)``.
            Grey maps are checked for format and size; masks for format (P or L), size and
            values in ``0..num_classes`` or 255.
    """
    from harness.eps.transforms import read_grey_map

    image_path, grey_maps, masks, num_classes = task
    found = []
    try:
        with Image.open(image_path) as image:
            size = image.size
    except OSError as error:
        return [('unreadable images', f'{image_path} ({error})')]
    for path, what in grey_maps:
        try:
            grey = read_grey_map(Path(path).read_bytes(), path, what)
        except OSError as error:
            found.append((f'unreadable {what}s', f'{path} ({error})'))
            continue
        except ValueError:
            with Image.open(path) as image:
                found.append((f'{what}s that are not 8- or 16-bit grey PNGs',
                              f'{path} (mode {image.mode})'))
            continue
        if grey.shape[::-1] != size:
            found.append((f'{what}s of another size than their image',
                          f'{path} ({grey.shape[1]}x{grey.shape[0]}, image {size[0]}x{size[1]})'))
    for mask_path in masks:
        try:
            with Image.open(mask_path) as image:
                mode, mask = image.mode, np.asarray(image)
        except OSError as error:
            found.append(('unreadable masks', f'{mask_path} ({error})'))
            continue
        if mode not in ('P', 'L'):
            found.append(('masks that are not class indices (palette or 8-bit grey PNG)',
                          f'{mask_path} (mode {mode})'))
            continue
        if mask.shape[::-1] != size:
            found.append(('masks of another size than their image',
                          f'{mask_path} ({mask.shape[1]}x{mask.shape[0]}, image '
                          f'{size[0]}x{size[1]})'))
        counts = np.bincount(mask.ravel(), minlength=256)
        bad = [value for value in np.flatnonzero(counts[num_classes + 1:255]) + num_classes + 1]
        if bad:
            found.append((f'masks with values outside 0..{num_classes} and 255',
                          f'{mask_path} (values {[int(value) for value in bad]})'))
    return found


def _files_and_labels(dataset: dict, sample: Optional[int]) -> Tuple[Problems, List[PixelTask]]:
    """Problems of one dataset config's split file, folders, files and labels, and the pixel
    checks of (a sample of) its ids whose files are all there."""
    problems = Problems()
    dataset_class = _dataset_class(dataset['type'])
    classes = (dataset.get('metainfo') or {}).get('classes') or dataset_class.METAINFO['classes']
    num_classes = len(classes) - 1
    root = dataset.get('data_root') or ''
    ann_file = _joined(root, dataset['ann_file'])
    if not os.path.isfile(ann_file):
        problems.add('split files missing', ann_file)
        return problems, []
    prefix = {key: _joined(root, value) for key, value in
              (dataset.get('data_prefix') or {}).items() if value}
    for key, folder in prefix.items():
        if not os.path.isdir(folder):
            problems.add('folders missing', f"{folder} (data_prefix['{key}'])")
    if problems:
        return problems, []
    with open(ann_file) as lines:
        ids = [line.strip() for line in lines if line.strip()]
    if not ids:
        problems.add('split files without ids', ann_file)
        return problems, []
    suffixes = dict(img_path=dataset.get('img_suffix', '.jpg'),
                    seg_map_path=dataset.get('seg_map_suffix', '.png'),
                    saliency_path=dataset.get('saliency_suffix', '.png'),
                    saliency_errors_path='.png')
    present = []
    for image_id in ids:
        paths = {key: os.path.join(prefix[key], image_id + suffix)
                 for key, suffix in suffixes.items() if key in prefix}
        missing = [key for key, path in paths.items() if not os.path.isfile(path)]
        for key in missing:
            problems.add(f'{FILE_NAMES[key]} missing', paths[key])
        if not missing:
            present.append(paths)

    labels_file = _joined(root, dataset.get('labels_file'))
    if labels_file is not None:
        if not os.path.isfile(labels_file):
            problems.add('labels files missing', labels_file)
        else:
            _check_labels(labels_file, ids, num_classes, problems)
    elif 'seg_map_path' not in prefix:
        problems.add('datasets without image-level labels (no labels_file, no masks)', ann_file)

    if sample is not None and len(present) > sample:
        present = [present[i] for i in np.linspace(0, len(present) - 1, sample).astype(int)]
    tasks = [(paths['img_path'],
              tuple((paths[key], FILE_NAMES[key][:-1]) for key in GREY_MAPS if key in paths),
              (paths['seg_map_path'], ) if 'seg_map_path' in paths else (), num_classes)
             for paths in present]
    return problems, tasks


FILE_NAMES = dict(img_path='images', seg_map_path='masks', saliency_path='saliency maps',
                  saliency_errors_path='saliency error maps')
GREY_MAPS = ('saliency_path', 'saliency_errors_path')


def _merged(tasks: List[PixelTask]) -> List[PixelTask]:
    """One task per image, with every grey map and mask that any dataset reads for it."""
    by_image: Dict[Tuple[str, int], Tuple[dict, dict]] = OrderedDict()
    for image_path, grey_maps, masks, num_classes in tasks:
        greys, mask_paths = by_image.setdefault((image_path, num_classes), ({}, {}))
        greys.update(dict.fromkeys(grey_maps))
        mask_paths.update(dict.fromkeys(masks))
    return [(image_path, tuple(greys), tuple(masks), num_classes)
            for (image_path, num_classes), (greys, masks) in by_image.items()]


def _check_labels(labels_file: str, ids: Sequence[str], num_classes: int,
                  problems: Problems) -> None:
    try:
        labels = np.load(labels_file, allow_pickle=True).item()
    except (OSError, ValueError, AttributeError) as error:
        problems.add('labels files that are not np.save of {id: float32[C]}',
                     f'{labels_file} ({error})')
        return
    if not isinstance(labels, dict):
        problems.add('labels files that are not np.save of {id: float32[C]}', labels_file)
        return
    for image_id in ids:
        if image_id not in labels:
            problems.add(f'ids without labels in {labels_file}', image_id)
        elif np.shape(labels[image_id]) != (num_classes, ):
            problems.add(f'labels of another length than the {num_classes} classes in '
                         f'{labels_file}', f'{image_id} (shape {np.shape(labels[image_id])})')


def check_config(cfg, sample: Optional[int] = None, workers: int = 1) -> Problems:
    """Problems of every dataset the config reads (:func:`datasets_of`), at their ``data_root``.

    With ``sample``, a result is cached for as long as the split files, labels files and folders
    keep their modification times.

    Args:
        cfg: An MMEngine config (or its dict).
        sample: Read the pixels of at most this many ids per dataset (evenly spaced over its
            split); every id when None. Files and labels are checked for every id.
        workers: Processes reading the pixels.

    Returns:
        The problems found; false when there are none.
    """
    datasets = datasets_of(cfg)
    key = None
    if sample is not None:
        key = json.dumps([datasets, sample, [_stamps(dataset) for dataset in datasets]],
                         sort_keys=True, default=str)
        if key in _CACHE:
            return _CACHE[key]
    problems, tasks = Problems(), []
    for dataset in datasets:
        found, dataset_tasks = _files_and_labels(dataset, sample)
        problems.update(found)
        tasks += dataset_tasks
    tasks = _merged(tasks)
    if workers > 1 and len(tasks) > workers:
        from multiprocessing import Pool

        with Pool(workers) as pool:
            results = pool.imap(inspect_pixels, tasks,
                                chunksize=max(1, min(64, len(tasks) // (8 * workers))))
            results = list(results)
    else:
        results = map(inspect_pixels, tasks)
    for found in results:
        for kind, example in found:
            problems.add(kind, example)
    if key is not None:
        _CACHE[key] = problems
    return problems


def _stamps(dataset: dict) -> List[Optional[int]]:
    root = dataset.get('data_root') or ''
    paths = [dataset.get('ann_file'), dataset.get('labels_file'),
             *(dataset.get('data_prefix') or {}).values()]
    stamps = []
    for path in paths:
        path = _joined(root, path)
        stamps.append(os.stat(path).st_mtime_ns if path and os.path.exists(path) else None)
    return stamps


def main(argv: Optional[Sequence[str]] = None) -> int:
    from mmengine.config import Config

    from harness.stage_configs import set_data_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('data_root', help='the dataset folder')
    parser.add_argument('--config', action='append', required=True,
                        help='a config whose datasets read it (repeat for several)')
    parser.add_argument('--sample', type=int,
                        help='read the pixels of at most N ids per dataset (default: all)')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='processes reading the pixels (default: one per core)')
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_root):
        parser.exit(2, f'error: data_root {args.data_root} is not a folder\n')
    for config in args.config:
        if not os.path.isfile(config):
            parser.exit(2, f'error: config {config} not found\n')
    problems = Problems()
    checked = 0
    for config in args.config:
        cfg = Config.fromfile(config)
        set_data_root(cfg, os.path.abspath(args.data_root))
        datasets = datasets_of(cfg)
        if not datasets:
            parser.exit(2, f'error: config {config} reads no dataset of the WSSS types '
                        '(WSSSVOCDataset, WSSSCOCODataset, SyntheticShapesDataset)\n')
        checked += len(datasets)
        problems.update(check_config(cfg, args.sample, args.workers))
    for line in problems.lines():
        print(line)
    if problems:
        print(f'{args.data_root}: {len(problems.by_kind)} kinds of problem')
        return 1
    print(f'{args.data_root}: OK ({checked} datasets of {", ".join(args.config)})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
