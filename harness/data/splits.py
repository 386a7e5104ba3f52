"""Labelled / unlabelled splits of a training set for semi-supervised segmentation (SSSS)."""
from fractions import Fraction
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np


def parse_fraction(value: Union[str, float, int, Fraction]) -> float:
    """A labelled fraction in [0, 1] from ``0.125``, ``'0.125'`` or ``'1/8'`` (0: no labelled
    ids, i.e. WSSS; 1: fully supervised).

    Raises ``ValueError`` naming the value for anything else.
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
    """Ids of a split file: one per line (``splits/pascal/1_8/labeled.txt`` style), blanks skipped.

    A line may hold more than the id (``JPEGImages/x.jpg SegmentationClass/x.png``, as some
    semi-supervised code writes): the id is the file stem of its first field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'split file {path} not found')
    return [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]


def split_by_fraction(ids: Sequence[str], fraction: float,
                      seed: int) -> Tuple[List[str], List[str]]:
    """``(labelled, unlabelled)`` ids: ``round(fraction * N)`` ids (at least one for a fraction
    above 0; none for 0) are labelled.

    The choice depends only on (sorted ids, fraction, seed): a seeded permutation of the ids
    whose first ``n`` are labelled, so that for one seed a smaller fraction's labelled set is a
    subset of a larger one's. Both lists are returned sorted.
    """
    fraction = parse_fraction(fraction)
    ordered = sorted(ids)
    count = max(1, int(round(fraction * len(ordered)))) if fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(ordered))
    labelled = {ordered[i] for i in order[:count]}
    return sorted(labelled), [i for i in ordered if i not in labelled]


def split_from_file(ids: Sequence[str], split_file: Union[str, Path]) -> Tuple[List[str], List[str]]:
    """``(labelled, unlabelled)`` where the labelled ids are those listed in ``split_file``.

    Raises ``ValueError`` for a file that lists no id (a trial of it would have no labelled
    image, which is WSSS: say ``task: wsss`` for that), or listing (a few of) the ids of the file
    that are not in ``ids``.
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
    """Writes one id per line; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(f'{i}\n' for i in ids))
    return path
