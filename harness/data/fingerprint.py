"""A cheap digest of a dataset folder that changes when its data does (the stage-1 cache key).

A :mod:`harness.data.synthetic` dataset (its ``dataset_info.json`` names that generator) is keyed
by its generator version and config; any other folder by the relative path, size and mtime of
every file under it, following symbolic links (stat calls only; no file is read).
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Set, Tuple, Union

SYNTHETIC_GENERATOR = 'harness.data.synthetic'
INFO_FILE = 'dataset_info.json'


def dataset_fingerprint(root: Union[str, Path]) -> str:
    """16-hex-digit digest of the dataset in ``root``; ``'absent'`` if ``root`` is not a folder."""
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
    """``(path relative to root, size in bytes, mtime in ns)`` of every file under ``root``, sorted;
    a folder reached twice through links is walked once; a dangling link gives size and mtime -1."""
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
