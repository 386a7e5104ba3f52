import pytest
import torch
import torch.nn.functional as F

from harness.eps import EPSLoss


def reference_eps_loss(cam, saliency, label, tau, lam):
    """The EPS authors' get_eps_loss (background as the LAST channel), restated on the CPU."""
    b, c, h, w = cam.size()
    saliency = F.interpolate(saliency, size=(h, w))
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


@pytest.mark.parametrize('lam', [0.3, 0.8])
@pytest.mark.parametrize('tau', [0.0, 0.4, 0.9])
def test_matches_the_eps_reference(tau, lam):
    torch.manual_seed(0)
    maps = torch.randn(3, 6, 8, 8) * 3
    # a soft saliency map: the overlap ratio rounds it, the squared error must not
    saliency = torch.rand(3, 1, 8, 8)
    labels = (torch.rand(3, 5) > 0.5).float()
    loss = EPSLoss(tau=tau, lam=lam)(maps, saliency, labels)
    # ours puts the background first, the reference last
    expected = reference_eps_loss(torch.roll(maps, -1, dims=1), saliency, labels, tau, lam)
    torch.testing.assert_close(loss, expected)


def test_nearest_matches_the_eps_reference_on_saliency_at_the_image_size():
    # as in training: saliency at the image size, maps at output stride 8
    torch.manual_seed(0)
    maps = torch.randn(3, 6, 8, 8) * 3
    saliency = torch.rand(3, 1, 64, 64)
    labels = (torch.rand(3, 5) > 0.5).float()
    loss = EPSLoss(tau=0.4, lam=0.5, resize='nearest')(maps, saliency, labels)
    expected = reference_eps_loss(torch.roll(maps, -1, dims=1), saliency, labels, 0.4, 0.5)
    torch.testing.assert_close(loss, expected)


# Maps 2x2, one class of probability 0.75 everywhere (background 0.25). The 4x4 saliency map has
# in every 2x2 cell a top-left pixel of 1.0 and three of 0.2. Resized to the maps:
#   'nearest':  the top-left pixels, 1.0: the class overlaps the saliency (ratio 1 > tau), it is
#               foreground; estimate 0.5 * 0.75 + 0.5 * (1 - 0.25) = 0.75, loss (1 - 0.75)^2
#   'bilinear': the cells' centres, (1.0 + 3 * 0.2) / 4 = 0.4, which rounds to 0: ratio 0, the
#               class counts as background; estimate 0.5 * 0 + 0.5 * (1 - 1) = 0, loss 0.4^2
UNIFORM_CLASS = torch.log(torch.tensor([0.25, 0.75])).view(1, 2, 1, 1).expand(1, 2, 2, 2)
CELL = torch.tensor([[1.0, 0.2], [0.2, 0.2]])


@pytest.mark.parametrize('resize,expected', [('nearest', 0.25 ** 2), ('bilinear', 0.4 ** 2)])
def test_saliency_is_resized_to_the_maps_as_chosen(resize, expected):
    saliency = CELL.repeat(2, 2).view(1, 1, 4, 4)
    loss = EPSLoss(tau=0.4, lam=0.5, resize=resize)(UNIFORM_CLASS, saliency, torch.ones(1, 1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_overlap_ratio_adds_its_epsilon_to_the_denominator_once():
    # Maps 2x2: the class (probability 0.75) covers pixel 0 only, as does the saliency map, so
    # the overlap ratio is 1 / (1 + 1e-4) = 0.99990 here; the EPS code adds 1e-4 per pixel,
    # 1 / (1 + 4e-4) = 0.99960. With tau between them the class is foreground here (estimate
    # = the class probability: loss 0.25^2 at every pixel) and background in the EPS code
    # (estimate 0: loss 1 / 4).
    maps = torch.log(torch.tensor([[0.25, 0.75], [0.75, 0.25], [0.75, 0.25], [0.75, 0.25]]))
    maps = maps.T.reshape(1, 2, 2, 2)
    saliency = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    loss = EPSLoss(tau=0.9998, lam=0.5)(maps, saliency, torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.25 ** 2, rel=1e-5)
    eps_code = reference_eps_loss(torch.roll(maps, -1, dims=1), saliency, torch.ones(1, 1),
                                  0.9998, 0.5)
    assert eps_code.item() == pytest.approx(0.25, rel=1e-5)


def test_rejects_unknown_resize_mode():
    with pytest.raises(ValueError, match=r"EPSLoss: resize must be one of \('nearest', "
                                         r"'bilinear'\), got 'bicubic'"):
        EPSLoss(resize='bicubic')


# One pixel, background + 2 classes, class 1 present, class 2 absent: softmax [0.1, 0.6, 0.3].
# The absent class keeps M_fg + M_bg below 1, so lambda and 1 - lambda weigh different terms.
ONE_PIXEL = torch.log(torch.tensor([0.1, 0.6, 0.3])).view(1, 3, 1, 1)
CLASS_1_ONLY = torch.tensor([[1.0, 0.0]])


def test_hand_computed_single_pixel():
    # saliency 0.7 rounds to 1 and class 1 rounds to 1: overlap 1 > tau, so class 1 is
    # foreground: M_fg = 0.6, M_bg = 0.1; estimate = 0.3 * 0.6 + 0.7 * (1 - 0.1) = 0.81
    # (lambda and 1 - lambda swapped: 0.69; against the rounded saliency 1: (1 - 0.81)^2)
    loss = EPSLoss(tau=0.4, lam=0.3)(ONE_PIXEL, torch.full((1, 1, 1, 1), 0.7), CLASS_1_ONLY)
    assert loss.item() == pytest.approx((0.7 - 0.81) ** 2, rel=1e-5)


def test_missing_class_counts_as_background():
    # the class covers the pixel but the saliency 0.3 rounds to "not salient": overlap 0 < tau,
    # so class 1 counts with the background: M_fg = 0, M_bg = 0.1 + 0.6 = 0.7;
    # estimate = 0.3 * 0 + 0.7 * (1 - 0.7) = 0.21 (swapped: 0.09; as foreground: 0.81)
    loss = EPSLoss(tau=0.4, lam=0.3)(ONE_PIXEL, torch.full((1, 1, 1, 1), 0.3), CLASS_1_ONLY)
    assert loss.item() == pytest.approx((0.3 - 0.21) ** 2, rel=1e-5)


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
