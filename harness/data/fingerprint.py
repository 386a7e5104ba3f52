"""A cheap digest of a dataset folder that changes when its data does (the stage-1 cache key).

A dataset written by :mod:`harness.data.synthetic` is named by its generator's version and
settings (seed, sizes, error rates): the generator is deterministic, so a dataset regenerated
with the same settings is the same data. Any other dataset is named by the path, size and
modification time of every file under its folder (split lists, images, masks, saliency maps,
label files), following symbolic links: stat calls only, no file is read. Adding, removing,
rewriting or touching a file changes the digest.
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Set, Tuple, Union

SYNTHETIC_GENERATOR = 'harness.data.synthetic'
INFO_FILE = 'dataset_info.json'


def dataset_fingerprint(root: Union[str, Path]) -> str:
    """A 16-hex-digit digest of the dataset in ``root`` (see the module docstring); ``'absent'``
    for a folder that does not exist."""
    root = Path(root)
    if not root.is_dir():
        return 'absent'
    digest = hashlib.sha256()
    generator = _synthetic_generator(root)
    if generator is not None:
        digest.update(f'{SYNTHETIC_GENERATOR}\0{generator}'.encode())
    else:
        for relative, size, mtime_ns in _file_stats(root):
            digest.update(f'{relative}\0{size}\0{mtime_ns}\n'.encode())
    return digest.hexdigest()[:16]


def _synthetic_generator(root: Path) -> Union[str, None]:
    """The generator version and settings of a synthetic dataset (canonical JSON), else None."""
    try:
        info = json.loads((root / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get('generator') != SYNTHETIC_GENERATOR:
        return None
    return json.dumps({'generator_version': info.get('generator_version'),
                       'config': info.get('config')}, sort_keys=True)


def _file_stats(root: Path) -> Iterator[Tuple[str, int, int]]:
    """``(path relative to root, size in bytes, mtime in ns)`` of every file under ``root``,
    in sorted order; a folder reached twice through symbolic links is walked once."""
    seen: Set[Tuple[int, int]] = set()

    def walk(folder: str, prefix: str) -> Iterator[Tuple[str, int, int]]:
        status = os.stat(folder)
        if (status.st_dev, status.st_ino) in seen:
            return
        seen.add((status.st_dev, status.st_ino))
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda entry: entry.name)
        for entry in ordered:
            try:
                if entry.is_dir():
                    yield from walk(entry.path, f'{prefix}{entry.name}/')
                else:
                    status = entry.stat()
                    yield f'{prefix}{entry.name}', status.st_size, status.st_mtime_ns
            except FileNotFoundError:  # a dangling link
                yield f'{prefix}{entry.name}', -1, -1

    yield from walk(str(root), '')
