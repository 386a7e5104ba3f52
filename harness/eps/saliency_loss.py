"""Base class of the EPS and EPS++ saliency losses, and their float32 decorator."""
import functools
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

SALIENCY_RESIZE_MODES = ('nearest', 'bilinear')


def float32_loss(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Makes a saliency loss's ``forward(maps, saliency, labels, images=None)`` compute in
    float32 with autocast off.

    Under mixed precision the softmax, MSE and PAMR would otherwise run in bfloat16 / float16,
    too coarse for the saliency targets. The tensor arguments are cast to float32 (gradients
    still reach the maps in their own dtype); the loss is a float32 scalar.
    """
    @functools.wraps(forward)
    def float32_forward(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                        images: Optional[Tensor] = None) -> Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            return forward(self, maps.float(), saliency.float(), labels.float(),
                           None if images is None else images.float())

    return float32_forward


class SaliencyLoss(nn.Module):
    """Base class of the losses comparing localization maps with a saliency map ``M_s``.

    The maps become probabilities by a softmax over the ``C + 1`` channels (channel 0 =
    background) and are compared with ``M_s`` at one resolution, by default that of the maps.
    Subclasses decorate ``forward`` with :func:`float32_loss` and take
    ``forward(maps, saliency, labels, images=None)``:

    - maps (Tensor): Raw scores ``[B, C+1, h, w]`` of :class:`CAMHead`.
    - saliency (Tensor): Saliency map ``[B, 1, H, W]`` in [0, 1].
    - labels (Tensor): Image-level labels ``[B, C]`` in {0, 1}.
    - images (Tensor, optional): Normalized network input ``[B, 3, H, W]``.

    and return a scalar loss.

    Args:
        resize (str): How ``M_s`` is resized when its size differs from the compared one:
            ``'nearest'`` (``F.interpolate``'s default, as ``get_eps_loss`` of the EPS code: keeps
            the top-left pixel of each cell, so the map stays as sharp as the detector made it)
            or ``'bilinear'`` (``align_corners=False``). Default: 'nearest'.
        loss_weight (float): Weight of the loss. Default: 1.0.
        loss_name (str): Key of the loss in the loss dict; must start with ``loss_`` to be
            back-propagated. Default: 'loss_sal'.

    Raises:
        ValueError: If ``resize`` is not ``'nearest'`` or ``'bilinear'``.
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
        """str: Key of the loss in the loss dict."""
        return self._loss_name

    def probabilities_and_saliency(self, maps: Tensor, saliency: Tensor, labels: Tensor,
                                   size: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor]:
        """Checks the shapes and brings probabilities and saliency to one size.

        Args:
            maps (Tensor): Raw scores ``[B, C+1, h, w]``.
            saliency (Tensor): Saliency map ``[B, 1, H, W]``.
            labels (Tensor): Image-level labels ``[B, C]``.
            size (Sequence[int], optional): Output size ``(h', w')``. Default: the maps' size.

        Returns:
            tuple[Tensor, Tensor]: ``softmax(maps)`` ``[B, C+1, h', w']`` (resized bilinearly,
            ``align_corners=False``) and the saliency ``[B, 1, h', w']`` (resized as ``resize``
            says), both in the dtype of ``maps``.

        Raises:
            ValueError: If the shapes do not match ``[B, C+1, h, w]``, ``[B, 1, H, W]``,
                ``[B, C]``.
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
