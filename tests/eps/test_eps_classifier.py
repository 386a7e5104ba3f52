import numpy as np
import pytest
import torch
from controlled_classifier import controlled_classifier, paint
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from reference_pamr import ReferencePAMR

import harness.eps  # noqa: F401
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

BACKBONE = dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, out_indices=(3, ),
                strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), norm_cfg=dict(type='BN'))
WITHOUT_PAMR = dict(mode='whole', bg_threshold=None, pamr=None)


def build(**kwargs):
    cfg = dict(type='EPSClassifier', backbone=BACKBONE,
               decode_head=dict(type='CAMHead', in_channels=64, num_classes=3), **kwargs)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg)


def samples(batch=2, size=(32, 32), labels=((1, 0, 1), (0, 1, 0)), saliency=None):
    """Data samples with image-level ``labels``, ``saliency`` maps ``[1, h, w]`` (default:
    random, of ``size``) and all-background masks of ``size``."""
    out = []
    for i in range(batch):
        sample = SegDataSample(metainfo=dict(class_labels=np.array(labels[i], np.float32),
                                             img_shape=size, ori_shape=size))
        sample.gt_saliency = PixelData(
            data=torch.rand(1, *size) if saliency is None else saliency[i])
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, *size, dtype=torch.long))
        out.append(sample)
    return out


@pytest.mark.parametrize('loss_sal', [dict(type='IRDLoss'), dict(type='EPSLoss'), None])
def test_loss_holds_classification_and_saliency_terms(loss_sal):
    model = build(loss_sal=loss_sal)
    losses = model.loss(torch.randn(2, 3, 32, 32), samples())
    expected = {'loss_cls'} | ({'loss_sal'} if loss_sal else set())
    assert set(losses) == expected
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert model.decode_head.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('loss_sal', [dict(type='IRDLoss'), dict(type='EPSLoss')])
def test_saliency_of_a_smaller_image_is_padded_at_the_bottom_right_like_the_batch(loss_sal):
    # mmseg pads a smaller image at the bottom and right: its saliency must line up with it
    model = controlled_classifier(loss_sal=loss_sal)
    image_a, _ = paint((8, 8), [(1, 1, 1, 3, 3), (3, 5, 2, 2, 4)])
    image_b, _ = paint((8, 8), [(2, 2, 2, 4, 4)])
    images = torch.stack([image_a, image_b])
    generator = torch.Generator().manual_seed(0)
    small = torch.rand(1, 24, 28, generator=generator)
    full = torch.rand(1, 32, 32, generator=generator)
    losses = model.loss(images, samples(saliency=(small, full)))

    maps, _ = model.decode_head(model.extract_feat(images))
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    bottom_right, top_left = torch.zeros(2, 2, 1, 32, 32)
    bottom_right[0, :, :24, :28] = top_left[0, :, 8:, 4:] = small
    bottom_right[1] = top_left[1] = full
    expected = model.loss_sal(maps, bottom_right, labels, images)
    torch.testing.assert_close(losses['loss_sal'], expected)
    # the inputs tell the two sides apart
    assert abs(model.loss_sal(maps, top_left, labels, images).item() - expected.item()) > 1e-4


def test_missing_saliency_explains_the_fix():
    batch = samples()
    del batch[0].gt_saliency
    with pytest.raises(KeyError, match='LoadSaliencyMap'):
        build().loss(torch.randn(2, 3, 32, 32), batch)


def test_predict_gives_the_painted_classes_of_the_image_labels_only():
    model = controlled_classifier(test_cfg=WITHOUT_PAMR).eval()
    image_a, truth_a = paint((8, 6), [(1, 1, 1, 3, 3), (3, 5, 2, 2, 3)])
    image_b, truth_b = paint((8, 6), [(2, 1, 2, 3, 3), (3, 5, 1, 2, 2)])
    with torch.no_grad():
        out = model.predict(torch.stack([image_a, image_b]),
                            samples(size=(32, 24), labels=((1, 0, 1), (0, 1, 0))))
    assert torch.equal(out[0].pred_sem_seg.data[0], truth_a)
    # image b is labelled with class 2 only: its blue (class 3) block is background
    assert torch.equal(out[1].pred_sem_seg.data[0], truth_b.where(truth_b != 3, 0))
    assert out[1].seg_logits.data.shape == (4, 32, 24)


def test_learned_background_scores_are_a_softmax_over_present_classes():
    model = build(test_cfg=dict(mode='whole', bg_threshold=None, pamr=None))
    maps = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).view(1, 4, 1, 1)
    scores = model.class_scores(maps, torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(scores.flatten(), torch.tensor([0.1, 0.2, 0.0, 0.4]) / 0.7)


def test_cam_background_rule_uses_max_normalised_maps_and_a_constant():
    model = build(test_cfg=dict(mode='whole', bg_threshold=0.3, pamr=None))
    maps = torch.zeros(1, 4, 1, 2)
    maps[0, 1] = torch.tensor([2.0, 1.0])
    maps[0, 2] = torch.tensor([5.0, 5.0])  # absent class
    scores = model.class_scores(maps, torch.tensor([[1.0, 0.0, 0.0]]))
    expected = torch.tensor([[0.3, 0.3], [1.0, 0.5], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(scores[0, :, 0], expected)


def test_without_labels_each_image_uses_the_classes_it_predicts():
    # image a: red on 16 of 64 cells, green on 3: class 1's logit s (2 * 16 - 3) / 64 > 0,
    # class 2's s (2 * 3 - 16) / 64 < 0: only class 1 is predicted, the green block is
    # background. Image b: green on 9 cells, nothing else: only class 2 is predicted.
    model = controlled_classifier(test_cfg=WITHOUT_PAMR).eval()
    image_a, truth_a = paint((8, 8), [(1, 1, 1, 4, 4), (2, 6, 2, 1, 3)])
    image_b, truth_b = paint((8, 8), [(2, 2, 3, 3, 3)])
    batch = samples()
    for sample in batch:
        sample.set_metainfo(dict(class_labels=None))
        del sample.class_labels
    with torch.no_grad():
        out = model.predict(torch.stack([image_a, image_b]), batch)
    assert torch.equal(out[0].pred_sem_seg.data[0], truth_a.where(truth_a == 1, 0))
    assert torch.equal(out[1].pred_sem_seg.data[0], truth_b)


def test_encode_decode_refines_the_scores_with_pamr():
    # at output stride 4 the upsampled scores blur the edges of the blocks; PAMR, on the
    # colours of the input, must refine them as the reference PAMR does
    pamr = dict(type='PAMR', num_iter=10, dilations=(1, 2, 4))
    image, _ = paint((8, 6), [(1, 1, 1, 3, 3), (2, 5, 3, 2, 2)])
    inputs, batch = image[None], samples(batch=1, size=(32, 24), labels=((1, 1, 0), ))
    unrefined = controlled_classifier(stride=4, test_cfg=WITHOUT_PAMR).eval()
    refining = controlled_classifier(
        stride=4, test_cfg=dict(mode='whole', bg_threshold=None, pamr=pamr)).eval()
    with torch.no_grad():
        scores = unrefined.predict(inputs, batch)[0].seg_logits.data
        out = refining.predict(inputs, batch)[0]
        expected = ReferencePAMR(10, (1, 2, 4))(inputs, scores[None])[0]
    torch.testing.assert_close(out.seg_logits.data, expected, rtol=0, atol=1e-5)
    assert torch.equal(out.pred_sem_seg.data[0], expected.argmax(0))
    assert not torch.equal(expected.argmax(0), scores.argmax(0))
