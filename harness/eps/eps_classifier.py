"""The EPS / EPS++ stage-1 network: a classifier whose localization maps become pseudo-masks."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from torch import Tensor

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, SampleList


@MODELS.register_module()
class EPSClassifier(EncoderDecoder):
    """Backbone + :class:`CAMHead`, trained with ``L_cls + L_sal`` on image labels and saliency.

    Training (``loss``): ``L_cls`` compares the image-level logits with the labels; ``L_sal``
    (:class:`EPSLoss`, :class:`IRDLoss`, or ``None`` for a CAM-only baseline) compares the
    localization maps with the saliency map.

    Inference (``predict``) turns the maps into pseudo-masks that mmseg's ``IoUMetric`` can score:

    1. class scores ``[B, C+1, h, w]`` for the classes of the image only (``class_labels`` in the
       image metas; without them, the classes the classifier predicts with probability > 0.5);
       background rule, ``test_cfg['bg_threshold']``:

       - ``None`` (EPS / EPS++): the learned background map; softmax over the background and
         the present classes.
       - a float ``t`` (the usual rule for CAM-only training, where the background map is never
         trained): ``relu(M_i) / max relu(M_i)`` for each present class, ``t`` for background.
    2. resized to the input size and refined by PAMR (``test_cfg['pamr']``, a :class:`PAMR`
       config; ``None`` skips it);
    3. ``argmax`` over the ``C + 1`` channels (0 = background), after undoing padding and
       resizing to the original image size.

    Args:
        backbone: Any mmseg backbone config (the paper uses ResNet-38; ResNetV1c works).
        decode_head: A :class:`CAMHead` config.
        loss_cls: Classification loss config (:class:`MultiLabelSoftMarginLoss`).
        loss_sal: Saliency loss config, or ``None`` for classification only.
        test_cfg: ``mode`` ('whole' or 'slide', as mmseg), ``pamr``, ``bg_threshold``.
        neck, train_cfg, data_preprocessor, pretrained, init_cfg: as ``EncoderDecoder``.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 loss_cls: ConfigType = dict(type='MultiLabelSoftMarginLoss'),
                 loss_sal: OptConfigType = dict(type='IRDLoss'),
                 neck: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = dict(
                     mode='whole', bg_threshold=None,
                     pamr=dict(type='PAMR', num_iter=10, dilations=(1, 2, 4, 8, 12, 24))),
                 data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None,
                 init_cfg: OptConfigType = None) -> None:
        test_cfg = ConfigDict(test_cfg or {})  # mmseg reads it by attribute (test_cfg.mode)
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor, pretrained=pretrained,
                         init_cfg=init_cfg)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_sal = MODELS.build(loss_sal) if loss_sal is not None else None
        self.bg_threshold = test_cfg.get('bg_threshold')
        self.pamr = MODELS.build(test_cfg['pamr']) if test_cfg.get('pamr') else None

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        maps, logits = self.decode_head(self.extract_feat(inputs))
        labels = _stack_class_labels([s.metainfo for s in data_samples], logits)
        losses = {self.loss_cls.loss_name: self.loss_cls(logits, labels)}
        if self.loss_sal is not None:
            saliency = _stack_saliency(data_samples, inputs.shape[-2:]).to(inputs.device)
            losses[self.loss_sal.loss_name] = self.loss_sal(maps, saliency, labels, inputs)
        return losses

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Pseudo-mask scores ``[B, C+1, H, W]`` at the input size (see the class docstring)."""
        maps, logits = self.decode_head(self.extract_feat(inputs))
        if all('class_labels' in meta for meta in batch_img_metas):
            labels = _stack_class_labels(batch_img_metas, logits)
        else:
            labels = (logits.sigmoid() > 0.5).to(logits.dtype)
        scores = self.class_scores(maps, labels)
        scores = F.interpolate(scores, size=inputs.shape[-2:], mode='bilinear',
                               align_corners=self.align_corners)
        if self.pamr is not None:
            scores = self.pamr(inputs, scores)
        return scores

    def class_scores(self, maps: Tensor, labels: Tensor) -> Tensor:
        """Scores ``[B, C+1, h, w]`` of background and present classes; absent classes get 0."""
        present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1) > 0
        present = present[:, :, None, None]
        if self.bg_threshold is None:
            return maps.masked_fill(~present, float('-inf')).softmax(dim=1)
        cams = F.relu(maps[:, 1:])
        cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp(min=1e-5)
        background = torch.full_like(cams[:, :1], float(self.bg_threshold))
        return torch.cat([background, cams], dim=1) * present


def _stack_class_labels(batch_img_metas: List[dict], like: Tensor) -> Tensor:
    """``[B, C]`` image-level labels from the metas' ``class_labels``, on ``like``'s device."""
    labels = [torch.as_tensor(meta['class_labels']) for meta in batch_img_metas]
    return torch.stack(labels).to(device=like.device, dtype=like.dtype)


def _stack_saliency(data_samples: SampleList, size: torch.Size) -> Tensor:
    """``[B, 1, H, W]`` saliency maps, zero-padded at the bottom/right like the batch images."""
    maps = []
    for sample in data_samples:
        if 'gt_saliency' not in sample:
            raise KeyError('a saliency loss is configured but a training sample has no '
                           'gt_saliency: add LoadSaliencyMap to the training pipeline')
        saliency = sample.gt_saliency.data
        pad = (0, size[1] - saliency.shape[-1], 0, size[0] - saliency.shape[-2])
        maps.append(F.pad(saliency, pad))
    return torch.stack(maps)
