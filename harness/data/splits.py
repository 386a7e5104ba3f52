"""Labelled / unlabelled splits of a training set for semi-supervised segmentation (SSSS)."""
from fractions import Fraction
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np


def parse_fraction(value: Union[str, float, int, Fraction]) -> float:
    """The labelled fraction in [0, 1] of ``0.125``, ``'0.125'`` or ``'1/8'``.

    0 means no labelled ids (WSSS), 1 fully supervised.

    Raises:
        ValueError: naming ``value``, if it is not a number or ratio or lies outside [0, 1].
    """
    try:
        fraction = float(Fraction(str(value).strip()))
    except (ValueError, ZeroDivisionError) as error:
        raise ValueError(f'labelled_fraction {value!r} is not a number or a ratio like 1/8') \
            from error
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f'labelled_fraction {value!r} must lie in [0, 1] '
                         '(e.g. 0 for WSSS, 1/16, 1/8, 1/4, 1/2, or 1 for fully supervised)')
    return fraction


def read_ids(path: Union[str, Path]) -> List[str]:
    """Ids of a split file (``splits/pascal/1_8/labeled.txt`` style), one per line, blanks skipped.

    A line's id is the file stem of its first field (``JPEGImages/x.jpg SegmentationClass/x.png``
    gives ``x``).

    Raises:
        FileNotFoundError: ``path`` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'split file {path} not found')
    return [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]


def split_by_fraction(ids: Sequence[str], fraction: float,
                      seed: int) -> Tuple[List[str], List[str]]:
    """``(labelled, unlabelled)`` ids, each sorted; ``round(fraction * N)`` are labelled.

    At least one is labelled for a fraction above 0, none for 0: the first ids of a permutation
    of the sorted ids seeded by ``seed``. The split ignores the order of ``ids``, and for one seed
    a smaller fraction's labelled ids are a subset of a larger one's.

    Raises:
        ValueError: ``fraction`` is invalid (see :func:`parse_fraction`).
    """
    fraction = parse_fraction(fraction)
    ordered = sorted(ids)
    count = max(1, int(round(fraction * len(ordered)))) if fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(ordered))
    labelled = {ordered[i] for i in order[:count]}
    return sorted(labelled), [i for i in ordered if i not in labelled]


def split_from_file(ids: Sequence[str], split_file: Union[str, Path]) -> Tuple[List[str], List[str]]:
    """``(labelled, unlabelled)`` ids, each sorted; labelled: those ``split_file`` lists.

    Raises:
        FileNotFoundError: ``split_file`` is not a file.
        ValueError: it lists no id (for no labelled ids use ``task: wsss``), or ids not in ``ids``.
    """
    labelled = read_ids(split_file)
    if not labelled:
        raise ValueError(f'split file {split_file} lists no ids: it must name the labelled '
                         'training ids, one per line (for a trial without labelled ids, set '
                         'task wsss instead)')
    unknown = sorted(set(labelled) - set(ids))
    if unknown:
        raise ValueError(f'split file {split_file} names {len(unknown)} ids that are not in the '
                         f'training set, e.g. {unknown[:5]}')
    chosen = set(labelled)
    return sorted(chosen), [i for i in sorted(ids) if i not in chosen]


def write_ids(path: Union[str, Path], ids: Iterable[str]) -> Path:
    """Writes ``ids`` to ``path``, one per line, creating its folder; returns ``path`` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(f'{i}\n' for i in ids))
    return path
