import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData

import harness.eps  # noqa: F401
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

BACKBONE = dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, out_indices=(3, ),
                strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), norm_cfg=dict(type='BN'))


def build(**kwargs):
    cfg = dict(type='EPSClassifier', backbone=BACKBONE,
               decode_head=dict(type='CAMHead', in_channels=64, num_classes=3), **kwargs)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg)


def samples(batch=2, size=(32, 32), labels=((1, 0, 1), (0, 1, 0))):
    out = []
    for i in range(batch):
        sample = SegDataSample(metainfo=dict(class_labels=np.array(labels[i], np.float32),
                                             img_shape=size, ori_shape=size))
        sample.gt_saliency = PixelData(data=torch.rand(1, *size))
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


def test_saliency_of_a_smaller_image_is_padded_like_the_batch():
    model = build(loss_sal=dict(type='IRDLoss'))
    batch = samples(size=(24, 32))
    assert torch.isfinite(model.loss(torch.randn(2, 3, 32, 32), batch)['loss_sal'])


def test_missing_saliency_explains_the_fix():
    batch = samples()
    del batch[0].gt_saliency
    with pytest.raises(KeyError, match='LoadSaliencyMap'):
        build().loss(torch.randn(2, 3, 32, 32), batch)


def test_predict_gives_pseudo_masks_restricted_to_the_image_classes():
    model = build().eval()
    with torch.no_grad():
        out = model.predict(torch.randn(2, 3, 32, 32), samples())
    for sample, allowed in zip(out, ({0, 1, 3}, {0, 2})):
        assert sample.pred_sem_seg.data.shape == (1, 32, 32)
        assert sample.seg_logits.data.shape == (4, 32, 32)
        assert set(sample.pred_sem_seg.data.unique().tolist()) <= allowed


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


def test_without_labels_the_predicted_classes_are_used():
    model = build().eval()
    batch = samples()
    for sample in batch:
        sample.set_metainfo(dict(class_labels=None))
        del sample.class_labels
    with torch.no_grad():
        out = model.predict(torch.randn(2, 3, 32, 32), batch)
    assert out[0].pred_sem_seg.data.shape == (1, 32, 32)
