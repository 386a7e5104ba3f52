"""Pixel-adaptive mask refinement (PAMR).

Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020; the
semantics are those of ``PAMR`` in their code (github.com/visinf/1-stage-wseg,
``models/mods/pamr.py``).

The reference materialises every neighbour of every mask pixel with a convolution, a
``[B, K, 8 * len(dilations), H, W]`` tensor per iteration. Here one iteration is a single
``F.embedding_bag`` call instead: the masks are a table with one row of ``K`` class scores per
pixel, each pixel is a bag of the rows of its ``8 * len(dilations)`` neighbours, weighted by its
affinities. The affinities and the neighbour index are computed once per call, as they do not
depend on the masks. On CPU, ``embedding_bag`` runs FBGEMM's fused gather-multiply-add kernels.
"""
from numbers import Integral
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS


@MODELS.register_module()
class PAMR(nn.Module):
    """Refines class masks by propagating them between pixels of similar colour.

    Every pixel ``p`` has ``N = 8 * len(dilations)`` neighbours: the 8 pixels around it at
    distance ``d`` (in pixels, along rows, columns and diagonals) for each dilation ``d``, with
    image borders replicated. Its affinity to neighbour ``q`` is
    ``softmax_q(-mean_c |I_c(p) - I_c(q)| / (1e-8 + 0.1 * sigma_c(p)))``, where ``sigma_c(p)`` is
    the unbiased standard deviation of channel ``c`` over the ``9 * len(dilations)`` taps of the
    dilated 3x3 windows around ``p`` (the centre counted once per dilation). Each of the
    ``num_iter`` iterations replaces every mask value by the affinity-weighted sum of its
    neighbours' values; the sum over classes of a pixel is therefore preserved.

    Gradients flow to ``image`` and ``masks`` through ``embedding_bag``'s backward, but this
    path is not tuned for it: the project uses PAMR without gradient (``IRDLoss`` refines a
    detached foreground map, ``EPSClassifier`` refines predictions at test time).

    Args:
        num_iter: Number of propagation steps (0 returns the upsampled masks).
        dilations: Neighbour distances in pixels.
    """

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> None:
        super().__init__()
        if isinstance(num_iter, bool) or not isinstance(num_iter, Integral) or num_iter < 0:
            raise ValueError(f'PAMR: num_iter must be an int >= 0, got {num_iter!r}')
        dilations = tuple(dilations)
        if not dilations or any(isinstance(d, bool) or not isinstance(d, Integral) or d < 1
                                for d in dilations):
            raise ValueError(f'PAMR: dilations must be a non-empty sequence of positive ints, '
                             f'got {dilations!r}')
        self.num_iter = int(num_iter)
        self.dilations = tuple(int(d) for d in dilations)
        # (dy, dx) of the neighbours in the reference's order: per dilation, the 3x3 window in
        # raster order without its centre.
        self.offsets: Tuple[Tuple[int, int], ...] = tuple(
            (dy * d, dx * d) for d in self.dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0))

    def extra_repr(self) -> str:
        return f'num_iter={self.num_iter}, dilations={self.dilations}'

    def forward(self, image: Tensor, masks: Tensor) -> Tensor:
        """Refines ``masks`` along the edges of ``image``.

        Args:
            image: ``[B, C, H, W]`` image, any number of channels and any value range (the
                affinities are normalised by the local standard deviation).
            masks: ``[B, K, h, w]`` class scores or probabilities, bilinearly upsampled to
                ``H x W`` (``align_corners=True``) before the refinement.

        Returns:
            ``[B, K, H, W]`` refined masks, float32 (float64 if an input is float64).
        """
        if image.dim() != 4:
            raise ValueError(f'PAMR: image must be 4-D [B, C, H, W], got shape '
                             f'{tuple(image.shape)}')
        if masks.dim() != 4:
            raise ValueError(f'PAMR: masks must be 4-D [B, K, h, w], got shape '
                             f'{tuple(masks.shape)}')
        if image.shape[0] != masks.shape[0]:
            raise ValueError(f'PAMR: image and masks must have the same batch size, got image '
                             f'{tuple(image.shape)} and masks {tuple(masks.shape)}')
        dtype = torch.promote_types(torch.promote_types(image.dtype, masks.dtype), torch.float32)
        batch, _, height, width = image.shape
        num_classes = masks.shape[1]
        # Upsampling channels-last is faster and makes the [B * H * W, K] table below a view.
        masks = F.interpolate(masks.to(dtype).contiguous(memory_format=torch.channels_last),
                              size=(height, width), mode='bilinear', align_corners=True)
        if self.num_iter == 0:
            return masks.contiguous()
        weights = self._affinity(image.to(dtype)).reshape(-1, len(self.offsets))
        index = self._neighbour_index(batch, height, width, image.device)
        table = masks.permute(0, 2, 3, 1).reshape(-1, num_classes)
        for _ in range(self.num_iter):
            table = F.embedding_bag(index, table, per_sample_weights=weights, mode='sum')
        return table.view(batch, height, width, num_classes).permute(0, 3, 1, 2).contiguous()

    def _affinity(self, image: Tensor) -> Tensor:
        """``[B, H, W, N]`` affinities of every pixel of a ``[B, C, H, W]`` image to its neighbours.

        Each neighbour is a shifted view of one replicate-padded copy of the image (padding by the
        largest dilation replicates the border as the reference's per-dilation padding does), so
        no ``[B, C, N, H, W]`` tensor is built.
        """
        channels, height, width = image.shape[1:]
        pad = max(self.dilations)
        padded = F.pad(image, [pad] * 4, mode='replicate')
        neighbours = [padded[:, :, pad + dy:pad + dy + height, pad + dx:pad + dx + width]
                      for dy, dx in self.offsets]
        num_dilations = len(self.dilations)
        num_taps = 9 * num_dilations
        mean = image * num_dilations
        for neighbour in neighbours:
            mean += neighbour
        mean /= num_taps
        var = (image - mean).square_().mul_(num_dilations)
        for neighbour in neighbours:
            var += (neighbour - mean).square_()
        denominator = 1e-8 + 0.1 * var.div_(num_taps - 1).sqrt_()
        # Stacked as [B, H, N, W]: each neighbour writes whole rows, and the transpose to
        # [B, H, W, N] (the layout embedding_bag reads) moves small blocks that stay in cache.
        logits = torch.stack([(image - neighbour).abs_().div_(denominator).sum(1)
                              for neighbour in neighbours], 2)
        return torch.softmax(logits.div_(-channels).transpose(2, 3), -1)

    def _neighbour_index(self, batch: int, height: int, width: int, device: torch.device) -> Tensor:
        """``[B * H * W, N]`` rows of the neighbours of every pixel in the ``[B * H * W, K]`` table.

        Clamping the coordinates to the image replicates its border, like the reference's
        replicate padding.
        """
        offsets = torch.tensor(self.offsets, device=device)
        rows = (torch.arange(height, device=device)[:, None] + offsets[:, 0]).clamp_(0, height - 1)
        cols = (torch.arange(width, device=device)[:, None] + offsets[:, 1]).clamp_(0, width - 1)
        index = rows[:, None, :] * width + cols[None, :, :]
        # int32 halves the index traffic of every iteration where it can address all entries.
        dtype = torch.int32 if batch * index.numel() < 2**31 else torch.int64
        first_rows = torch.arange(0, batch * height * width, height * width, device=device,
                                  dtype=dtype)
        return (first_rows[:, None, None, None] + index.to(dtype)).view(-1, len(self.offsets))
