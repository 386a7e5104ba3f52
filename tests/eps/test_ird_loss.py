import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.runner import Runner
from reference_pamr import ReferencePAMR

from harness.eps import IRDLoss
from harness.eps.checkpoints import trusted_checkpoint_loading
from harness.eps.ird_loss import REFINED_MAPS

NO_REFINEMENT = dict(type='PAMR', num_iter=0, dilations=(1, ))
# M_r = M_fg: the softmax foreground, unrefined, so that values can be computed by hand
LITERAL = dict(pamr=NO_REFINEMENT, refine='softmax')
DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)


def log_probs(*probabilities):
    """Maps ``[1, K, 1, N]`` whose softmax over K gives the listed per-pixel probabilities."""
    return torch.log(torch.tensor(probabilities).T).view(1, len(probabilities[0]), 1, -1)


def row(*values):
    """A ``[1, 1, 1, N]`` map (saliency) of the listed pixel values."""
    return torch.tensor(values).view(1, 1, 1, -1)


def reference_ird_loss(maps, saliency, labels, images, threshold, refine, pamr):
    """The IRD loss restated image by image from its formula, with ``pamr`` as the refinement.

    Per image: ``M_fg`` is the sum of the upsampled softmax maps of the present classes; the map
    that PAMR refines is ``M_fg`` (``'softmax'``) or the pixel-wise max of the present classes'
    max-normalised CAMs at map resolution, upsampled like ``M_fg`` (``'cam'``); the loss is the
    mean squared error over the pixels where ``B(M_r)`` and ``B(M_s)`` agree. The batch loss is
    the mean of the images'.
    """
    per_image = []
    for image_maps, image_saliency, image_labels, image in zip(maps, saliency, labels, images):
        present = image_labels.nonzero().flatten() + 1  # channel 0 is the background
        probs = F.interpolate(image_maps.softmax(0)[None], size=image.shape[-2:],
                              mode='bilinear', align_corners=False)[0]
        foreground = probs[present].sum(0)
        if refine == 'softmax':
            to_refine = foreground
        else:
            cams = image_maps[present].clamp(min=0)
            cam = (cams / cams.amax(dim=(1, 2), keepdim=True)).amax(0)
            to_refine = F.interpolate(cam[None, None], size=image.shape[-2:], mode='bilinear',
                                      align_corners=False)[0, 0]
        with torch.no_grad():
            refined = pamr(image[None], to_refine[None, None])[0, 0]
        kept = (refined > threshold) == (image_saliency[0] > threshold)
        per_image.append(((image_saliency[0] - foreground)[kept] ** 2).mean())
    return torch.stack(per_image).mean()


# Background + 1 present class, 3 pixels: M_fg = [0.9, 0.2, 0.7], M_s = [1.0, 0.0, 0.1]. Without
# refinement M_r = M_fg: B(M_r) = [1, 0, 1], B(M_s) = [1, 0, 0], so pixel 3 is inconsistent.
THREE_PIXELS = (log_probs([0.1, 0.9], [0.8, 0.2], [0.3, 0.7]), row(1.0, 0.0, 0.1),
                torch.ones(1, 1), torch.zeros(1, 3, 1, 3))
PIXEL_3_DROPPED = ((1.0 - 0.9) ** 2 + (0.0 - 0.2) ** 2) / 2
NOTHING_DROPPED = ((1.0 - 0.9) ** 2 + (0.0 - 0.2) ** 2 + (0.1 - 0.7) ** 2) / 3


def test_hand_computed_value_drops_inconsistent_pixels():
    loss = IRDLoss(threshold=0.5, **LITERAL)(*THREE_PIXELS)
    assert loss.item() == pytest.approx(PIXEL_3_DROPPED, rel=1e-5)


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


def test_foreground_is_the_sum_over_present_classes():
    # background + 3 classes, classes 1 and 2 present, class 3 absent; 3 pixels:
    #   probabilities             M_fg = p1 + p2   saliency   B(M_r) vs B(M_s)
    #   [0.1,  0.3,  0.35, 0.25]  0.65             0.8        1 = 1: kept, (0.8 - 0.65)^2
    #   [0.5,  0.1,  0.2,  0.2 ]  0.3              0.0        0 = 0: kept, (0.0 - 0.3)^2
    #   [0.05, 0.5,  0.05, 0.4 ]  0.55             0.2        1 != 0: dropped
    # (the max over present classes would drop pixel 1 and keep pixel 3: (0.04 + 0.09) / 2)
    maps = log_probs([0.1, 0.3, 0.35, 0.25], [0.5, 0.1, 0.2, 0.2], [0.05, 0.5, 0.05, 0.4])
    loss = IRDLoss(threshold=0.5, **LITERAL)(maps, row(0.8, 0.0, 0.2),
                                             torch.tensor([[1.0, 1.0, 0.0]]),
                                             torch.zeros(1, 3, 1, 3))
    assert loss.item() == pytest.approx((0.15 ** 2 + 0.3 ** 2) / 2, rel=1e-5)


def test_all_inconsistent_image_gives_zero_not_nan_and_a_finite_gradient():
    maps = torch.tensor([[-5.0], [5.0]]).view(1, 2, 1, 1).expand(1, 2, 4, 4).clone()
    maps.requires_grad_(True)
    loss = IRDLoss()(maps, torch.zeros(1, 1, 4, 4), torch.ones(1, 1), torch.rand(1, 3, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(maps.grad).all()


def test_batch_mean_of_per_image_means():
    # image 1: M_fg = [0.9, 0.2, 0.7, 0.4], M_s = [1.0, 0.0, 0.1, 0.3] -> pixel 3 dropped,
    #          squared errors 0.01 + 0.04 + 0.01 over 3 kept pixels = 0.02
    # image 2: M_fg = [0.6, 0.3, 0.8, 0.1], M_s = [0.2, 0.0, 0.9, 0.7] -> pixels 1, 4 dropped,
    #          squared errors 0.09 + 0.01 over 2 kept pixels = 0.05
    # per-image means averaged: 0.035 (pooled over the 5 kept pixels: 0.032; over all 8: 0.02)
    maps = torch.cat([log_probs([0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]),
                      log_probs([0.4, 0.6], [0.7, 0.3], [0.2, 0.8], [0.9, 0.1])])
    saliency = torch.cat([row(1.0, 0.0, 0.1, 0.3), row(0.2, 0.0, 0.9, 0.7)])
    loss = IRDLoss(threshold=0.5, **LITERAL)(maps, saliency, torch.ones(2, 1),
                                             torch.zeros(2, 3, 1, 4))
    assert loss.item() == pytest.approx(0.035, rel=1e-5)


def test_cam_reference_is_the_max_of_the_present_classes_max_normalised_maps():
    # classes 1 and 2 present, class 3 absent (its large maps must not count); 4 pixels:
    #   class 1 raw [4, 2, -1, 0]  -> CAM [1, 0.5, 0, 0]
    #   class 2 raw [1, 3, 6, 1.5] -> CAM [1/6, 0.5, 1, 0.25]
    #   pixel-wise max: [1, 0.5, 1, 0.25] (their sum would be [7/6, 1, 1, 0.25])
    maps = torch.tensor([[0.0, 0.0, 0.0, 0.0], [4.0, 2.0, -1.0, 0.0], [1.0, 3.0, 6.0, 1.5],
                         [9.0, 9.0, 9.0, 9.0]]).view(1, 4, 1, 4)
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    loss = IRDLoss(threshold=0.6, pamr=NO_REFINEMENT, refine='cam')
    cam = loss.map_to_refine(maps, labels, torch.zeros(1, 1, 1, 4))
    torch.testing.assert_close(cam.flatten(), torch.tensor([1.0, 0.5, 1.0, 0.25]))
    # B(M_r) = [1, 0, 1, 0] vs B(M_s) = [1, 1, 0, 0]: pixels 2 and 3 are dropped (with the sum
    # of the CAMs only pixel 3 would be)
    saliency = row(1.0, 1.0, 0.0, 0.3)
    foreground = maps.softmax(1)[0, 1:3, 0].sum(0)
    expected = ((1 - foreground[0]) ** 2 + (0.3 - foreground[3]) ** 2) / 2
    value = loss(maps, saliency, labels, torch.zeros(1, 3, 1, 4))
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize('refine', REFINED_MAPS)
def test_matches_the_formula_with_the_reference_pamr_on_maps_smaller_than_the_image(refine):
    generator = torch.Generator().manual_seed(0)
    # images of two colour halves with texture, so that PAMR's affinities follow an edge
    images = torch.rand(2, 3, 32, 32, generator=generator) * 0.3
    images[:, 0, :, 16:] += 0.7
    maps = torch.randn(2, 4, 8, 8, generator=generator) * 3
    saliency = torch.rand(2, 1, 32, 32, generator=generator)
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    reference_pamr = ReferencePAMR(10, DEFAULT_DILATIONS)

    maps.requires_grad_(True)
    loss = IRDLoss(threshold=0.5, refine=refine)(maps, saliency, labels, images)
    expected = reference_ird_loss(maps, saliency, labels, images, 0.5, refine, reference_pamr)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, maps)[0],
                               torch.autograd.grad(expected, maps)[0])
    # the inputs are such that the refinement matters: unrefined, other pixels would be dropped
    unrefined = reference_ird_loss(maps, saliency, labels, images, 0.5, refine,
                                   ReferencePAMR(0, DEFAULT_DILATIONS))
    assert abs(unrefined.item() - expected.item()) > 1e-4


def test_refined_cam_lies_on_the_grid_of_the_foreground_and_the_saliency():
    # One class, CAM [0, 1] on a 1x2 map, image 1x8, unrefined, threshold 0.2. Upsampled as M_fg
    # is (align_corners=False) the CAM is [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1], so
    # B(M_r) = [0, 0, 0, 1, 1, 1, 1, 1], which is B(M_s) here: nothing is inconsistent. With
    # align_corners=True (PAMR's own upsampling) it would be [0, 1/7, 2/7, ...]: pixel 2 would
    # be dropped, a band one pixel wide at the edge.
    maps = torch.tensor([[0.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    saliency = row(0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    loss = IRDLoss(threshold=0.2, pamr=NO_REFINEMENT, refine='cam')
    inconsistent = loss.inconsistent_region(maps, saliency, torch.ones(1, 1),
                                            torch.zeros(1, 3, 1, 8))
    assert not inconsistent.any()


# One class of probability 0.75 at every pixel of a 1x4 map and image; M_r = M_fg (unrefined), so
# B(M_r) = 1 everywhere. The saliency map [0, 1] of 1x2 pixels is upsampled to the image:
#   'nearest'  [0, 0, 1, 1]          pixels 0 and 1 dropped, kept: (1 - 0.75)^2 twice
#   'bilinear' [0, 0.25, 0.75, 1]    pixels 0 and 1 dropped, kept: (0.75 - 0.75)^2, (1 - 0.75)^2
@pytest.mark.parametrize('resize,expected', [('nearest', 0.25 ** 2),
                                             ('bilinear', 0.25 ** 2 / 2)])
def test_saliency_of_another_size_is_resized_as_chosen(resize, expected):
    maps = log_probs([0.25, 0.75], [0.25, 0.75], [0.25, 0.75], [0.25, 0.75])
    loss = IRDLoss(threshold=0.5, resize=resize, **LITERAL)
    value = loss(maps, row(0.0, 1.0), torch.ones(1, 1), torch.zeros(1, 3, 1, 4))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_rejects_unknown_resize_mode():
    with pytest.raises(ValueError, match=r"IRDLoss: resize must be one of \('nearest', "
                                         r"'bilinear'\), got 'area'"):
        IRDLoss(resize='area')


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


def test_negative_warm_up_is_rejected():
    with pytest.raises(ValueError, match='warmup_iters'):
        IRDLoss(warmup_iters=-1)


class FixedMapsModel(BaseModel):
    """Applies ``loss`` to THREE_PIXELS at every training iteration and records its values:
    NOTHING_DROPPED while it warms up, PIXEL_3_DROPPED after.

    ``scale`` only gives the optimizer a parameter (the runs use lr 0, so the maps never change).
    """

    def __init__(self, loss: IRDLoss) -> None:
        super().__init__()
        self.loss_sal = loss
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.values = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        maps, *rest = THREE_PIXELS
        value = self.loss_sal(maps * self.scale, *rest)
        self.values.append(value.item())
        return {'loss_sal': value}


def train(work_dir, name: str, warmup_iters: int, max_iters: int, resume: bool = False):
    """Trains a :class:`FixedMapsModel` under a real Runner (a checkpoint every iteration)."""
    model = FixedMapsModel(IRDLoss(threshold=0.5, warmup_iters=warmup_iters, **LITERAL))
    runner = Runner(
        model=model, work_dir=str(work_dir), experiment_name=name, resume=resume,
        default_scope='mmseg',
        train_dataloader=dict(dataset=[dict(inputs=torch.zeros(1))] * 8, batch_size=1,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1)))
    with trusted_checkpoint_loading():  # resuming loads the run's own checkpoint
        runner.train()
    return model.values


def test_warm_up_counts_the_iterations_of_the_run_that_trains_the_loss(tmp_path):
    # an earlier run leaves its MessageHub at iteration 3, past the warm-up of 2
    assert train(tmp_path / 'earlier', 'earlier', 2, 4) == pytest.approx(
        [NOTHING_DROPPED] * 2 + [PIXEL_3_DROPPED] * 2, rel=1e-5)
    # a new run warms up for its own first 2 iterations
    assert train(tmp_path / 'new', 'new', 2, 3) == pytest.approx(
        [NOTHING_DROPPED] * 2 + [PIXEL_3_DROPPED], rel=1e-5)


def test_a_resumed_run_warms_up_only_for_what_is_left_of_the_warm_up(tmp_path):
    assert train(tmp_path, 'first', 3, 2) == pytest.approx([NOTHING_DROPPED] * 2, rel=1e-5)
    # resumed at iteration 2 of a warm-up of 3: iteration 2 warms up, 3 and 4 drop
    assert train(tmp_path, 'resumed', 3, 5, resume=True) == pytest.approx(
        [NOTHING_DROPPED] + [PIXEL_3_DROPPED] * 2, rel=1e-5)


def test_outside_a_runner_the_loss_drops_even_after_a_run_stopped_within_its_warm_up(tmp_path):
    # the run's MessageHub stays behind at iteration 1 of a warm-up of 10
    assert train(tmp_path, 'short', 10, 2) == pytest.approx([NOTHING_DROPPED] * 2, rel=1e-5)
    loss = IRDLoss(threshold=0.5, warmup_iters=10, **LITERAL)
    assert loss(*THREE_PIXELS).item() == pytest.approx(PIXEL_3_DROPPED, rel=1e-5)
