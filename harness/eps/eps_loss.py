"""EPS saliency loss (Lee et al., "Railroad is not a Train", CVPR 2021, Eq. 2-4)."""
import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS
from .saliency_loss import SaliencyLoss, float32_loss


@MODELS.register_module()
class EPSLoss(SaliencyLoss):
    """Explicit pseudo-pixel supervision: the localization maps must explain the saliency map.

    For every present class ``i`` the overlap ratio with the saliency map is
    ``O_i = |B(M_i) & B(M_s)| / |B(M_i)|`` (``B`` rounds at 0.5). A present class with
    ``O_i > tau`` counts as foreground, any other present class as background (this is how EPS
    copes with classes the saliency detector misses). With ``M_fg`` the sum of foreground maps and
    ``M_bg`` the sum of the background map and the background-counted class maps, the estimated
    saliency is ``lam * M_fg + (1 - lam) * (1 - M_bg)`` and the loss is its mean squared error to
    the saliency map ``M_s``, at the resolution of the maps (``M_s`` is resized to it as
    ``resize`` says; the EPS code resizes ``'nearest'``).

    The overlap ratio's denominator is ``|B(M_i)| + 1e-4``. The EPS code adds the ``1e-4`` to
    every pixel before summing, ``|B(M_i)| + 1e-4 h w`` (0.31 for 56x56 maps): its ratio is a
    little lower, which changes the foreground / background decision only for a class whose
    ratio lies within about ``1e-4 h w / |B(M_i)|`` above ``tau`` (a class covering a few
    pixels). A class with an empty ``B(M_i)`` has ratio 0 in both.

    Args:
        tau: Overlap-ratio threshold (0.4 in EPS).
        lam: Mixing weight ``lambda`` of foreground and background terms (0.5 in EPS).
        resize: ``'nearest'`` or ``'bilinear'``: how ``M_s`` is resized to the maps (see
            :class:`SaliencyLoss`).
        loss_weight: Factor on the loss.
        loss_name: Key in the loss dict.

    Shapes: as :class:`SaliencyLoss`; ``images`` is not used.
    """

    def __init__(self, tau: float = 0.4, lam: float = 0.5, resize: str = 'nearest',
                 loss_weight: float = 1.0, loss_name: str = 'loss_sal') -> None:
        super().__init__(resize=resize, loss_weight=loss_weight, loss_name=loss_name)
        if not 0.0 <= tau <= 1.0 or not 0.0 <= lam <= 1.0:
            raise ValueError(f'EPSLoss: tau and lam must lie in [0, 1], got tau={tau}, lam={lam}')
        self.tau = tau
        self.lam = lam

    @float32_loss
    def forward(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                images: Tensor = None) -> Tensor:
        probs, saliency = self.probabilities_and_saliency(maps, saliency, labels)
        class_probs = probs[:, 1:]
        with torch.no_grad():
            class_masks = torch.round(class_probs)
            overlap = (class_masks * torch.round(saliency)).sum(dim=(2, 3))
            overlap_ratio = overlap / (class_masks.sum(dim=(2, 3)) + 1e-4)
            present = labels > 0
            foreground = present & (overlap_ratio > self.tau)
            background = present & ~foreground
            fg_weight = foreground.to(probs.dtype)[:, :, None, None]
            bg_weight = background.to(probs.dtype)[:, :, None, None]
        fg_map = (class_probs * fg_weight).sum(dim=1, keepdim=True)
        bg_map = probs[:, :1] + (class_probs * bg_weight).sum(dim=1, keepdim=True)
        estimate = self.lam * fg_map + (1 - self.lam) * (1 - bg_map)
        return self.loss_weight * F.mse_loss(estimate, saliency)
