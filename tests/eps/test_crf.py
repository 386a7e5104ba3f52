"""DenseCRF: a known answer on a tiny image, argument checks, the option in the pseudo-mask step."""
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from PIL import Image

import harness.eps  # noqa: F401
from harness.eps import DenseCRF
from harness.overrides import apply_overrides
from harness.pseudo_masks import main as pseudo_masks_main
from mmseg.registry import MODELS

STAGE1_CONFIG = 'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'


def two_halves(noisy_pixels):
    """An 8x16 image, red left half and blue right half, with scores ``[3, 8, 16]``: background
    absent (0), class 1 at 0.7 on the left and class 2 at 0.7 on the right, except that at
    ``noisy_pixels`` the wrong class gets 0.6. Returns the image, the scores and the truth."""
    image = np.zeros((8, 16, 3), np.uint8)
    image[:, :8] = (200, 30, 30)
    image[:, 8:] = (30, 30, 200)
    truth = np.ones((8, 16), np.int64)
    truth[:, 8:] = 2
    scores = np.zeros((3, 8, 16), np.float32)
    scores[1] = np.where(truth == 1, 0.7, 0.3)
    scores[2] = 1.0 - scores[1]
    for row, col in noisy_pixels:
        wrong = 3 - truth[row, col]
        scores[wrong, row, col], scores[truth[row, col], row, col] = 0.6, 0.4
    return image, scores, truth


NOISE = [(0, 0), (3, 5), (7, 7), (2, 8), (5, 12), (6, 15)]  # on both sides, at the edge too


def test_colour_and_smoothness_terms_fix_a_noisy_unary():
    image, scores, truth = two_halves(NOISE)
    assert (scores.argmax(0) != truth).sum() == len(NOISE)
    marginals = DenseCRF()(image, scores)
    assert marginals.shape == (3, 8, 16) and marginals.dtype == np.float32
    np.testing.assert_array_equal(marginals.argmax(0), truth)
    np.testing.assert_array_equal(marginals[0], 0)  # an absent class stays absent
    np.testing.assert_allclose(marginals.sum(0), 1, rtol=1e-5)


def test_a_weak_pairwise_term_keeps_the_unary():
    image, scores, _ = two_halves(NOISE)
    marginals = DenseCRF(gaussian_compat=0, bilateral_compat=0, num_iter=5)(image, scores)
    np.testing.assert_array_equal(marginals.argmax(0), scores.argmax(0))


def test_one_present_class_is_certain():
    image, scores, _ = two_halves([])
    scores[2] = 0
    marginals = DenseCRF()(image, scores)
    np.testing.assert_array_equal(marginals[1], 1)
    np.testing.assert_array_equal(marginals[[0, 2]], 0)


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_iter=0), 'num_iter must be an int >= 1, got 0'),
    (dict(num_iter=2.5), 'num_iter must be an int >= 1, got 2.5'),
    (dict(num_iter=True), 'num_iter'),
    (dict(gaussian_sxy=0), 'gaussian_sxy must be a number > 0, got 0'),
    (dict(bilateral_sxy=-80), 'bilateral_sxy must be a number > 0'),
    (dict(bilateral_srgb='13'), "bilateral_srgb must be a number > 0, got '13'"),
    (dict(gaussian_compat=-1), 'gaussian_compat must be a number >= 0, got -1'),
    (dict(bilateral_compat=float('nan')), 'bilateral_compat must be a number >= 0, got nan'),
    (dict(min_score=0), r'min_score must be a number in \(0, 1\), got 0'),
    (dict(min_score=1.0), 'min_score'),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DenseCRF(**kwargs)


def test_bad_inputs_are_described():
    image, scores, _ = two_halves([])
    crf = DenseCRF()
    with pytest.raises(ValueError, match=r'image must be uint8 \[H, W, 3\], got float32'):
        crf(image.astype(np.float32), scores)
    with pytest.raises(ValueError, match=r"scores must be \[K, H, W\] with the image's H, W = "
                       r'\[8, 16\], got \[3, 8, 15\]'):
        crf(image, scores[:, :, :15])
    scores[1, 0, 0] = -0.1
    with pytest.raises(ValueError, match='non-negative'):
        crf(image, scores)


def test_a_config_or_an_override_turns_the_crf_on(tmp_path):
    child = tmp_path / 'with_crf.py'
    child.write_text(f"_base_ = '{Path(STAGE1_CONFIG).resolve()}'\n"
                     "model = dict(test_cfg=dict(crf=dict(type='DenseCRF', num_iter=5)))\n")
    overridden = apply_overrides(Config.fromfile(STAGE1_CONFIG),
                                 {'model.test_cfg.crf': {'type': 'DenseCRF', 'num_iter': 7}},
                                 source=STAGE1_CONFIG)
    with DefaultScope.overwrite_default_scope('mmseg'):
        assert MODELS.build(Config.fromfile(STAGE1_CONFIG).model).crf is None
        assert MODELS.build(Config.fromfile(str(child)).model).crf.num_iter == 5
        assert MODELS.build(overridden.model).crf.num_iter == 7


def pseudo_mask_config(data_root) -> Config:
    """The bundled stage-1 config reading the pseudo-mask split of ``data_root``."""
    cfg = Config.fromfile(STAGE1_CONFIG)
    cfg.custom_hooks[0].dataloader.dataset.data_root = str(data_root)
    cfg.custom_hooks[0].dataloader.batch_size = 4
    return cfg


def build_model(cfg: Config, state_dict: dict, **test_cfg) -> torch.nn.Module:
    model_cfg = cfg.model.copy()
    model_cfg.test_cfg = {**model_cfg.test_cfg, **test_cfg}
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(model_cfg)
    model.load_state_dict(state_dict)
    return model.eval()


def test_crf_in_test_cfg_refines_each_image_after_pamr(tiny_dataset):
    cfg = pseudo_mask_config(tiny_dataset)
    with DefaultScope.overwrite_default_scope('mmseg'):
        torch.manual_seed(0)
        state = MODELS.build(cfg.model).state_dict()
        batch = next(iter(Runner.build_dataloader(cfg.custom_hooks[0].dataloader)))
    plain = build_model(cfg, state)
    refined = build_model(cfg, state, crf=dict(type='DenseCRF', num_iter=5))
    with torch.no_grad():
        without, with_crf = plain.test_step(batch), refined.test_step(batch)
    changed = 0
    for before, after in zip(without, with_crf):
        rgb = mmcv.imread(before.img_path)[..., ::-1]  # the pipeline's image, in RGB
        expected = DenseCRF(num_iter=5)(np.ascontiguousarray(rgb),
                                        before.seg_logits.data.numpy())
        np.testing.assert_allclose(after.seg_logits.data.numpy(), expected, atol=1e-6)
        np.testing.assert_array_equal(after.pred_sem_seg.data[0].numpy(), expected.argmax(0))
        changed += int((after.pred_sem_seg.data != before.pred_sem_seg.data).sum())
    assert changed > 0


def test_pseudo_mask_command_line_adds_the_crf(tiny_dataset, tmp_path):
    cfg = pseudo_mask_config(tiny_dataset)
    with DefaultScope.overwrite_default_scope('mmseg'):
        torch.manual_seed(0)
        state = MODELS.build(cfg.model).state_dict()
    checkpoint = tmp_path / 'stage1.pth'
    torch.save({'state_dict': state, 'meta': {}}, checkpoint)
    options = ['--cfg-options', f'custom_hooks.0.dataloader.dataset.data_root={tiny_dataset}',
               '--work-dir', str(tmp_path / 'work')]
    pseudo_masks_main([STAGE1_CONFIG, str(checkpoint), '--out', str(tmp_path / 'plain')] +
                      options)
    metrics = pseudo_masks_main([STAGE1_CONFIG, str(checkpoint), '--out', str(tmp_path / 'crf'),
                                 '--crf'] + options)
    assert 0 <= metrics['pseudo/mIoU'] <= 100

    with DefaultScope.overwrite_default_scope('mmseg'):
        dataloader = Runner.build_dataloader(cfg.custom_hooks[0].dataloader)
    model = build_model(cfg, state, crf=dict(type='DenseCRF'))
    differs = False
    with torch.no_grad():
        for batch in dataloader:
            for sample in model.test_step(batch):
                written = tmp_path / 'crf' / f'{sample.img_id}.png'
                mask = np.asarray(Image.open(written))
                np.testing.assert_array_equal(mask, sample.pred_sem_seg.data[0].numpy())
                differs |= bool((mask != np.asarray(Image.open(tmp_path / 'plain' /
                                                              written.name))).any())
    assert differs
