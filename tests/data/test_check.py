"""harness.data.check, and the same check in harness.trial / harness.sweep --check before
anything trains: files, labels, saliency format, mask values."""
from pathlib import Path

import numpy as np
from PIL import Image

from harness import trial as trial_cli
from harness.data import check
from harness.spec import TrialSpec
from test_validation import refused

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [f'--config={PROJECT_ROOT / TrialSpec.stage1_config}',
           f'--config={PROJECT_ROOT / TrialSpec.stage2_config}']


def train_ids(root: Path):
    return (root / 'ImageSets/Segmentation/train.txt').read_text().split()


def refused_trial(root: Path, tmp_path: Path, capsys) -> str:
    error = refused(trial_cli.main, ['--work-dir', str(tmp_path / 'trial'),
                                     f'--set=data_root={root}'], capsys)
    assert not (tmp_path / 'trial').exists()
    return error


def test_the_bundled_dataset_passes(tiny_dataset, capsys):
    assert check.main([str(tiny_dataset), *CONFIGS]) == 0
    assert 'OK (' in capsys.readouterr().out


def test_mask_id_beyond_the_classes_is_named_and_refused_before_training(dataset_copy, tmp_path,
                                                                         capsys):
    """Stage 2 would die on it ("Target 7 is out of bounds") after stage 1 trained."""
    path = dataset_copy / 'SegmentationClass' / f'{train_ids(dataset_copy)[3]}.png'
    image = Image.open(path)
    mask = np.array(image)
    mask[0, :2] = 7
    damaged = Image.fromarray(mask, mode='P')
    damaged.putpalette(image.getpalette())
    damaged.save(path)
    assert check.main([str(dataset_copy), *CONFIGS]) == 1
    assert f'1 masks with values outside 0..5 and 255: {path} (values [7])' in \
        capsys.readouterr().out
    error = refused_trial(dataset_copy, tmp_path, capsys)
    assert f'{path} (values [7])' in error and 'python -m harness.data.check' in error


def test_16_bit_saliency_passes_and_colour_saliency_is_refused(dataset_copy, tmp_path, capsys):
    ids = train_ids(dataset_copy)
    sixteen = dataset_copy / 'SALImages' / f'{ids[0]}.png'
    grey = np.asarray(Image.open(sixteen)).astype(np.uint16) * 257
    Image.fromarray(grey).save(sixteen)
    assert check.main([str(dataset_copy), *CONFIGS]) == 0
    capsys.readouterr()

    colour = dataset_copy / 'SALImages' / f'{ids[1]}.png'
    Image.open(colour).convert('RGB').save(colour)
    assert check.main([str(dataset_copy), *CONFIGS]) == 1
    assert (f'1 saliency maps that are not 8- or 16-bit grey PNGs: {colour} (mode RGB)'
            in capsys.readouterr().out)
    assert f'{colour} (mode RGB)' in refused_trial(dataset_copy, tmp_path, capsys)


def test_every_kind_of_problem_is_one_line_with_count_and_examples(dataset_copy, capsys):
    ids = train_ids(dataset_copy)
    for image_id in ids[:4]:
        (dataset_copy / 'SALImages' / f'{image_id}.png').unlink()
    small = dataset_copy / 'SegmentationClass' / f'{ids[5]}.png'
    Image.open(small).resize((32, 32)).save(small)
    labels = np.load(dataset_copy / 'cls_labels.npy', allow_pickle=True).item()
    del labels[ids[6]]
    np.save(dataset_copy / 'cls_labels.npy', labels)
    assert check.main([str(dataset_copy), *CONFIGS]) == 1
    lines = capsys.readouterr().out.splitlines()
    missing = [str(dataset_copy / 'SALImages' / f'{i}.png') for i in ids[:4]]
    assert f'4 saliency maps missing: {", ".join(missing[:3])}, ...' in lines
    assert (f'1 masks of another size than their image: {small} (32x32, image 64x64)'
            in lines)
    assert f'1 ids without labels in {dataset_copy / "cls_labels.npy"}: {ids[6]}' in lines
    assert lines[-1] == f'{dataset_copy}: 3 kinds of problem'


def test_the_quick_form_reads_a_sample_but_checks_every_file(dataset_copy):
    from mmengine.config import Config

    from harness.stage_configs import set_data_root

    cfg = Config.fromfile(str(PROJECT_ROOT / TrialSpec.stage1_config))
    set_data_root(cfg, str(dataset_copy))
    ids = train_ids(dataset_copy)
    (dataset_copy / 'JPEGImages' / f'{ids[1]}.jpg').unlink()
    mask_path = dataset_copy / 'SegmentationClass' / f'{ids[2]}.png'
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 9
    Image.fromarray(mask).save(mask_path)
    # 2 ids per split: the first and the last of those whose files are all there
    assert list(check.check_config(cfg, sample=2).by_kind) == ['images missing']
    assert list(check.check_config(cfg).by_kind) == [
        'images missing', 'masks with values outside 0..5 and 255']
