import pytest
import torch

from harness.eps import IRDLoss

NO_REFINEMENT = dict(type='PAMR', num_iter=0, dilations=(1, ))
# M_r = M_fg: the softmax foreground, unrefined, so that values can be computed by hand
LITERAL = dict(pamr=NO_REFINEMENT, refine='softmax')


def log_probs(*probabilities):
    """Maps ``[1, K, 1, N]`` whose softmax over K gives the listed per-pixel probabilities."""
    return torch.log(torch.tensor(probabilities).T).view(1, len(probabilities[0]), 1, -1)


def test_hand_computed_value_drops_inconsistent_pixels():
    # background + 1 present class, 3 pixels; foreground prob M_fg = [0.9, 0.2, 0.7]
    maps = log_probs([0.1, 0.9], [0.8, 0.2], [0.3, 0.7])
    saliency = torch.tensor([1.0, 0.0, 0.1]).view(1, 1, 1, 3)
    # without refinement M_r = M_fg: B(M_r) = [1, 0, 1], B(M_s) = [1, 0, 0] -> pixel 3 dropped
    loss = IRDLoss(threshold=0.5, **LITERAL)(maps, saliency, torch.ones(1, 1),
                                                        torch.zeros(1, 3, 1, 3))
    expected = ((1.0 - 0.9) ** 2 + (0.0 - 0.2) ** 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_threshold_decides_what_is_inconsistent():
    maps = log_probs([0.4, 0.6])
    saliency = torch.full((1, 1, 1, 1), 0.7)
    images = torch.zeros(1, 3, 1, 1)
    kept = IRDLoss(threshold=0.5, **LITERAL)(maps, saliency, torch.ones(1, 1), images)
    assert kept.item() == pytest.approx((0.7 - 0.6) ** 2, rel=1e-5)
    dropped = IRDLoss(threshold=0.65, **LITERAL)(maps, saliency, torch.ones(1, 1), images)
    assert dropped.item() == 0.0


def test_absent_classes_are_not_foreground():
    # classes 1 and 2; only class 2 present: M_fg = 0.3 (not 0.3 + 0.6)
    maps = log_probs([0.1, 0.6, 0.3])
    loss = IRDLoss(threshold=0.5, **LITERAL)(
        maps, torch.zeros(1, 1, 1, 1), torch.tensor([[0.0, 1.0]]), torch.zeros(1, 3, 1, 1))
    assert loss.item() == pytest.approx(0.3 ** 2, rel=1e-5)


def test_all_inconsistent_image_gives_zero_not_nan_and_a_finite_gradient():
    maps = torch.tensor([[-5.0], [5.0]]).view(1, 2, 1, 1).expand(1, 2, 4, 4).clone()
    maps.requires_grad_(True)
    loss = IRDLoss()(maps, torch.zeros(1, 1, 4, 4), torch.ones(1, 1), torch.rand(1, 3, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(maps.grad).all()


def test_batch_mean_of_per_image_losses():
    maps = torch.cat([log_probs([0.1, 0.9]), log_probs([0.8, 0.2])])
    saliency = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    loss = IRDLoss(**LITERAL)(maps, saliency, torch.ones(2, 1), torch.zeros(2, 3, 1, 1))
    assert loss.item() == pytest.approx((0.1 ** 2 + 0.2 ** 2) / 2, rel=1e-5)


def test_refinement_uses_the_image_and_carries_no_gradient():
    torch.manual_seed(0)
    maps = torch.randn(2, 4, 8, 8, requires_grad=True)
    images = torch.rand(2, 3, 32, 32)
    loss = IRDLoss()(maps, torch.rand(2, 1, 32, 32), torch.ones(2, 3), images)
    loss.backward()
    assert torch.isfinite(loss) and maps.grad.abs().sum() > 0
    assert not images.requires_grad


def test_cam_reference_uses_max_normalised_class_maps_of_present_classes():
    # two classes, 3 pixels; class 1 present with raw maps [4, 2, -1] -> CAM [1, 0.5, 0];
    # class 2 absent (large maps must not count)
    maps = torch.tensor([[0.0, 0.0, 0.0], [4.0, 2.0, -1.0], [9.0, 9.0, 9.0]]).view(1, 3, 1, 3)
    loss = IRDLoss(threshold=0.6, pamr=NO_REFINEMENT, refine='cam')
    cam = loss.map_to_refine(maps, torch.tensor([[1.0, 0.0]]), torch.zeros(1, 1, 1, 3))
    torch.testing.assert_close(cam.flatten(), torch.tensor([1.0, 0.5, 0.0]))
    # B(M_r) = [1, 0, 0] vs B(M_s) = [1, 1, 0]: pixel 2 is dropped
    saliency = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    probs = maps.softmax(1)[0, 1, 0]
    expected = ((1 - probs[0]) ** 2 + probs[2] ** 2) / 2
    value = loss(maps, saliency, torch.tensor([[1.0, 0.0]]), torch.zeros(1, 3, 1, 3))
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_rejects_unknown_refined_map():
    with pytest.raises(ValueError, match="refine must be one of \\('cam', 'softmax'\\)"):
        IRDLoss(refine='probabilities')


def test_needs_images():
    with pytest.raises(ValueError, match='input images'):
        IRDLoss()(torch.randn(1, 2, 2, 2), torch.rand(1, 1, 2, 2), torch.ones(1, 1))


@pytest.mark.parametrize('threshold', [0.0, 1.0, 2.0])
def test_rejects_threshold_outside_the_open_unit_interval(threshold):
    with pytest.raises(ValueError, match='threshold'):
        IRDLoss(threshold=threshold)


def test_warm_up_drops_nothing_until_the_runner_reaches_warmup_iters():
    from mmengine.logging import MessageHub
    maps = log_probs([0.1, 0.9], [0.8, 0.2], [0.3, 0.7])
    saliency = torch.tensor([1.0, 0.0, 0.1]).view(1, 1, 1, 3)
    args = (maps, saliency, torch.ones(1, 1), torch.zeros(1, 3, 1, 3))
    loss = IRDLoss(warmup_iters=5, **LITERAL)
    hub = MessageHub.get_instance('test_ird_warmup')
    hub.update_info('iter', 4)
    every_pixel = ((1.0 - 0.9) ** 2 + (0.0 - 0.2) ** 2 + (0.1 - 0.7) ** 2) / 3
    assert loss(*args).item() == pytest.approx(every_pixel, rel=1e-5)
    hub.update_info('iter', 5)
    assert loss(*args).item() == pytest.approx(((0.1) ** 2 + 0.2 ** 2) / 2, rel=1e-5)


def test_negative_warm_up_is_rejected():
    with pytest.raises(ValueError, match='warmup_iters'):
        IRDLoss(warmup_iters=-1)
