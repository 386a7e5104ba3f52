"""PAMR (placeholder while the fast version is written; same semantics as the reference)."""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS


def _neighbours(x: Tensor, dilations: Sequence[int], with_centre: bool):
    pad = max(dilations)
    padded = F.pad(x, [pad] * 4, mode='replicate')
    H, W = x.shape[-2:]
    out = []
    for d in dilations:
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy, dx) == (0, 0) and not with_centre:
                    continue
                out.append(padded[..., pad + dy * d:pad + dy * d + H, pad + dx * d:pad + dx * d + W])
    return torch.stack(out, 2)


@MODELS.register_module()
class PAMR(nn.Module):

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)):
        super().__init__()
        self.num_iter = num_iter
        self.dilations = tuple(dilations)

    def forward(self, image: Tensor, masks: Tensor) -> Tensor:
        masks = F.interpolate(masks, size=image.shape[-2:], mode='bilinear', align_corners=True)
        std = _neighbours(image, self.dilations, True).std(2, keepdim=True)
        aff = -(image.unsqueeze(2) - _neighbours(image, self.dilations, False)).abs() / (1e-8 + 0.1 * std)
        aff = aff.mean(1, keepdim=True).softmax(2)
        for _ in range(self.num_iter):
            masks = (_neighbours(masks, self.dilations, False) * aff).sum(2)
        return masks
