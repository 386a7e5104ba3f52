import pytest
import torch
import torch.nn.functional as F

from harness.eps import EPSLoss


def reference_eps_loss(cam, saliency, label, tau, lam):
    """The EPS authors' get_eps_loss (background as the LAST channel), restated on the CPU."""
    b, c, h, w = cam.size()
    num_classes = c - 1
    label_map = label.view(b, num_classes, 1, 1).expand(b, num_classes, h, w).bool()
    label_map_fg = torch.zeros(b, num_classes + 1, h, w).bool()
    label_map_bg = torch.zeros(b, num_classes + 1, h, w).bool()
    label_map_bg[:, num_classes] = True
    sal_pred = F.softmax(cam, dim=1)
    iou_saliency = (torch.round(sal_pred[:, :-1].detach()) * torch.round(saliency)).view(
        b, num_classes, -1).sum(-1) / (torch.round(sal_pred[:, :-1].detach()) + 1e-04).view(
            b, num_classes, -1).sum(-1)
    valid_channel = (iou_saliency > tau).view(b, num_classes, 1, 1).expand(b, num_classes, h, w)
    label_map_fg[:, :-1] = label_map & valid_channel
    label_map_bg[:, :-1] = label_map & (~valid_channel)
    fg_map = torch.zeros_like(sal_pred)
    bg_map = torch.zeros_like(sal_pred)
    fg_map[label_map_fg] = sal_pred[label_map_fg]
    bg_map[label_map_bg] = sal_pred[label_map_bg]
    fg_map = fg_map.sum(dim=1, keepdim=True)
    bg_map = 1 - bg_map.sum(dim=1, keepdim=True)
    return F.mse_loss(fg_map * lam + bg_map * (1 - lam), saliency)


@pytest.mark.parametrize('tau', [0.0, 0.4, 0.9])
def test_matches_the_eps_reference(tau):
    torch.manual_seed(0)
    maps = torch.randn(3, 6, 8, 8) * 3
    saliency = (torch.rand(3, 1, 8, 8) > 0.5).float()
    labels = (torch.rand(3, 5) > 0.5).float()
    loss = EPSLoss(tau=tau, lam=0.5)(maps, saliency, labels)
    # ours puts the background first, the reference last
    expected = reference_eps_loss(torch.roll(maps, -1, dims=1), saliency, labels, tau, 0.5)
    torch.testing.assert_close(loss, expected)


def test_hand_computed_single_pixel():
    # one pixel, background + 1 class; softmax -> [0.25, 0.75]; saliency 1; class present and
    # overlapping (round(0.75) * round(1) / 1 = 1 > tau) -> fg = 0.75, bg = 0.25
    maps = torch.log(torch.tensor([0.25, 0.75])).view(1, 2, 1, 1)
    loss = EPSLoss(tau=0.4, lam=0.5)(maps, torch.ones(1, 1, 1, 1), torch.ones(1, 1))
    estimate = 0.5 * 0.75 + 0.5 * (1 - 0.25)
    assert loss.item() == pytest.approx((1 - estimate) ** 2)


def test_missing_class_counts_as_background():
    # the class covers the pixel but the saliency says "not salient": overlap 0 < tau, so the
    # class map is counted with the background: estimate = 0.5*0 + 0.5*(1 - 1) = 0 = saliency
    maps = torch.log(torch.tensor([0.25, 0.75])).view(1, 2, 1, 1)
    loss = EPSLoss(tau=0.4)(maps, torch.zeros(1, 1, 1, 1), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_saliency_is_resized_to_the_maps():
    loss = EPSLoss()(torch.randn(2, 3, 4, 4), torch.rand(2, 1, 16, 16), torch.ones(2, 2))
    assert loss.shape == () and torch.isfinite(loss)


def test_gradient_reaches_the_maps():
    maps = torch.randn(2, 3, 4, 4, requires_grad=True)
    EPSLoss()(maps, torch.rand(2, 1, 4, 4), torch.ones(2, 2)).backward()
    assert maps.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs', [dict(tau=1.5), dict(lam=-0.1)])
def test_rejects_out_of_range_parameters(kwargs):
    with pytest.raises(ValueError, match='tau and lam'):
        EPSLoss(**kwargs)


def test_rejects_labels_of_the_wrong_width():
    with pytest.raises(ValueError, match='labels must be'):
        EPSLoss()(torch.randn(1, 3, 4, 4), torch.rand(1, 1, 4, 4), torch.ones(1, 3))
