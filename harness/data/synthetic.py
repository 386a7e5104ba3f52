"""Small synthetic PASCAL-VOC-format dataset with imperfect saliency maps, for EPS/EPS++ work.

Usage (or call :func:`ensure_dataset` / :func:`generate_dataset`)::

    python -m harness.data.synthetic --out data/shapes_voc [--seed N] [--num-train N] \\
        [--num-val N] [--image-size PX] [--missing-class-rate P] [--missing-object-rate P] \\
        [--false-coverage-rate P]

Files written under the output folder (VOC layout)::

    JPEGImages/<id>.jpg          RGB, JPEG quality 95, ids like ``shapes_000123``
    SegmentationClass/<id>.png   palette PNG (VOC colormap), 0 background, 1..5 classes
    SALImages/<id>.png           greyscale PNG, saliency 0..255 (255 means 1)
    SaliencyErrors/<id>.png      greyscale PNG, injected error per pixel (ERROR_KIND_VALUES):
                                 0 none, 1 missing class, 2 missing object, 3 false coverage
    ImageSets/Segmentation/{train,val}.txt
    cls_labels.npy               {id: float32[5]} image-level labels, background excluded
    dataset_info.json            classes, palette, config, injected-error counts; written last,
                                 so a folder holding it is a complete dataset

Images show 1-4 objects of 1-3 classes (disc, square, triangle, cross, ring) on textured
backgrounds; half also show 1-2 distractors (grey/brown blobs, bars) labelled background.
Saliency covers the visible class objects, with the errors the EPS papers name injected:

- missing class: per image with >= 2 classes, with ``missing_class_rate``, one class is absent.
- missing object: per object, with ``missing_object_rate``, only 25-60% of it (one side of a
  random straight cut) is salient.
- false coverage: per image, with ``false_coverage_rate``, a distractor (else a background
  patch) is salient.

Each image draws its content and each error kind from its own random stream, so images and masks
do not depend on the rates, and for one seed a lower rate's errors are a subset of a higher's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from harness.strict_json import is_integer, is_number
from harness.eps.datasets import ERROR_KIND_VALUES, ERROR_KINDS, VOC_COLORMAP
from harness.eps.datasets import SHAPES_CLASSES as CLASSES
from harness.eps.datasets import SHAPES_PALETTE as PALETTE

GENERATOR_VERSION = 2  # 2: SaliencyErrors/ (per-pixel error kinds)

NUM_FOREGROUND = len(CLASSES) - 1
ERRORS_FOLDER = "SaliencyErrors"
INFO_FILE = "dataset_info.json"
ID_PREFIX = "shapes_"

# Mean RGB of each foreground class; every object jitters it.
_CLASS_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (215, 55, 45),
    2: (45, 165, 70),
    3: (55, 95, 215),
    4: (225, 195, 45),
    5: (170, 65, 195),
}
_SIZE_RANGE = (0.15, 0.40)  # object diameter as a fraction of the image side
_DISTRACTOR_SIZE_RANGE = (0.15, 0.35)
_DISTRACTOR_PROBABILITY = 0.5
_MAX_OVERLAP = 0.3  # largest fraction of an object a placement may hide, or have hidden
_PLACEMENT_TRIES = 20
_KEPT_FRACTION_RANGE = (0.25, 0.60)  # of a partially missed object
_MIN_FALSE_REGION = 0.01  # of the image area: smaller distractor remnants are not worth covering


def _int_field(default: int, minimum: int, help_text: str) -> int:
    return field(default=default, metadata={"minimum": minimum, "help": help_text})


def _rate_field(default: float, help_text: str) -> float:
    return field(default=default, metadata={"rate": True, "help": help_text})


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of a synthetic dataset; the same settings give byte-identical files.

    Rates are stored as floats (1 and 1.0 are the same dataset).

    Raises:
        ValueError: naming the field, for an integer below its minimum or a rate outside [0, 1].
    """

    seed: int = _int_field(0, 0, "random seed")
    num_train: int = _int_field(240, 1, "number of training images")
    num_val: int = _int_field(60, 1, "number of validation images")
    image_size: int = _int_field(64, 32, "side of the square images, pixels")
    missing_class_rate: float = _rate_field(
        0.2, "probability per image with >= 2 classes that one class is not salient"
    )
    missing_object_rate: float = _rate_field(
        0.25, "probability per object that only part of it is salient"
    )
    false_coverage_rate: float = _rate_field(
        0.3, "probability per image that a distractor or background patch is salient"
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if "rate" in spec.metadata:
                object.__setattr__(self, spec.name, _checked_rate(spec.name, value))
            else:
                object.__setattr__(
                    self, spec.name, _checked_int(spec.name, value, spec.metadata["minimum"])
                )


def _checked_int(name: str, value: object, minimum: int) -> int:
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _checked_rate(name: str, value: object) -> float:
    # The chained comparison is False for NaN, so NaN is rejected too.
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# Geometry: every shape is a boolean (S, S) mask evaluated at the pixel centres.


class _Grid(NamedTuple):
    """Pixel-centre coordinates, each (S, S) float64 in pixels: ``ys`` rows, ``xs`` columns."""

    ys: np.ndarray
    xs: np.ndarray


def _pixel_grid(size: int) -> _Grid:
    centres = np.arange(size, dtype=np.float64) + 0.5
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return _Grid(ys, xs)


def _local_frame(
    grid: _Grid, cx: float, cy: float, radius: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) of every pixel in a frame centred at (cx, cy), rotated by ``angle``
    radians and scaled so that ``radius`` pixels is 1; each (S, S) float64."""
    dx, dy = grid.xs - cx, grid.ys - cy
    cos, sin = np.cos(angle), np.sin(angle)
    return (dx * cos + dy * sin) / radius, (dy * cos - dx * sin) / radius


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral, circumradius 1.15, so its area is near the other shapes'.
    inside = np.ones(u.shape, dtype=bool)
    for normal in np.deg2rad([90.0, 210.0, 330.0]):
        inside &= u * np.cos(normal) + v * np.sin(normal) <= 0.575
    return inside


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 1.0)) | ((au <= 1.0) & (av <= 0.3))


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    rho2 = u * u + v * v
    return (rho2 >= 0.25) & (rho2 <= 1.0)


# Indexed by class index; order follows CLASSES.
_CLASS_SHAPES: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    1: _disc,
    2: _square,
    3: _triangle,
    4: _cross,
    5: _ring,
}


def _random_frame(
    rng: np.random.Generator, grid: _Grid, size: int, size_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, float]:
    """A random local frame (see :func:`_local_frame`) whose unit circle lies mostly inside the
    image; returns (u, v, radius in pixels)."""
    radius = 0.5 * size * rng.uniform(*size_range)
    cx, cy = rng.uniform(0.6 * radius, size - 0.6 * radius, size=2)
    u, v = _local_frame(grid, cx, cy, radius, rng.uniform(0.0, 2.0 * np.pi))
    return u, v, radius


def _class_footprint(
    rng: np.random.Generator, grid: _Grid, size: int, class_index: int
) -> np.ndarray:
    u, v, _ = _random_frame(rng, grid, size, _SIZE_RANGE)
    return _CLASS_SHAPES[class_index](u, v)


def _distractor_footprint(rng: np.random.Generator, grid: _Grid, size: int) -> np.ndarray:
    """An irregular blob (union of 3-5 discs) or a thin bar: shapes of no class; bool (S, S)."""
    u, v, _ = _random_frame(rng, grid, size, _DISTRACTOR_SIZE_RANGE)
    if rng.random() < 0.5:
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.2)
    count = rng.integers(3, 6)
    centres = rng.uniform(-0.5, 0.5, size=(count, 2))
    radii = rng.uniform(0.35, 0.6, size=count)
    blob = np.zeros(u.shape, dtype=bool)
    for (cu, cv), r in zip(centres, radii):
        blob |= (u - cu) ** 2 + (v - cv) ** 2 <= r * r
    return blob


def _worst_overlap(footprint: np.ndarray, placed: list[np.ndarray]) -> float:
    """Largest fraction of ``footprint`` hidden by ``placed``, or of a placed shape hidden by it."""
    area = footprint.sum()
    if area == 0:
        return np.inf
    worst = (footprint & np.any(placed, axis=0)).sum() / area if placed else 0.0
    for other in placed:
        worst = max(worst, (footprint & other).sum() / max(other.sum(), 1))
    return float(worst)


def _place(sample: Callable[[], np.ndarray], placed: list[np.ndarray]) -> np.ndarray:
    """The first footprint from ``sample`` that overlaps ``placed`` little, else the least
    overlapping of ``_PLACEMENT_TRIES`` draws; bool (S, S)."""
    best, best_overlap = None, np.inf
    for _ in range(_PLACEMENT_TRIES):
        footprint = sample()
        overlap = _worst_overlap(footprint, placed)
        if best is None or overlap < best_overlap:
            best, best_overlap = footprint, overlap
        if overlap <= _MAX_OVERLAP:
            break
    return best


# ---------------------------------------------------------------------------------------------
# Appearance: float (S, S, 3) colour fields, nominally 0..255, clipped when the image is encoded.


def _interpolation_matrix(size: int, cells: int) -> np.ndarray:
    """Weights (S, cells + 1) that linearly interpolate ``cells + 1`` knots spread over S pixels."""
    positions = np.linspace(0.0, cells, size)
    knots = np.arange(cells + 1)
    return np.clip(1.0 - np.abs(positions[:, None] - knots[None, :]), 0.0, None)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Bilinearly interpolated random knots in [-1, 1]: smooth noise of shape (S, S, channels)
    with features about S / cells pixels wide (cells=1 gives a corner-to-corner gradient)."""
    knots = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, channels))
    weights = _interpolation_matrix(size, cells)
    return np.einsum("ia,abc,jb->ijc", weights, knots, weights, optimize=True)


def _stripes(rng: np.random.Generator, grid: _Grid, size: int) -> np.ndarray:
    """Sinusoidal stripes of random direction, 2-8 periods per image, random colour; (S, S, 3)."""
    angle = rng.uniform(0.0, np.pi)
    periods = rng.uniform(2.0, 8.0)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    colour = rng.uniform(-1.0, 1.0, size=3) * rng.uniform(10.0, 35.0)
    along = (grid.xs * np.cos(angle) + grid.ys * np.sin(angle)) / size
    return np.sin(2.0 * np.pi * periods * along + phase)[..., None] * colour


def _background(rng: np.random.Generator, grid: _Grid, size: int) -> np.ndarray:
    """A colour gradient between random corner colours plus blotches and, half the time, stripes,
    so that backgrounds span the objects' colours; float (S, S, 3)."""
    field_ = 127.5 + 107.5 * _smooth_noise(rng, size, 1, 3)
    field_ += rng.uniform(10.0, 45.0) * _smooth_noise(rng, size, int(rng.integers(3, 7)), 3)
    if rng.random() < 0.5:
        field_ += _stripes(rng, grid, size)
    return field_


def _class_appearance(rng: np.random.Generator, size: int, class_index: int) -> np.ndarray:
    """The class colour with per-object jitter, broad shading and fine texture; float (S, S, 3)."""
    colour = np.array(_CLASS_COLOURS[class_index], dtype=np.float64)
    colour = colour * rng.uniform(0.8, 1.15) + rng.uniform(-30.0, 30.0, size=3)
    return _textured(rng, size, colour)


def _distractor_appearance(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grey or brown, jittered and textured like the objects; float (S, S, 3)."""
    if rng.random() < 0.5:
        colour = rng.uniform(80.0, 180.0) + rng.uniform(-10.0, 10.0, size=3)
    else:
        colour = rng.uniform([110.0, 70.0, 35.0], [160.0, 100.0, 60.0])
    return _textured(rng, size, colour)


def _textured(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    shading = 1.0 + 0.15 * _smooth_noise(rng, size, 1, 1)
    texture = 12.0 * _smooth_noise(rng, size, max(size // 6, 2), 3)
    return colour * shading + texture


# ---------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class _Scene:
    """One rendered image with what the saliency map is built from.

    image: (S, S, 3) uint8 RGB. mask: (S, S) uint8, 0 background .. NUM_FOREGROUND.
    objects: (class index, visible pixels (S, S) bool) per class object, in drawing order.
    distractors: visible pixels (S, S) bool of each distractor.
    """

    image: np.ndarray
    mask: np.ndarray
    objects: list[tuple[int, np.ndarray]]
    distractors: list[np.ndarray]


def _object_classes(rng: np.random.Generator) -> list[int]:
    """Classes of 1-4 objects covering 1-3 distinct classes, in random drawing order."""
    num_objects = int(rng.integers(1, 5))
    num_classes = int(rng.integers(1, min(3, num_objects) + 1))
    chosen = rng.choice(np.arange(1, NUM_FOREGROUND + 1), size=num_classes, replace=False)
    classes = np.concatenate([chosen, rng.choice(chosen, size=num_objects - num_classes)])
    rng.shuffle(classes)
    return [int(c) for c in classes]


def _render_scene(rng: np.random.Generator, grid: _Grid, size: int) -> _Scene:
    image = _background(rng, grid, size)
    placed: list[np.ndarray] = []
    num_distractors = int(rng.integers(1, 3)) if rng.random() < _DISTRACTOR_PROBABILITY else 0
    # Distractors go first, beneath the objects, so the mask is decided by the objects alone.
    for _ in range(num_distractors):
        footprint = _place(functools.partial(_distractor_footprint, rng, grid, size), placed)
        image[footprint] = _distractor_appearance(rng, size)[footprint]
        placed.append(footprint)
    distractor_footprints = list(placed)
    mask = np.zeros((size, size), dtype=np.uint8)
    object_footprints: list[tuple[int, np.ndarray]] = []
    for class_index in _object_classes(rng):
        sample = functools.partial(_class_footprint, rng, grid, size, class_index)
        footprint = _place(sample, placed)
        image[footprint] = _class_appearance(rng, size, class_index)[footprint]
        mask[footprint] = class_index
        placed.append(footprint)
        object_footprints.append((class_index, footprint))
    image += rng.normal(0.0, 4.0, size=image.shape)  # sensor noise
    return _Scene(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        mask=mask,
        objects=_visible_parts(object_footprints),
        distractors=[footprint & (mask == 0) for footprint in distractor_footprints],
    )


def _visible_parts(footprints: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    """Each object's pixels not covered by an object drawn after it."""
    covered = np.zeros_like(footprints[0][1])
    visible = []
    for class_index, footprint in reversed(footprints):
        visible.append((class_index, footprint & ~covered))
        covered |= footprint
    return visible[::-1]


# ---------------------------------------------------------------------------------------------
# Saliency


class _Streams(NamedTuple):
    """Independent random streams of one image: content, one per error kind, noise."""

    content: np.random.Generator
    missing_class: np.random.Generator
    missing_object: np.random.Generator
    false_coverage: np.random.Generator
    noise: np.random.Generator


def _streams(seed: int, index: int) -> _Streams:
    children = np.random.SeedSequence([seed, index]).spawn(len(_Streams._fields))
    return _Streams(*(np.random.default_rng(child) for child in children))


def _missed_class(scene: _Scene, rng: np.random.Generator, rate: float) -> int | None:
    """The class left out of the saliency map, or None; only images with >= 2 classes lose one."""
    present = [int(c) for c in np.unique(scene.mask) if c != 0]
    hit = rng.random() < rate
    if len(present) < 2:
        return None
    pick = present[int(rng.integers(len(present)))]
    return pick if hit else None


def _partial_object(
    visible: np.ndarray, grid: _Grid, rng: np.random.Generator, rate: float
) -> np.ndarray | None:
    """With probability ``rate`` the 25-60% of ``visible`` on one side of a random straight cut,
    else None; bool (S, S)."""
    # Drawn whatever the rate, so that a lower rate's errors are a subset of a higher rate's.
    hit = rng.random() < rate
    angle = rng.uniform(0.0, 2.0 * np.pi)
    kept_fraction = rng.uniform(*_KEPT_FRACTION_RANGE)
    if not hit or not visible.any():
        return None
    along = grid.xs * np.cos(angle) + grid.ys * np.sin(angle)
    cut = np.quantile(along[visible], kept_fraction)
    return visible & (along <= cut)


def _background_patch(
    rng: np.random.Generator, grid: _Grid, size: int, background: np.ndarray
) -> np.ndarray:
    """The background part of the random ellipse (radii 8-18% of the side) with the most
    background pixels among a few draws; bool (S, S)."""
    best = np.zeros_like(background)
    for _ in range(8):
        u, v, _radius = _random_frame(rng, grid, size, (0.16, 0.36))
        patch = (u * u + (v * rng.uniform(1.0, 2.0)) ** 2 <= 1.0) & background
        if patch.sum() > best.sum():
            best = patch
    return best


def _false_region(
    scene: _Scene, grid: _Grid, rng: np.random.Generator, rate: float
) -> np.ndarray | None:
    """With probability ``rate`` a non-target region to mark salient, else None; bool (S, S)."""
    hit = rng.random() < rate
    min_area = _MIN_FALSE_REGION * scene.mask.size
    candidates = [d for d in scene.distractors if d.sum() >= min_area]
    if candidates:
        region = candidates[int(rng.integers(len(candidates)))]
    else:
        region = _background_patch(rng, grid, scene.mask.shape[0], scene.mask == 0)
    return region if hit and region.any() else None


def _saliency(
    scene: _Scene, grid: _Grid, streams: _Streams, config: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray, Counter[str]]:
    """The saliency map, uint8 (S, S) 0..255; the injected error kind of every pixel, uint8
    (S, S) of :data:`ERROR_KIND_VALUES` (0: none; the target pixels, before blur and noise);
    and the number of errors of each kind put into it."""
    size = scene.mask.shape[0]
    errors: Counter[str] = Counter()
    kinds = np.zeros(scene.mask.shape, dtype=np.uint8)
    missed = _missed_class(scene, streams.missing_class, config.missing_class_rate)
    errors["missing_class"] += int(missed is not None)
    target = np.zeros(scene.mask.shape, dtype=np.float64)
    for class_index, visible in scene.objects:
        partial = _partial_object(
            visible, grid, streams.missing_object, config.missing_object_rate
        )
        confidence = streams.noise.uniform(0.85, 1.0)
        if class_index == missed:
            kinds[visible] = ERROR_KIND_VALUES["missing_class"]
            continue
        errors["missing_object"] += int(partial is not None)
        if partial is not None:
            kinds[visible & ~partial] = ERROR_KIND_VALUES["missing_object"]
        target[visible if partial is None else partial] = confidence
    false_region = _false_region(scene, grid, streams.false_coverage, config.false_coverage_rate)
    confidence = streams.noise.uniform(0.6, 0.95)
    if false_region is not None:
        errors["false_coverage"] += 1
        kinds[false_region] = ERROR_KIND_VALUES["false_coverage"]
        target[false_region] = np.maximum(target[false_region], confidence)
    # A detector's output is soft at edges and a little uneven everywhere.
    sigma = max(0.6, size / 80.0)
    saliency = gaussian_filter(target, sigma, mode="nearest", radius=int(np.ceil(3.0 * sigma)))
    saliency += 0.05 * _smooth_noise(streams.noise, size, 3, 1)[..., 0]
    saliency += streams.noise.normal(0.0, 0.015, size=saliency.shape)
    return np.clip(np.rint(255.0 * saliency), 0, 255).astype(np.uint8), kinds, errors


# ---------------------------------------------------------------------------------------------
# Samples and files


@dataclass(frozen=True)
class _Sample:
    """One image with its files' arrays (see :class:`_Scene`), uint8 saliency (S, S), the
    per-pixel error kinds (S, S), the injected error counts and how many objects and distractors
    it shows."""

    image: np.ndarray
    mask: np.ndarray
    saliency: np.ndarray
    error_kinds: np.ndarray
    errors: Counter[str]
    num_objects: int
    num_distractors: int


def _make_sample(config: SyntheticConfig, index: int, grid: _Grid) -> _Sample:
    streams = _streams(config.seed, index)
    scene = _render_scene(streams.content, grid, config.image_size)
    saliency, error_kinds, errors = _saliency(scene, grid, streams, config)
    return _Sample(
        image=scene.image,
        mask=scene.mask,
        saliency=saliency,
        error_kinds=error_kinds,
        errors=errors,
        num_objects=len(scene.objects),
        num_distractors=len(scene.distractors),
    )


def _class_vector(mask: np.ndarray) -> np.ndarray:
    """Image-level labels of a mask: float32 (NUM_FOREGROUND,), 1 for each class present."""
    present = np.bincount(mask.ravel(), minlength=len(CLASSES))[1:] > 0
    return present.astype(np.float32)


def _write_sample(root: Path, sample_id: str, sample: _Sample) -> None:
    Image.fromarray(sample.image).save(root / "JPEGImages" / f"{sample_id}.jpg", quality=95)
    mask = Image.fromarray(sample.mask)
    mask.putpalette(VOC_COLORMAP.ravel().tolist())  # turns the "L" image into "P"
    mask.save(root / "SegmentationClass" / f"{sample_id}.png")
    Image.fromarray(sample.saliency).save(root / "SALImages" / f"{sample_id}.png")
    Image.fromarray(sample.error_kinds).save(root / ERRORS_FOLDER / f"{sample_id}.png")


def _split_ids(config: SyntheticConfig) -> dict[str, list[str]]:
    """Ids per split; validation numbering continues after training."""
    ids = [f"{ID_PREFIX}{i:06d}" for i in range(config.num_train + config.num_val)]
    return {"train": ids[: config.num_train], "val": ids[config.num_train :]}


def _write_dataset(root: Path, config: SyntheticConfig) -> None:
    """Write every file of the dataset into the existing empty folder ``root``, the info last."""
    for sub in ("JPEGImages", "SegmentationClass", "SALImages", ERRORS_FOLDER,
                "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    grid = _pixel_grid(config.image_size)
    splits = _split_ids(config)
    labels: dict[str, np.ndarray] = {}
    errors: Counter[str] = Counter({kind: 0 for kind in ERROR_KINDS})
    totals: Counter[str] = Counter()
    for index, sample_id in enumerate(splits["train"] + splits["val"]):
        sample = _make_sample(config, index, grid)
        _write_sample(root, sample_id, sample)
        labels[sample_id] = _class_vector(sample.mask)
        errors.update(sample.errors)
        totals.update(objects=sample.num_objects, distractors=sample.num_distractors)
    for split, ids in splits.items():
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        split_file.write_text("".join(f"{sample_id}\n" for sample_id in ids))
    np.save(root / "cls_labels.npy", labels, allow_pickle=True)
    info = _dataset_info(config, splits, labels, errors, totals)
    (root / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _dataset_info(
    config: SyntheticConfig,
    splits: dict[str, list[str]],
    labels: dict[str, np.ndarray],
    errors: Counter[str],
    totals: Counter[str],
) -> dict:
    images_per_class = np.sum(list(labels.values()), axis=0).astype(int)
    return {
        "generator": "harness.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "classes": list(CLASSES),
        "palette": PALETTE,
        "image_size": [config.image_size, config.image_size],
        "seed": config.seed,
        "num_images": {split: len(ids) for split, ids in splits.items()},
        "num_objects": totals["objects"],
        "num_distractors": totals["distractors"],
        "images_per_class": dict(zip(CLASSES[1:], images_per_class.tolist())),
        "error_rates": {kind: getattr(config, f"{kind}_rate") for kind in ERROR_KINDS},
        "error_counts": {kind: errors[kind] for kind in ERROR_KINDS},
        "error_kind_values": {"none": 0, **ERROR_KIND_VALUES},
        "error_units": {
            "missing_class": "images (with >= 2 classes) missing one class",
            "missing_object": "objects only partly salient",
            "false_coverage": "images with a salient distractor or background patch",
        },
    }


# ---------------------------------------------------------------------------------------------
# Public API


def generate_dataset(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the dataset of ``config`` to ``out_dir``, which must be absent or an empty folder.

    Files go to a hidden sibling folder renamed to ``out_dir`` at the end, so ``out_dir`` never
    holds a partial dataset.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        FileExistsError: ``out_dir`` is a file or a non-empty folder (also if filled meanwhile).
    """
    out = Path(out_dir)
    _refuse_occupied(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _write_dataset(staging, config)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def ensure_dataset(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Return ``out_dir`` holding the dataset of ``config``, generating it if it is absent.

    Safe from parallel processes: those that lose the race to create it use the winner's dataset.

    Raises:
        ValueError: ``out_dir`` holds a dataset of other settings or another generator version.
        FileExistsError: ``out_dir`` holds something else.
    """
    out = Path(out_dir)
    if not (out / INFO_FILE).is_file():
        try:
            return generate_dataset(out, config)
        except FileExistsError:
            if not (out / INFO_FILE).is_file():
                raise
    _check_same_config(out, config)
    return out


def _refuse_occupied(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"refusing to write the synthetic dataset into {out}: it exists and is not an empty "
            "folder; remove it or choose another output folder"
        )


def _move_into_place(staging: Path, out: Path) -> None:
    # rename(2) replaces an empty folder and fails on a non-empty one, atomically either way.
    try:
        os.rename(staging, out)
    except OSError as err:
        raise FileExistsError(
            f"{out} was filled by someone else while the synthetic dataset was being generated"
        ) from err


def check_dataset(out_dir: str | Path) -> dict:
    """Return the settings (``asdict(SyntheticConfig)``) of the dataset in ``out_dir``.

    Writes nothing; a dataset of any settings passes.

    Raises:
        ValueError: naming the folder, unless it holds a complete dataset of GENERATOR_VERSION.
    """
    out = Path(out_dir)
    try:
        info = json.loads((out / INFO_FILE).read_text())
        stored_config, stored_version = info["config"], info["generator_version"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{out / INFO_FILE} is not a readable synthetic dataset info file: {err}"
        ) from err
    if stored_version != GENERATOR_VERSION:
        raise ValueError(
            f"{out} holds a synthetic dataset of generator_version {stored_version!r}, this code "
            f"reads version {GENERATOR_VERSION}: remove that folder to regenerate it"
        )
    return stored_config


def _check_same_config(out: Path, config: SyntheticConfig) -> None:
    stored_config = check_dataset(out)
    differences = [
        f"{key}: {stored_config.get(key)!r} there, {value!r} requested"
        for key, value in asdict(config).items()
        if stored_config.get(key) != value
    ]
    if differences:
        raise ValueError(
            f"{out} holds a synthetic dataset generated with other settings "
            f"({'; '.join(differences)}); remove that folder to regenerate it, or use another "
            "folder for these settings"
        )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m harness.data.synthetic",
        description="Write the synthetic PASCAL-VOC-format dataset with imperfect saliency maps.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    for spec in fields(SyntheticConfig):
        parser.add_argument(
            f"--{spec.name.replace('_', '-')}",
            type=type(spec.default),
            default=spec.default,
            help=f"{spec.metadata['help']} (default: %(default)s)",
        )
    args = parser.parse_args(argv)
    try:
        args.config = SyntheticConfig(
            **{spec.name: getattr(args, spec.name) for spec in fields(SyntheticConfig)}
        )
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints a one-line summary. Returns the exit status."""
    args = _parse_args(argv)
    start = time.perf_counter()
    try:
        out = generate_dataset(args.out, args.config)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    info = json.loads((out / INFO_FILE).read_text())
    counts = ", ".join(f"{kind.replace('_', ' ')} {n}" for kind, n in info["error_counts"].items())
    print(
        f"wrote {info['num_images']['train']} train + {info['num_images']['val']} val images "
        f"({args.config.image_size}x{args.config.image_size}), saliency errors: {counts}; "
        f"{time.perf_counter() - start:.1f} s -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
