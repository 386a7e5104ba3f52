"""Tests of the synthetic VOC-format dataset generator (harness.data.synthetic)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import synthetic
from harness.data.synthetic import (
    CLASSES,
    ERROR_KINDS,
    PALETTE,
    SyntheticConfig,
    check_dataset,
    ensure_dataset,
    generate_dataset,
)

SMALL = SyntheticConfig(num_train=6, num_val=2, image_size=32)
CLEAN = SyntheticConfig(
    num_train=16,
    num_val=4,
    missing_class_rate=0.0,
    missing_object_rate=0.0,
    false_coverage_rate=0.0,
)
NOISY = SyntheticConfig(
    num_train=16,
    num_val=4,
    missing_class_rate=1.0,
    missing_object_rate=1.0,
    false_coverage_rate=1.0,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("small") / "voc", SMALL)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("clean") / "voc", CLEAN)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("noisy") / "voc", NOISY)


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _all_ids(root: Path) -> list[str]:
    return _ids(root, "train") + _ids(root, "val")


def _mask(root: Path, sample_id: str) -> np.ndarray:
    return np.array(Image.open(root / "SegmentationClass" / f"{sample_id}.png"))


def _saliency(root: Path, sample_id: str) -> np.ndarray:
    return np.array(Image.open(root / "SALImages" / f"{sample_id}.png"))


def _info(root: Path) -> dict:
    return json.loads((root / "dataset_info.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _saliency_iou(root: Path) -> float:
    """IoU, pooled over all images, of saliency > 127 with the ground-truth foreground."""
    intersection = union = 0
    for sample_id in _all_ids(root):
        foreground = _mask(root, sample_id) > 0
        salient = _saliency(root, sample_id) > 127
        intersection += int((foreground & salient).sum())
        union += int((foreground | salient).sum())
    return intersection / union


def test_layout_is_complete(small: Path) -> None:
    train, val = _ids(small, "train"), _ids(small, "val")
    assert len(train) == 6 and len(val) == 2
    assert not set(train) & set(val)
    assert all(i.startswith("shapes_") for i in train + val)
    for sample_id in train + val:
        image = Image.open(small / "JPEGImages" / f"{sample_id}.jpg")
        mask = Image.open(small / "SegmentationClass" / f"{sample_id}.png")
        saliency = Image.open(small / "SALImages" / f"{sample_id}.png")
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
        assert (mask.format, mask.mode, mask.size) == ("PNG", "P", (32, 32))
        assert (saliency.format, saliency.mode) == ("PNG", "L")
    labels = np.load(small / "cls_labels.npy", allow_pickle=True).item()
    assert sorted(labels) == sorted(train + val)
    info = _info(small)
    assert info["classes"] == list(CLASSES) and info["classes"][0] == "background"
    assert info["palette"] == PALETTE and len(PALETTE) == len(CLASSES)
    assert info["image_size"] == [32, 32] and info["seed"] == 0
    assert set(info["error_counts"]) == set(ERROR_KINDS)
    assert info["config"] == {
        "seed": 0,
        "num_train": 6,
        "num_val": 2,
        "image_size": 32,
        "missing_class_rate": 0.2,
        "missing_object_rate": 0.25,
        "false_coverage_rate": 0.3,
    }


def test_masks_use_the_voc_palette(small: Path) -> None:
    mask = Image.open(small / "SegmentationClass" / f"{_ids(small, 'train')[0]}.png")
    colours = np.array(mask.getpalette()).reshape(-1, 3)
    assert colours[: len(CLASSES)].tolist() == PALETTE
    # The VOC colormap: 1 dark red, 2 dark green, 255 (ignore) light beige.
    assert PALETTE[1] == [128, 0, 0] and PALETTE[2] == [0, 128, 0]
    assert colours[255].tolist() == [224, 224, 192]


def test_same_seed_gives_identical_bytes(small: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", SMALL)
    assert _files(again) == _files(small)


def test_other_seed_gives_other_images(small: Path, tmp_path: Path) -> None:
    other = generate_dataset(tmp_path / "other", replace(SMALL, seed=1))
    sample_id = _ids(small, "train")[0]
    image = f"JPEGImages/{sample_id}.jpg"
    assert _files(other)[image] != _files(small)[image]


def test_masks_hold_only_class_indices(small: Path) -> None:
    for sample_id in _all_ids(small):
        assert set(np.unique(_mask(small, sample_id))) <= set(range(len(CLASSES)))


def test_every_image_shows_one_to_three_classes(clean: Path) -> None:
    for sample_id in _all_ids(clean):
        present = set(np.unique(_mask(clean, sample_id))) - {0}
        assert 1 <= len(present) <= 3


def test_cls_labels_match_the_masks(small: Path) -> None:
    labels = np.load(small / "cls_labels.npy", allow_pickle=True).item()
    for sample_id in _all_ids(small):
        expected = np.zeros(len(CLASSES) - 1, dtype=np.float32)
        expected[[c - 1 for c in np.unique(_mask(small, sample_id)) if c != 0]] = 1.0
        assert labels[sample_id].dtype == np.float32
        np.testing.assert_array_equal(labels[sample_id], expected)


def test_saliency_has_the_image_size_and_byte_range(small: Path) -> None:
    for sample_id in _all_ids(small):
        image = np.array(Image.open(small / "JPEGImages" / f"{sample_id}.jpg"))
        saliency = _saliency(small, sample_id)
        assert saliency.shape == image.shape[:2]
        assert saliency.dtype == np.uint8  # so the values lie in 0..255
        assert saliency.max() > 127


def test_error_free_saliency_matches_the_foreground(clean: Path) -> None:
    assert _saliency_iou(clean) > 0.9
    assert _info(clean)["error_counts"] == {kind: 0 for kind in ERROR_KINDS}


def test_full_error_rates_inject_every_kind(clean: Path, noisy: Path) -> None:
    counts = _info(noisy)["error_counts"]
    assert all(counts[kind] > 0 for kind in ERROR_KINDS), counts
    assert _saliency_iou(noisy) < _saliency_iou(clean) - 0.2


def test_error_rates_change_only_the_saliency(clean: Path, noisy: Path) -> None:
    clean_files, noisy_files = _files(clean), _files(noisy)
    for name, content in clean_files.items():
        if name.startswith(("JPEGImages", "SegmentationClass", "ImageSets")):
            assert noisy_files[name] == content, name


def _kinds(root: Path, sample_id: str) -> np.ndarray:
    return np.array(Image.open(root / synthetic.ERRORS_FOLDER / f"{sample_id}.png"))


def test_error_kind_maps_mark_exactly_the_injected_errors(clean: Path, noisy: Path) -> None:
    values = synthetic.ERROR_KIND_VALUES
    seen = set()
    for sample_id in _all_ids(noisy):
        kinds, mask = _kinds(noisy, sample_id), _mask(noisy, sample_id)
        saliency = _saliency(noisy, sample_id)
        assert set(np.unique(kinds)) <= {0, *values.values()}
        seen |= set(np.unique(kinds).tolist())
        # missing class / missing object: object pixels left out of the saliency map
        for kind in ("missing_class", "missing_object"):
            region = kinds == values[kind]
            assert (mask[region] > 0).all(), (sample_id, kind)
        # the missed class is missed whole: every visible pixel of it, and it is not salient
        missed = kinds == values["missing_class"]
        if missed.any():
            (missed_class,) = np.unique(mask[missed])
            np.testing.assert_array_equal(missed, mask == missed_class)
            assert np.median(saliency[missed]) < 64
        # false coverage: background pixels made salient
        covered = kinds == values["false_coverage"]
        assert (mask[covered] == 0).all() and np.median(saliency[covered]) > 64
    assert seen == {0, *values.values()}
    for sample_id in _all_ids(clean):
        assert not _kinds(clean, sample_id).any()
    assert _info(noisy)["error_kind_values"] == {"none": 0, **values}


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"mine.*not an empty folder"):
        generate_dataset(target, SMALL)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_fills_an_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert (generate_dataset(target, SMALL) / "dataset_info.json").is_file()


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_sample", fail)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "voc", SMALL)
    assert list(tmp_path.iterdir()) == []


def test_ensure_dataset_generates_once(tmp_path: Path) -> None:
    target = tmp_path / "voc"
    assert ensure_dataset(target, SMALL) == target
    stamp = (target / "dataset_info.json").stat().st_mtime_ns
    before = _files(target)
    assert ensure_dataset(str(target), SMALL) == target
    assert (target / "dataset_info.json").stat().st_mtime_ns == stamp
    assert _files(target) == before


def test_ensure_dataset_accepts_a_dataset_finished_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "voc"
    write_dataset = synthetic._write_dataset
    raced: list[bool] = []

    def write_while_another_process_finishes(root: Path, config: SyntheticConfig) -> None:
        write_dataset(root, config)
        if not raced:
            raced.append(True)
            generate_dataset(target, config)  # the rival renames its copy into place first

    monkeypatch.setattr(synthetic, "_write_dataset", write_while_another_process_finishes)
    assert ensure_dataset(target, SMALL) == target
    assert raced and (target / "dataset_info.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["voc"]


def test_ensure_dataset_rejects_other_settings(small: Path) -> None:
    other = SyntheticConfig(num_train=6, num_val=2, image_size=40, missing_class_rate=0.5)
    expected = r"other settings.*image_size: 32 there, 40 requested"
    with pytest.raises(ValueError, match=expected) as caught:
        ensure_dataset(small, other)
    message = str(caught.value)
    assert str(small) in message
    assert "missing_class_rate: 0.2 there, 0.5 requested" in message
    assert "remove that folder" in message


def test_ensure_dataset_refuses_a_folder_without_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        ensure_dataset(tmp_path, SMALL)


def test_check_dataset_accepts_any_settings_of_this_generator_version(
    small: Path, tmp_path: Path
) -> None:
    assert check_dataset(small) == _info(small)["config"]
    older = tmp_path / "older"
    older.mkdir()
    (older / "dataset_info.json").write_text(json.dumps({**_info(small), "generator_version": 1}))
    before = _files(older)
    expected = f"{older} holds a synthetic dataset of generator_version 1, this code reads version"
    for check in (check_dataset, lambda root: ensure_dataset(root, SMALL)):
        with pytest.raises(ValueError, match=re.escape(expected)) as caught:
            check(older)
        assert "remove that folder to regenerate it" in str(caught.value)
    assert _files(older) == before


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("image_size", 31, r"image_size must be an integer >= 32, got 31"),
        ("image_size", 64.0, r"image_size must be an integer >= 32"),
        ("num_train", 0, r"num_train must be an integer >= 1"),
        ("num_val", -1, r"num_val must be an integer >= 1"),
        ("seed", -3, r"seed must be an integer >= 0"),
        ("missing_class_rate", 1.5, r"missing_class_rate must be a number in \[0, 1\]"),
        ("missing_object_rate", -0.1, r"missing_object_rate must be a number in \[0, 1\]"),
        ("false_coverage_rate", float("nan"), r"false_coverage_rate must be a number in \[0, 1\]"),
        ("false_coverage_rate", True, r"false_coverage_rate must be a number in \[0, 1\]"),
    ],
)
def test_bad_config_values_raise(key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**{key: value})


def test_integer_rates_describe_the_same_dataset() -> None:
    assert SyntheticConfig(missing_class_rate=1) == SyntheticConfig(missing_class_rate=1.0)


def test_cli_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--num-train", "3", "--num-val", "1", "--image-size", "32"]
    argv += ["--seed", "5"]
    assert synthetic.main(argv) == 0
    summary = capsys.readouterr().out
    assert "wrote 3 train + 1 val images (32x32)" in summary and str(out) in summary
    assert _info(out)["config"]["seed"] == 5
    assert synthetic.main(argv) == 1
    assert "not an empty folder" in capsys.readouterr().err
