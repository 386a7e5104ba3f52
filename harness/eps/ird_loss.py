"""EPS++ Inconsistent Region Drop (IRD) saliency loss (Lee et al., TPAMI 2023)."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from torch import Tensor

from mmseg.registry import MODELS
from .saliency_loss import SaliencyLoss, float32_loss


REFINED_MAPS = ('cam', 'softmax')


@MODELS.register_module()
class IRDLoss(SaliencyLoss):
    """Saliency loss that drops the pixels where saliency and the refined prediction disagree.

    ``M_fg = sum_i y_i M_i`` is the foreground map (softmax maps of the present classes),
    ``M_r = PAMR(image, M_fg)`` its refinement by pixel-adaptive mask refinement (no gradient
    flows through it), ``N = B(M_r) xor B(M_s)`` the inconsistent region, ``B`` thresholding at
    ``threshold``. Per image,
    ``L = sum_p (1 - N_p) (M_s,p - M_fg,p)^2 / sum_p (1 - N_p)``, averaged over the batch. An image
    whose pixels are all inconsistent contributes 0 (the denominator is clamped at 1).

    The loss is computed at the resolution of the input image: the probabilities are upsampled
    to it (bilinear) and PAMR's affinities come from the image itself. (Refining at the
    resolution of the maps, as the reference PAMR code does at output stride 4, erased the small
    objects of 64-pixel images at output stride 8, whose maps are 8x8.) ``M_fg``, ``M_r`` and
    ``M_s`` lie on one pixel grid: the probabilities and the map that PAMR refines are upsampled
    to the image bilinearly with ``align_corners=False`` (mmseg's convention) before anything
    else (PAMR's own upsampling, ``align_corners=True``, would shift ``M_r`` by up to half a map
    cell against ``M_fg`` and ``M_s``, and ``N`` would mark a band along every edge). A saliency
    map of another size than the image is resized as ``resize`` says.

    Warm-up: at initialisation the softmax gives every present class about ``1 / (C + 1)``, so
    ``B(M_r)`` is 0 everywhere, every salient pixel counts as inconsistent and is dropped, and
    only background pixels are supervised: trained from scratch, the network then settles on
    "background everywhere" (on the bundled data: docs/method.md). For the first
    ``warmup_iters`` training iterations nothing is dropped (``N = 0``, a plain saliency MSE on
    ``M_fg``); the iteration is read from MMEngine's ``MessageHub`` (outside a runner, the loss
    is always the paper's).

    Which foreground map PAMR refines into ``M_r`` (``refine``):

    - ``'softmax'``: ``M_fg`` itself, the literal reading of the formula.
    - ``'cam'``: the class activation maps of the present classes, each max-normalised
      (``relu(M_i) / max relu(M_i)``, the usual WSSS localization map), their pixel-wise max.
      They follow the classification evidence and not the background channel, so the second
      opinion that decides which saliency pixels to drop cannot drift with the network's own
      background. On the bundled data, trained from scratch, ``'softmax'`` let the background
      channel take over most classes' objects (docs/method.md has both choices' figures).

    Args:
        threshold: Binarisation threshold of ``B`` (0.5 in the paper; swept by the harness).
        pamr: Config of the :class:`PAMR` module that yields ``M_r``.
        refine: ``'cam'`` or ``'softmax'``: the foreground map that PAMR refines (see above).
        warmup_iters: Iterations before inconsistent regions are dropped (0: from the start).
        resize: ``'nearest'`` or ``'bilinear'``: how a saliency map of another size than the
            image is resized to it (see :class:`SaliencyLoss`).
        loss_weight: Factor on the loss.
        loss_name: Key in the loss dict.

    Shapes: as :class:`SaliencyLoss`; ``images`` is required.
    """

    def __init__(self, threshold: float = 0.5,
                 pamr: dict = dict(type='PAMR', num_iter=10, dilations=(1, 2, 4, 8, 12, 24)),
                 refine: str = 'cam', warmup_iters: int = 0, resize: str = 'nearest',
                 loss_weight: float = 1.0, loss_name: str = 'loss_sal') -> None:
        super().__init__(resize=resize, loss_weight=loss_weight, loss_name=loss_name)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f'IRDLoss: threshold must lie in (0, 1), got {threshold}')
        if refine not in REFINED_MAPS:
            raise ValueError(f'IRDLoss: refine must be one of {REFINED_MAPS}, got {refine!r}')
        if warmup_iters < 0:
            raise ValueError(f'IRDLoss: warmup_iters must be >= 0, got {warmup_iters}')
        self.threshold = threshold
        self.refine = refine
        self.warmup_iters = warmup_iters
        self.pamr = MODELS.build(pamr)

    @float32_loss
    def forward(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                images: Optional[Tensor] = None) -> Tensor:
        if images is None:
            raise ValueError('IRDLoss needs the input images to refine the foreground map')
        probs, saliency = self.probabilities_and_saliency(maps, saliency, labels,
                                                          size=images.shape[-2:])
        foreground = self.foreground(probs, labels)
        with torch.no_grad():
            if self.warming_up():
                consistent = torch.ones_like(saliency)
            else:
                consistent = (~self._inconsistent(maps, saliency, labels, images, foreground))
                consistent = consistent.to(probs.dtype)
        squared_error = consistent * (saliency - foreground) ** 2
        per_image = squared_error.sum(dim=(1, 2, 3)) / consistent.sum(dim=(1, 2, 3)).clamp(min=1)
        return self.loss_weight * per_image.mean()

    @float32_loss
    @torch.no_grad()
    def inconsistent_region(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                            images: Tensor) -> Tensor:
        """``N = B(M_r) xor B(M_s)``, bool ``[B, 1, H, W]`` at the image size: the pixels that
        :meth:`forward` drops once the warm-up is over (shapes as :meth:`forward`)."""
        probs, saliency = self.probabilities_and_saliency(maps, saliency, labels,
                                                          size=images.shape[-2:])
        foreground = self.foreground(probs, labels)
        return self._inconsistent(maps, saliency, labels, images, foreground)

    @staticmethod
    def foreground(probs: Tensor, labels: Tensor) -> Tensor:
        """``M_fg = sum_i y_i M_i``, ``[B, 1, H, W]``, from probabilities ``[B, C+1, H, W]``."""
        return (probs[:, 1:] * labels.to(probs.dtype)[:, :, None, None]).sum(1, keepdim=True)

    def _inconsistent(self, maps: Tensor, saliency: Tensor, labels: Tensor, images: Tensor,
                      foreground: Tensor) -> Tensor:
        """``N`` from the saliency and foreground at the image size (no gradient flows)."""
        refined = self.pamr(images.to(foreground.dtype),
                            self.map_to_refine(maps, labels, foreground))
        return (refined > self.threshold) != (saliency > self.threshold)

    def map_to_refine(self, maps: Tensor, labels: Tensor, foreground: Tensor) -> Tensor:
        """The foreground map ``[B, 1, H, W]`` in [0, 1] that PAMR refines into ``M_r``, on the
        pixel grid of ``foreground`` (``M_fg``, ``[B, 1, H, W]``)."""
        if self.refine == 'softmax':
            return foreground.detach()
        cams = torch.relu(maps[:, 1:].detach())
        cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp(min=1e-5)
        cam = (cams * labels.to(cams.dtype)[:, :, None, None]).amax(dim=1, keepdim=True)
        return F.interpolate(cam, size=foreground.shape[-2:], mode='bilinear',
                             align_corners=False)

    def warming_up(self) -> bool:
        """Whether the runner's current training iteration is still within ``warmup_iters``."""
        if self.warmup_iters == 0:
            return False
        hub = MessageHub.get_current_instance()
        # The hub outlives its run and keeps its last 'iter'; only while a train loop runs is
        # its 'loop_stage' 'train' (MMEngine's RuntimeInfoHook pops it after training).
        if hub.get_info('loop_stage') != 'train':
            return False
        iteration = hub.get_info('iter')
        return iteration is not None and iteration < self.warmup_iters
