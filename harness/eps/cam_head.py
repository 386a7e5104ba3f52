"""CAM head: dense C+1 localization maps and image-level logits (EPS, CVPR 2021, Sec. 3)."""
from typing import Sequence, Tuple

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS


@MODELS.register_module()
class CAMHead(BaseModule):
    """A 1x1 convolutional classifier applied at every position of a feature map.

    It produces ``C + 1`` localization maps ``M``: channel 0 is the background map and channels
    ``1..C`` the class maps, so that ``argmax`` over channels reads directly as a PASCAL VOC label
    (0 = background). The image-level logits are the global average of the class maps (the
    background map takes no part in classification).

    Args:
        in_channels: Channels of the backbone feature map the head reads.
        num_classes: ``C``, the number of foreground classes (20 for PASCAL VOC).
        in_index: Which backbone output to read (the last one by default).
        dropout_ratio: Dropout before the classifier (EPS uses 0 on its ResNet-38).
        align_corners: ``align_corners`` for every resize of the maps (read by mmseg's
            ``EncoderDecoder``).
        init_cfg: MMEngine initialisation config.

    Shapes:
        ``forward(feats)`` with ``feats[in_index]`` of shape ``[B, in_channels, h, w]`` returns
        ``(maps [B, C+1, h, w], logits [B, C])``; both are raw scores (no softmax / sigmoid).
    """

    def __init__(self,
                 in_channels: int,
                 num_classes: int,
                 in_index: int = -1,
                 dropout_ratio: float = 0.0,
                 align_corners: bool = False,
                 init_cfg: dict = dict(type='Normal', layer='Conv2d', std=0.01)) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_classes < 1:
            raise ValueError(f'CAMHead: num_classes must be >= 1, got {num_classes}')
        self.in_index = in_index
        self.num_classes = num_classes + 1  # read by EncoderDecoder: channels of its seg logits
        self.out_channels = num_classes + 1
        self.align_corners = align_corners
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        # No bias, as in EPS: a constant offset would leak into every localization map.
        self.classifier = nn.Conv2d(in_channels, num_classes + 1, kernel_size=1, bias=False)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        maps = self.classifier(self.dropout(feats[self.in_index]))
        logits = maps[:, 1:].mean(dim=(2, 3))
        return maps, logits
