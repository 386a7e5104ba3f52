"""CAM head: dense C+1 localization maps and image-level logits (EPS, CVPR 2021, Sec. 3)."""
from typing import Sequence, Tuple

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS


@MODELS.register_module()
class CAMHead(BaseModule):
    """CAM head: a bias-free 1x1 conv classifier giving ``C + 1`` localization maps.

    Channel 0 of the maps ``M`` is the background map and channels ``1..C`` the class maps, so
    ``argmax`` over channels is a VOC label (0 = background). The image-level logits are the
    spatial mean of the class maps; the background map takes no part in classification.

    Args:
        in_channels (int): Channels of the backbone feature map.
        num_classes (int): Number of foreground classes ``C`` (20 for PASCAL VOC), >= 1.
        in_index (int): Index of the backbone output to read. Default: -1.
        dropout_ratio (float): Dropout ratio before the classifier (EPS: 0). Default: 0.0.
        align_corners (bool): ``align_corners`` of every resize of the maps (read by
            ``EncoderDecoder``). Default: False.
        init_cfg (dict): Initialization config. Default: Normal(std=0.01) on ``Conv2d``.

    Raises:
        ValueError: If ``num_classes < 1``.
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
        """Forward function.

        Args:
            feats (Sequence[Tensor]): Backbone outputs; ``feats[in_index]`` is
                ``[B, in_channels, h, w]``.

        Returns:
            tuple[Tensor, Tensor]: Raw maps ``[B, C+1, h, w]`` and logits ``[B, C]`` (no
            softmax / sigmoid).
        """
        maps = self.classifier(self.dropout(feats[self.in_index]))
        logits = maps[:, 1:].mean(dim=(2, 3))
        return maps, logits
