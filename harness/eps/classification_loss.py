"""Multi-label classification loss of the stage-1 network."""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS


@MODELS.register_module()
class MultiLabelBCELoss(nn.Module):
    """Multi-label classification loss of EPS / EPS++: per-class sigmoid binary cross-entropy.

    ``L_cls = -1/(B*C) * sum_{b,i} [y_bi log s(z_bi) + (1 - y_bi) log(1 - s(z_bi))]``, with
    ``s`` the sigmoid, ``z`` the logits and ``y`` the image-level labels: the value of torch's
    ``F.multilabel_soft_margin_loss`` (what the EPS code calls), computed by one
    ``F.binary_cross_entropy_with_logits``, as an MMSegmentation loss (``loss_name``,
    ``loss_weight``).

    Args:
        loss_weight (float): Weight of the loss. Default: 1.0.
        loss_name (str): Key of the loss in the loss dict; must start with ``loss_`` to be
            back-propagated. Default: 'loss_cls'.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_cls') -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """str: Key of the loss in the loss dict."""
        return self._loss_name

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Forward function.

        Args:
            logits (Tensor): Image-level logits ``[B, C]``.
            labels (Tensor): Image-level labels ``[B, C]`` in {0, 1}.

        Returns:
            Tensor: Scalar loss.

        Raises:
            ValueError: If ``logits`` and ``labels`` differ in shape.
        """
        if logits.shape != labels.shape:
            raise ValueError(f'{type(self).__name__}: logits {tuple(logits.shape)} and labels '
                             f'{tuple(labels.shape)} must have the same shape [B, C]')
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return self.loss_weight * loss
