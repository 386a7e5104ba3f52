"""EPS++ Inconsistent Region Drop (IRD) saliency loss (Lee et al., TPAMI 2023)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS
from .saliency_loss import SaliencyLoss


@MODELS.register_module()
class IRDLoss(SaliencyLoss):
    """Saliency loss that drops the pixels where saliency and the refined prediction disagree.

    ``M_fg = sum_i y_i M_i`` is the foreground map (softmax maps of the present classes),
    ``M_r = PAMR(image, M_fg)`` its refinement by pixel-adaptive mask refinement (no gradient
    flows through it), ``N = B(M_r) xor B(M_s)`` the inconsistent region, ``B`` thresholding at
    ``threshold``. Per image,
    ``L = sum_p (1 - N_p) (M_s,p - M_fg,p)^2 / sum_p (1 - N_p)``, averaged over the batch. An image
    whose pixels are all inconsistent contributes 0 (the denominator is clamped at 1).

    PAMR runs on the input image resized to the resolution of the maps, as in the reference
    PAMR code (Araslanov & Roth, CVPR 2020).

    Args:
        threshold: Binarisation threshold of ``B`` (0.5 in the paper; swept by the harness).
        pamr: Config of the :class:`PAMR` module that yields ``M_r``.
        loss_weight: Factor on the loss.
        loss_name: Key in the loss dict.

    Shapes: as :class:`SaliencyLoss`; ``images`` is required.
    """

    def __init__(self, threshold: float = 0.5,
                 pamr: dict = dict(type='PAMR', num_iter=10, dilations=(1, 2, 4, 8, 12, 24)),
                 loss_weight: float = 1.0, loss_name: str = 'loss_sal') -> None:
        super().__init__(loss_weight=loss_weight, loss_name=loss_name)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f'IRDLoss: threshold must lie in (0, 1), got {threshold}')
        self.threshold = threshold
        self.pamr = MODELS.build(pamr)

    def forward(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                images: Optional[Tensor] = None) -> Tensor:
        if images is None:
            raise ValueError('IRDLoss needs the input images to refine the foreground map')
        probs, saliency = self.probabilities_and_saliency(maps, saliency, labels)
        foreground = (probs[:, 1:] * labels.to(probs.dtype)[:, :, None, None]).sum(1, keepdim=True)
        with torch.no_grad():
            small_images = F.interpolate(images.to(probs.dtype), size=maps.shape[-2:],
                                         mode='bilinear', align_corners=True)
            refined = self.pamr(small_images, foreground.detach())
            consistent = ((refined > self.threshold) == (saliency > self.threshold))
            consistent = consistent.to(probs.dtype)
        squared_error = consistent * (saliency - foreground) ** 2
        per_image = squared_error.sum(dim=(1, 2, 3)) / consistent.sum(dim=(1, 2, 3)).clamp(min=1)
        return self.loss_weight * per_image.mean()
