"""What the EPS and EPS++ saliency losses share: inputs, their checks, their resolution, and
their precision (float32, also under mixed precision)."""
import functools
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

SALIENCY_RESIZE_MODES = ('nearest', 'bilinear')


def float32_loss(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorates a saliency loss's ``forward(maps, saliency, labels, images=None)`` to compute
    in float32 with autocast off.

    Under mixed precision the maps arrive as bfloat16 / float16, and autocast would run the
    softmax, the MSE and PAMR's arithmetic in that precision too: saliency targets of many
    near-equal probabilities then round to the same value, and bfloat16 keeps 8 bits of
    mantissa. The tensor arguments are cast to float32 (gradients still flow to the maps in
    their own dtype) and the loss is a float32 scalar.
    """
    @functools.wraps(forward)
    def float32_forward(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                        images: Optional[Tensor] = None) -> Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            return forward(self, maps.float(), saliency.float(), labels.float(),
                           None if images is None else images.float())

    return float32_forward


class SaliencyLoss(nn.Module):
    """Base of the losses that compare localization maps with an off-the-shelf saliency map.

    The maps are turned into probabilities by a softmax over the ``C + 1`` channels (channel 0 =
    background); probabilities and saliency are compared at one resolution, by default that of
    the maps. Subclasses decorate ``forward`` with :func:`float32_loss`, so that the losses are
    computed in float32 under mixed precision too.

    How the saliency map ``M_s`` is brought to that resolution (``resize``):

    - ``'nearest'``: ``F.interpolate``'s default mode, as the EPS code (``get_eps_loss``) does.
      Shrinking by a factor ``s`` keeps one pixel of every ``s x s`` cell, its top-left one:
      the map stays as sharp (and as binary) as the detector made it.
    - ``'bilinear'`` (``align_corners=False``): the value at each cell's centre, interpolated
      between the four pixels around it (no averaging over the cell either).

    Args:
        resize: ``'nearest'`` or ``'bilinear'``: how the saliency map is resized (see above);
            not used when it already has the size the loss compares at.
        loss_weight: Factor on the loss.
        loss_name: Key in the loss dict; starts with ``loss_`` so MMEngine back-propagates it.

    Shapes (``forward``):
        maps: ``[B, C+1, h, w]`` raw scores of :class:`CAMHead`.
        saliency: ``[B, 1, H, W]`` saliency map in [0, 1].
        labels: ``[B, C]`` image-level labels in {0, 1}.
        images: ``[B, 3, H, W]`` the (normalised) network input; used by losses that look at it.
        Returns a scalar.
    """

    def __init__(self, resize: str = 'nearest', loss_weight: float = 1.0,
                 loss_name: str = 'loss_sal') -> None:
        super().__init__()
        if resize not in SALIENCY_RESIZE_MODES:
            raise ValueError(f'{type(self).__name__}: resize must be one of '
                             f'{SALIENCY_RESIZE_MODES}, got {resize!r}')
        self.resize = resize
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def probabilities_and_saliency(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                                   size: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor]:
        """Checks the shapes; returns ``(softmax(maps), saliency)`` at ``size`` (default: the maps').

        Shapes: ``[B, C+1, h, w]`` and ``[B, 1, h, w]`` with ``(h, w) = size``, in the dtype of
        ``maps`` (float32 in a forward decorated with :func:`float32_loss`); where needed the
        probabilities are resized bilinearly (``align_corners=False``) and the saliency map as
        ``resize`` says.
        """
        name = type(self).__name__
        if maps.dim() != 4 or saliency.dim() != 4 or saliency.shape[1] != 1:
            raise ValueError(f'{name}: expected maps [B, C+1, h, w] and saliency [B, 1, H, W], '
                             f'got {tuple(maps.shape)} and {tuple(saliency.shape)}')
        if labels.shape != (maps.shape[0], maps.shape[1] - 1):
            raise ValueError(f'{name}: labels must be [B, C] = {(maps.shape[0], maps.shape[1] - 1)}'
                             f' for maps {tuple(maps.shape)}, got {tuple(labels.shape)}')
        size = tuple(size or maps.shape[-2:])
        probs = maps.softmax(dim=1)
        if probs.shape[-2:] != size:
            probs = F.interpolate(probs, size=size, mode='bilinear', align_corners=False)
        saliency = saliency.to(maps.dtype)
        if saliency.shape[-2:] != size:
            saliency = F.interpolate(saliency, size=size, mode=self.resize,
                                     align_corners=False if self.resize == 'bilinear' else None)
        return probs, saliency
