"""An :class:`EPSClassifier` whose localization maps are known by construction, so that tests can
derive its pseudo-masks by hand.

Images are painted one colour per label: white for background and a pure primary colour per
class (red = 1, green = 2, blue = 3), in rectangles of ``CELL x CELL``-pixel cells. The backbone
averages the image over ``stride x stride`` pixels (``stride=1``: the features are the pixel
colours) and the CAMHead's 1x1 classifier scores ``SCALE * (1, 1, 1)`` for the background map
and ``SCALE * (3 e_k - 1)`` (2 on its own colour channel, -1 on the others) for class ``k``:

- on white the background map is ``3 s``, every class map 0;
- on the colour of class ``k`` the class-``k`` map is ``2 s``, the background map ``s``, every
  other class map ``-s``.

So with ``stride=1`` the pseudo-mask is the painted label where that class counts as present and
background elsewhere, with a margin of ``s = 20`` between winner and runner-up. A class's
image-level logit (the mean of its map) is ``s (2 a_k - a_other)``, with ``a_k`` the fraction of
the image painted ``k`` and ``a_other`` the fraction painted in the other class colours.
"""
from typing import Iterable, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from torch import Tensor

import harness.eps  # noqa: F401  (registers EPSClassifier, CAMHead, PAMR)
from mmseg.registry import MODELS

CELL = 4
SCALE = 20.0
NUM_CLASSES = 3
COLOURS = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
# (label, top, left, height, width), in cells
Block = Tuple[int, int, int, int, int]


class CellAverage(nn.Module):
    """Backbone: ``[B, 3, H, W]`` images -> ``([B, 3, H / stride, W / stride],)`` local means."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, inputs: Tensor) -> Tuple[Tensor]:
        return (F.avg_pool2d(inputs, self.stride), )


def controlled_classifier(stride: int = 1, **kwargs) -> nn.Module:
    """The :class:`EPSClassifier` described above; ``kwargs`` go to its config (``test_cfg``,
    ``loss_sal``, ``data_preprocessor``...)."""
    cfg = dict(type='EPSClassifier',
               # built, then replaced by CellAverage: EncoderDecoder needs a backbone config
               backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8,
                             out_indices=(3, ), norm_cfg=dict(type='BN')),
               # init_cfg=None: a runner's init_weights must not redraw the weights set below
               decode_head=dict(type='CAMHead', in_channels=3, num_classes=NUM_CLASSES,
                                init_cfg=None),
               **kwargs)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    model.backbone = CellAverage(stride)
    weight = torch.cat([torch.ones(1, 3), 3 * torch.eye(NUM_CLASSES) - 1]) * SCALE
    with torch.no_grad():
        model.decode_head.classifier.weight.copy_(weight[:, :, None, None])
    return model


def paint(size: Tuple[int, int], blocks: Iterable[Block]) -> Tuple[Tensor, Tensor]:
    """Image ``[3, H, W]`` in [0, 1] (RGB) and its labels ``[H, W]`` (int64): rectangles of cells
    on white; ``size`` is ``(H, W)`` in cells, later blocks paint over earlier ones."""
    cells = torch.zeros(size, dtype=torch.long)
    for label, top, left, height, width in blocks:
        cells[top:top + height, left:left + width] = label
    labels = cells.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)
    return COLOURS[labels].permute(2, 0, 1).contiguous(), labels
