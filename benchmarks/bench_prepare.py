"""Files per second of ``harness.data.prepare voc`` on generated downloads of VOC's image sizes.

    python benchmarks/bench_prepare.py [--ids 200] [--workers N] [--dir DIR]

Generates, in a temporary folder (or ``--dir``), a VOC tar with ``--ids`` JPEGs of 500x375 or
375x500 pixels (VOC's most common sizes) and their palette masks for a quarter of the ids, an SBD
tgz with MATLAB masks for the others, and a folder of saliency maps; the same inputs are also
written as folders. Then times three runs: from the archives, from the folders (images linked),
and again on the folders' output (everything already right). The table gives, per run, the
files placed in the output (images, masks, saliency maps, lists, labels), the seconds and the
files per second. The data generation and the imports (MMEngine, mmseg: about 12 s once) are not
timed.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from downloads import (object_mask, saliency_files, sbd_files, voc_files,  # noqa: E402
                       write_archive)
from harness.data.prepare import prepare_voc  # noqa: E402


def generate(ids: int, where: Path) -> dict:
    """VOC/SBD/saliency inputs for ``ids`` images, as archives and as folders."""
    rng = np.random.default_rng(0)
    names = [f'2008_{index:06d}' for index in range(ids)]
    sizes = {name: ((375, 500) if index % 3 else (500, 375)) for index, name in enumerate(names)}
    masks = {}
    for name, (height, width) in sizes.items():
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        masks[name] = object_mask(height, width, [(int(rng.integers(1, 21)), top, left,
                                                   top + height // 3, left + width // 3)],
                                  border=3)
    quarter = len(names) // 4
    voc_train, voc_val = names[:quarter // 2], names[quarter // 2:quarter]
    sbd_train = names[quarter:]
    voc = voc_files({name: masks[name] for name in names[:quarter]}, voc_train, voc_val, sizes)
    sbd = sbd_files({name: masks[name] for name in sbd_train}, sbd_train, [])
    saliency = saliency_files({name: sizes[name] for name in voc_train + sbd_train})
    return dict(
        archives=dict(voc=write_archive(where / 'VOCtrainval.tar', voc),
                      sbd=write_archive(where / 'benchmark.tgz', sbd),
                      saliency=write_archive(where / 'saliency.zip', saliency)),
        folders=dict(voc=write_archive(where / 'voc', voc), sbd=write_archive(where / 'sbd', sbd),
                     saliency=write_archive(where / 'saliency', saliency)))


def timed(inputs: dict, out: Path, workers: int) -> tuple:
    start = time.perf_counter()
    prepare_voc(str(inputs['voc']), str(inputs['sbd']), str(inputs['saliency']), str(out),
                workers)
    seconds = time.perf_counter() - start
    return sum(1 for path in out.rglob('*') if path.is_file()), seconds


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ids', type=int, default=200, help='images (default 200)')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='processes (default: one per core)')
    parser.add_argument('--dir', help='folder for the generated data (default: a temporary one)')
    args = parser.parse_args(argv)
    if args.ids < 8 or args.workers < 1:
        parser.exit(2, 'error: --ids must be 8 or more and --workers 1 or more\n')
    import mmengine.utils  # noqa: F401  (imported by the first run otherwise, and timed there)
    import mmseg.datasets  # noqa: F401

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        where = Path(folder)
        inputs = generate(args.ids, where)
        rows = [('archives (tar, tgz, zip)', *timed(inputs['archives'], where / 'out_a',
                                                    args.workers)),
                ('folders (images linked)', *timed(inputs['folders'], where / 'out_f',
                                                   args.workers)),
                ('re-run on the folders\' output', *timed(inputs['folders'], where / 'out_f',
                                                          args.workers))]
    print(f'\n{args.ids} ids of 500x375 / 375x500, {args.workers} workers, '
          f'{os.cpu_count()} cores')
    print('| inputs | files | seconds | files/s |')
    print('|---|---:|---:|---:|')
    for name, files, seconds in rows:
        print(f'| {name} | {files} | {seconds:.2f} | {files / seconds:.0f} |')


if __name__ == '__main__':
    main()
