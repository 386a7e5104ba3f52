"""Multi-scale and flipped inference of EPSClassifier: maps averaged before the background rule."""
from typing import List, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

import harness.eps  # noqa: F401
from harness.eps import EPSClassifier

BACKBONE = dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, out_indices=(3, ),
                norm_cfg=dict(type='BN'))
NO_REFINEMENT = dict(mode='whole', bg_threshold=None, pamr=None)


class ControlledMaps(EPSClassifier):
    """An EPSClassifier whose "features" are fixed functions of its input, so that the CAMHead's
    weights set the maps exactly: the 3 input channels, a column ramp 0..1 (left to right, so
    a mirrored pass sees it reversed) and the input width / 8 (so a scaled pass sees its scale),
    averaged over ``stride x stride`` pixels. It records the size of every input it sees."""

    def __init__(self, stride: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stride = stride
        self.seen: List[Tuple[int, int]] = []

    def extract_feat(self, inputs: torch.Tensor) -> List[torch.Tensor]:
        batch, _, height, width = inputs.shape
        self.seen.append((height, width))
        ramp = torch.linspace(0, 1, width).expand(batch, 1, height, width)
        scale = torch.full((batch, 1, height, width), width / 8)
        return [F.avg_pool2d(torch.cat([inputs, ramp, scale], dim=1), self.stride)]


def controlled(weights, stride=1, **test_cfg) -> ControlledMaps:
    """Maps ``[1, 3, H / stride, W / stride]`` (background, class 1, class 2) = ``weights [3, 5]``
    x features."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = ControlledMaps(stride=stride, backbone=BACKBONE,
                               decode_head=dict(type='CAMHead', in_channels=5, num_classes=2),
                               test_cfg={**NO_REFINEMENT, **test_cfg})
    with torch.no_grad():
        model.decode_head.classifier.weight.copy_(torch.tensor(weights, dtype=torch.float32)
                                                  .view(3, 5, 1, 1))
    return model.eval()


BOTH_CLASSES = [dict(class_labels=np.array([1.0, 1.0], np.float32))]
# class 1 = 3 * ramp, class 2 = 10 * input[0] - 20 * ramp: on a 1x2 image of ones the unmirrored
# pass gives logits (0, 0, 10) left and (0, 3, -10) right; the mirrored pass the other way round.
FLIP_WEIGHTS = [[0, 0, 0, 0, 0], [0, 0, 0, 3, 0], [10, 0, 0, -20, 0]]


def test_flip_averages_the_logits_before_the_softmax():
    model = controlled(FLIP_WEIGHTS, flip=True)
    inputs = torch.zeros(1, 3, 1, 2)
    inputs[:, 0] = 1
    with torch.no_grad():
        scores = model.encode_decode(inputs, BOTH_CLASSES)
    # each pixel averages (0, 0, 10) and (0, 3, -10): (0, 1.5, 0), then the softmax
    expected = torch.tensor([0.0, 1.5, 0.0]).softmax(0).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    torch.testing.assert_close(scores, expected)
    assert scores.argmax(1).flatten().tolist() == [1, 1]
    assert model.seen == [(1, 2), (1, 2)]
    # Averaging the background rule's output (the softmax) instead would pick class 2.
    after_rule = (torch.tensor([0.0, 0.0, 10.0]).softmax(0) +
                  torch.tensor([0.0, 3.0, -10.0]).softmax(0)) / 2
    assert after_rule.argmax().item() == 2


def test_without_flip_one_pass_decides_each_pixel():
    model = controlled(FLIP_WEIGHTS)
    inputs = torch.zeros(1, 3, 1, 2)
    inputs[:, 0] = 1
    with torch.no_grad():
        scores = model.encode_decode(inputs, BOTH_CLASSES)
    assert scores.argmax(1).flatten().tolist() == [2, 1]
    assert model.seen == [(1, 2)]


def test_flip_averages_cams_before_max_normalisation():
    # CAM rule (bg_threshold 0.4), class 1 = input[0] + ramp on a 1x3 image whose right pixel is
    # bright: the unmirrored pass gives (0, 0.5, 2), the mirrored one (1, 0.5, 1) once mirrored
    # back. Their mean (0.5, 0.5, 1.5) normalised once is (1/3, 1/3, 1): background left of the
    # bright pixel. Normalising each pass first would give (0.5, 0.375, 1): class 1 on the left.
    weights = [[0, 0, 0, 0, 0], [1, 0, 0, 1, 0], [0, 0, 0, 0, 0]]
    model = controlled(weights, flip=True, bg_threshold=0.4)
    inputs = torch.zeros(1, 3, 1, 3)
    inputs[0, 0, 0, 2] = 1
    labels = [dict(class_labels=np.array([1.0, 0.0], np.float32))]
    with torch.no_grad():
        scores = model.encode_decode(inputs, labels)
    torch.testing.assert_close(scores[0, :, 0], torch.tensor([[0.4, 0.4, 0.4],
                                                               [1 / 3, 1 / 3, 1.0],
                                                               [0.0, 0.0, 0.0]]))
    assert scores.argmax(1).flatten().tolist() == [0, 0, 1]


def test_scales_resize_the_input_and_average_at_the_largest_scales_maps():
    # class 1 = 2 * width / 8: 1, 2, 3, 4 at scales 0.5, 1, 1.5, 2 of an 8x8 input, mean 2.5;
    # class 2 = input[0] = 1 at every scale. The maps (at stride 1) are averaged at 16x16.
    weights = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 2], [1, 0, 0, 0, 0]]
    model = controlled(weights, scales=(0.5, 1.0, 1.5, 2.0), flip=True)
    inputs = torch.zeros(1, 3, 8, 8)
    inputs[:, 0] = 1
    with torch.no_grad():
        maps, logits = model.averaged_maps(inputs)
        scores = model.encode_decode(inputs, BOTH_CLASSES)
    assert model.seen[:8] == [(4, 4), (4, 4), (8, 8), (8, 8), (12, 12), (12, 12), (16, 16),
                              (16, 16)]
    assert maps.shape == (1, 3, 16, 16)
    torch.testing.assert_close(maps[0, :, 3, 5], torch.tensor([0.0, 2.5, 1.0]))
    assert scores.shape == (1, 3, 8, 8)
    torch.testing.assert_close(logits, torch.tensor([[2.5, 1.0]]))  # the mean of class maps
    torch.testing.assert_close(scores[0, :, 3, 5], torch.tensor([0.0, 2.5, 1.0]).softmax(0))


def test_the_rule_applies_to_the_average_then_upsampled_scores_are_refined():
    pamr = dict(type='PAMR', num_iter=3, dilations=(1, 2))
    model = controlled(FLIP_WEIGHTS, scales=(1.0, 0.5), flip=True, pamr=pamr)
    inputs = torch.rand(1, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = model.encode_decode(inputs, BOTH_CLASSES)
        maps, _ = model.averaged_maps(inputs)
        upsampled = F.interpolate(model.class_scores(maps, torch.ones(1, 2)), size=(6, 8),
                                  mode='bilinear', align_corners=False)
        expected = model.pamr(inputs, upsampled)
    torch.testing.assert_close(scores, expected)


def test_one_pass_keeps_the_networks_resolution_for_the_rule():
    # at stride 2 the rule sees the 3x4 maps and its scores are upsampled, as without scales
    model = controlled(FLIP_WEIGHTS, stride=2)
    inputs = torch.rand(1, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = model.encode_decode(inputs, BOTH_CLASSES)
        maps, _ = model.decode_head(model.extract_feat(inputs))
    expected = F.interpolate(model.class_scores(maps, torch.ones(1, 2)), size=(6, 8),
                             mode='bilinear', align_corners=False)
    torch.testing.assert_close(scores, expected)


def test_defaults_are_one_unmirrored_pass():
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = ControlledMaps(backbone=BACKBONE,
                               decode_head=dict(type='CAMHead', in_channels=5, num_classes=2))
    assert (model.scales, model.flip, model.crf) == ((1.0, ), False, None)
    with torch.no_grad():
        model.eval().encode_decode(torch.rand(1, 3, 8, 8), BOTH_CLASSES)
    assert model.seen == [(8, 8)]


@pytest.mark.parametrize('test_cfg,error,match', [
    (dict(scales=()), ValueError, r'test_cfg.scales .* got \(\)'),
    (dict(scales=(1.0, 0.0)), ValueError, r'positive .* got \(1.0, 0.0\)'),
    (dict(scales='1.0'), ValueError, "test_cfg.scales .* got '1.0'"),
    (dict(scales=(True, )), ValueError, 'test_cfg.scales'),
    (dict(flip='yes'), TypeError, "test_cfg.flip must be true or false, got 'yes'"),
])
def test_bad_test_cfg_is_named(test_cfg, error, match):
    with pytest.raises(error, match=match):
        controlled(FLIP_WEIGHTS, **test_cfg)
