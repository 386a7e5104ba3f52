"""How long the stage-1 cache key's data fingerprint takes on a dataset of VOC's size.

    python benchmarks/bench_fingerprint.py                     # 10,582 ids, VOC's layout
    python benchmarks/bench_fingerprint.py --ids 100000 --repeat 3
    python benchmarks/bench_fingerprint.py --data-root data/VOCdevkit/VOC2012   # a real one

Without ``--data-root`` it writes a VOC layout in a temporary folder: per id a JPEG, a mask, a
saliency map and a saliency-error map (small files: the fingerprint reads no file, it stats
them), the split lists and ``cls_labels.npy``. Each repeat is one call of
:func:`harness.data.fingerprint.dataset_fingerprint` (one per trial start). Freshly written
files are in the kernel's cache; on a real dataset the first call may read metadata from disk.
Prints a table: files, seconds of the first call and of the best.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from harness.data.fingerprint import _file_stats, dataset_fingerprint  # noqa: E402

FOLDERS = {'JPEGImages': '.jpg', 'SegmentationClass': '.png', 'SALImages': '.png',
           'SaliencyErrors': '.png'}


def write_layout(root: Path, ids: int) -> None:
    """A VOC layout of ``ids`` ids whose files hold a few bytes each."""
    names = [f'{index:06d}' for index in range(ids)]
    for folder, suffix in FOLDERS.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / f'{name}{suffix}').write_bytes(b'x' * 16)
    (root / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (root / 'ImageSets' / 'Segmentation' / 'train_aug.txt').write_text(
        ''.join(f'{name}\n' for name in names))
    (root / 'cls_labels.npy').write_bytes(b'x' * 16)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ids', type=int, default=10582, help='ids of the generated layout')
    parser.add_argument('--repeat', type=int, default=5, help='calls to time')
    parser.add_argument('--data-root', type=Path, help='fingerprint this folder instead')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='bench_fingerprint-') as scratch:
        root = args.data_root
        if root is None:
            root = Path(scratch) / 'voc'
            write_layout(root, args.ids)
        files = sum(1 for _ in _file_stats(root))
        seconds = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            dataset_fingerprint(root)
            seconds.append(time.perf_counter() - started)
    print(f'| dataset | files | first call (s) | best of {args.repeat} (s) |')
    print('|---|---:|---:|---:|')
    print(f'| {args.data_root or f"generated VOC layout, {args.ids} ids"} | {files} | '
          f'{seconds[0]:.3f} | {min(seconds):.3f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
