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
    """EPS++ IRD loss: saliency MSE that drops the inconsistent region ``N``.

    ``M_fg = sum_i y_i M_i`` (softmax maps of the present classes), ``M_r`` the PAMR
    refinement of a foreground map (``refine``; no gradient), ``N = B(M_r) XOR B(M_s)`` with
    ``B`` thresholding at ``threshold``. Per image,
    ``L_sal = 1/|1-N| * sum_p (1-N_p) (M_s,p - M_fg,p)^2`` (0 if every pixel is in ``N``),
    averaged over the batch. Everything is computed at the input image's resolution: the
    probabilities are upsampled to it bilinearly (``align_corners=False``) before PAMR, so
    ``M_fg``, ``M_r`` and ``M_s`` share one pixel grid; ``M_s`` is resized as ``resize`` says.

    For the first ``warmup_iters`` training iterations (read from MMEngine's ``MessageHub``)
    ``N = 0``: at initialisation ``B(M_r)`` is empty, so every salient pixel would be dropped.
    Outside a training loop the loss is always the paper's.

    Args:
        threshold (float): Binarization threshold of ``B``, in (0, 1). Default: 0.5 (paper).
        pamr (dict): Config of the :class:`PAMR` that yields ``M_r``.
            Default: 10 iterations, dilations (1, 2, 4, 8, 12, 24).
        refine (str): The map PAMR refines: ``'softmax'`` (``M_fg``, the literal formula) or
            ``'cam'`` (pixel-wise max over the present classes of ``relu(M_i) / max relu(M_i)``
            of the raw maps, independent of the background channel). Default: 'cam'.
        warmup_iters (int): Training iterations with ``N = 0``, >= 0. Default: 0.
        resize (str): How a saliency map of another size than the image is resized, see
            :class:`SaliencyLoss`. Default: 'nearest'.
        loss_weight (float): Weight of the loss. Default: 1.0.
        loss_name (str): Key of the loss in the loss dict. Default: 'loss_sal'.

    Raises:
        ValueError: If ``threshold``, ``refine`` or ``warmup_iters`` is invalid.
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
        """Forward function; arguments as :class:`SaliencyLoss`.

        Returns:
            Tensor: Scalar loss, float32.

        Raises:
            ValueError: If ``images`` is None.
        """
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
        """``N = B(M_r) XOR B(M_s)``: the pixels :meth:`forward` drops after the warm-up.

        Arguments as :meth:`forward`. Returns a bool ``[B, 1, H, W]`` at the image size.
        """
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
        """The map ``[B, 1, H, W]`` in [0, 1] that PAMR refines into ``M_r`` (see ``refine``),
        detached, on the pixel grid of ``foreground`` (``M_fg``)."""
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
