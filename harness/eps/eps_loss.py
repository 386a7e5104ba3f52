"""EPS saliency loss (Lee et al., "Railroad is not a Train", CVPR 2021, Eq. 2-4)."""
import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS
from .saliency_loss import SaliencyLoss, float32_loss


@MODELS.register_module()
class EPSLoss(SaliencyLoss):
    """EPS saliency loss: the localization maps must explain the saliency map ``M_s``.

    With ``B`` rounding at 0.5, each present class ``i`` has the overlap ratio
    ``O_i = |B(M_i) & B(M_s)| / (|B(M_i)| + 1e-4)`` (the EPS code adds the ``1e-4`` per pixel);
    it counts as foreground if ``O_i > tau``, else as background (a class the detector missed).
    With ``M_fg`` the sum of the foreground maps and ``M_bg`` the background map plus the
    background-counted class maps, ``L_sal = MSE(lam * M_fg + (1 - lam) * (1 - M_bg), M_s)``
    at the resolution of the maps. No gradient flows through the foreground/background split.

    Args:
        tau (float): Overlap-ratio threshold, in [0, 1]. Default: 0.4 (EPS).
        lam (float): Weight ``lambda`` of the foreground term, in [0, 1]. Default: 0.5 (EPS).
        resize (str): How ``M_s`` is resized to the maps, see :class:`SaliencyLoss`.
            Default: 'nearest' (EPS).
        loss_weight (float): Weight of the loss. Default: 1.0.
        loss_name (str): Key of the loss in the loss dict. Default: 'loss_sal'.

    Raises:
        ValueError: If ``tau`` or ``lam`` is outside [0, 1].
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
        """Forward function; arguments as :class:`SaliencyLoss`, ``images`` unused.

        Returns:
            Tensor: Scalar loss, float32.
        """
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
