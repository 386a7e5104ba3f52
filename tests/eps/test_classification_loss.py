import math

import pytest
import torch
import torch.nn.functional as F

from harness.eps import MultiLabelBCELoss


def test_matches_hand_computed_value():
    logits = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([[1.0, 0.0]])
    # -(log s(0) + log(1 - s(2))) / 2
    expected = -(math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2.0)))) / 2
    assert MultiLabelBCELoss()(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_matches_torch_multilabel_soft_margin_loss():
    logits = torch.randn(4, 20)
    labels = (torch.rand(4, 20) > 0.7).float()
    loss = MultiLabelBCELoss(loss_weight=2.0)(logits, labels)
    torch.testing.assert_close(loss, 2.0 * F.multilabel_soft_margin_loss(logits, labels))


def test_loss_name_is_back_propagated_by_mmengine():
    assert MultiLabelBCELoss().loss_name.startswith('loss_')


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r'\[B, C\]'):
        MultiLabelBCELoss()(torch.zeros(2, 3), torch.zeros(2, 4))
