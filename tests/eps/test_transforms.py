import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.registry import DefaultScope
from PIL import Image

import harness.eps  # noqa: F401  (registers the transforms)


def compose(transforms):
    """The pipeline as mmseg's Runner builds it (mmseg scope, so our transforms are found)."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        return Compose(transforms)

GEOMETRY = dict(
    type='TransformBroadcaster',
    mapping=dict(img=['img', 'gt_saliency']),
    auto_remap=True,
    share_random_params=True,
    transforms=[
        dict(type='RandomResize', scale=(64, 64), ratio_range=(1.0, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(48, 48)),
        dict(type='RandomFlip', prob=0.5),
    ])


def write_pair(tmp_path, size=(40, 32), saliency_size=None):
    """An image whose red square is exactly the salient region."""
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    image[5:20, 3:15] = (255, 0, 0)
    saliency = np.where(image[..., 0] > 0, 255, 0).astype(np.uint8)
    if saliency_size is not None:
        saliency = np.array(Image.fromarray(saliency).resize(saliency_size))
    Image.fromarray(image).save(tmp_path / 'x.png')
    Image.fromarray(saliency).save(tmp_path / 'x_sal.png')
    return dict(img_path=str(tmp_path / 'x.png'), saliency_path=str(tmp_path / 'x_sal.png'),
                class_labels=np.array([1, 0], np.float32), img_id='x', seg_fields=[])


def test_geometric_augmentations_keep_image_and_saliency_aligned(tmp_path):
    pipeline = compose([dict(type='LoadImageFromFile'), dict(type='LoadSaliencyMap'), GEOMETRY,
                        dict(type='PackWSSSInputs')])
    sample = write_pair(tmp_path)
    for seed in range(8):
        np.random.seed(seed)
        packed = pipeline(dict(sample))
        image = packed['inputs']  # [3, H, W], BGR
        saliency = packed['data_samples'].gt_saliency.data
        assert saliency.shape == (1, *image.shape[1:])
        red = image[2] > 127
        salient = saliency[0] > 0.5
        agreement = (red == salient).float().mean().item()
        assert agreement > 0.97, f'seed {seed}: image and saliency disagree on {1 - agreement:.1%}'


def test_packed_sample_carries_labels_and_saliency_in_unit_range(tmp_path):
    pipeline = compose([dict(type='LoadImageFromFile'), dict(type='LoadSaliencyMap'),
                        dict(type='PackWSSSInputs')])
    packed = pipeline(write_pair(tmp_path))
    sample = packed['data_samples']
    np.testing.assert_array_equal(sample.metainfo['class_labels'], [1, 0])
    assert sample.metainfo['img_id'] == 'x'
    assert sample.gt_saliency.data.dtype == torch.float32
    assert sample.gt_saliency.data.min() >= 0 and sample.gt_saliency.data.max() == 1.0


def test_saliency_of_another_size_is_an_error_naming_both_files(tmp_path):
    pipeline = compose([dict(type='LoadImageFromFile'), dict(type='LoadSaliencyMap')])
    with pytest.raises(ValueError, match=r'x_sal.png is 20x16 .*/x.png is 40x32'):
        pipeline(write_pair(tmp_path, saliency_size=(20, 16)))


def test_missing_saliency_file_is_named(tmp_path):
    sample = write_pair(tmp_path)
    (tmp_path / 'x_sal.png').unlink()
    with pytest.raises(FileNotFoundError, match='x_sal.png'):
        compose([dict(type='LoadImageFromFile'), dict(type='LoadSaliencyMap')])(sample)


def test_sample_without_saliency_path_explains_the_fix():
    with pytest.raises(KeyError, match='saliency_path'):
        compose([dict(type='LoadSaliencyMap')])(dict(img_id='x'))


def test_16_bit_saliency_is_scaled_to_8_bits_not_clipped(tmp_path):
    """8% of the pixels are salient (65535); the rest lie at 1000/65535 = 0.015 of the range,
    which clipping to 0..255 would turn into fully salient."""
    sample = write_pair(tmp_path)
    values = np.full((32, 40), 1000, np.uint16)
    values[:8, :13] = 65535  # 104 of 1280 pixels
    values[31, :4] = [0, 257, 32768, 65535]
    Image.fromarray(values).save(tmp_path / 'x_sal.png')
    assert Image.open(tmp_path / 'x_sal.png').mode == 'I;16'
    loaded = compose([dict(type='LoadImageFromFile'), dict(type='LoadSaliencyMap')])(sample)
    saliency = loaded['gt_saliency']
    assert saliency.dtype == np.uint8
    np.testing.assert_array_equal(saliency[31, :4], [0, 1, 128, 255])
    assert saliency[0, 30] == 4  # round(1000 * 255 / 65535)
    assert (saliency[:31] > 127).mean() == pytest.approx(104 / (31 * 40))


@pytest.mark.parametrize('mode', ['RGB', 'P', 'I'])
def test_saliency_that_is_not_a_grey_png_is_refused_naming_the_file(tmp_path, mode):
    sample = write_pair(tmp_path)
    grey = Image.open(tmp_path / 'x_sal.png')
    if mode == 'I':  # 32-bit integers (TIFF): no 0..255 scale to read them on
        grey.convert('I').save(tmp_path / 'x_sal.png', format='TIFF')
    else:
        grey.convert(mode).save(tmp_path / 'x_sal.png', format='PNG')
    with pytest.raises(ValueError, match=rf"saliency map .*x_sal.png is a '{mode}' image"):
        compose([dict(type='LoadImageFromFile'), dict(type='LoadSaliencyMap')])(sample)
