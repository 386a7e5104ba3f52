"""Multi-label classification loss of the stage-1 network."""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS


@MODELS.register_module()
class MultiLabelSoftMarginLoss(nn.Module):
    """Sigmoid cross-entropy per class, averaged over classes and images.

    ``L_cls = -1/(B*C) * sum_{b,i} [y_bi log s(z_bi) + (1 - y_bi) log(1 - s(z_bi))]``, the
    multi-label soft-margin loss used by EPS / EPS++ (``s`` is the sigmoid).

    Args:
        loss_weight: Factor on the loss.
        loss_name: Key in the loss dict; starts with ``loss_`` so MMEngine back-propagates it.

    Shapes:
        ``forward(logits [B, C], labels [B, C])`` with labels in {0, 1}; returns a scalar.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_cls') -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.shape != labels.shape:
            raise ValueError(f'{type(self).__name__}: logits {tuple(logits.shape)} and labels '
                             f'{tuple(labels.shape)} must have the same shape [B, C]')
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return self.loss_weight * loss
