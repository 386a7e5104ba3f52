"""The EPS / EPS++ stage-1 network: a classifier whose localization maps become pseudo-masks."""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from torch import Tensor

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, SampleList
from .arguments import is_number


@MODELS.register_module()
class EPSClassifier(EncoderDecoder):
    """EPS / EPS++ stage-1 network: backbone + :class:`CAMHead`, trained with ``L_cls + L_sal``.

    Training (``loss``): ``L_cls`` on the image-level logits and labels; ``L_sal``
    (:class:`EPSLoss`, :class:`IRDLoss`, or none for a CAM-only baseline) on the maps and the
    saliency map. Returns ``{loss_cls.loss_name: L_cls, loss_sal.loss_name: L_sal}``.

    Inference (``predict``) turns the maps into pseudo-masks:

    0. Test-time augmentation: the raw maps and logits of each scale in ``scales`` (and its
       mirror with ``flip``) are resized to the largest scale's maps and averaged; the
       background rule below is applied once, to the average (as the EPS ``infer.py``).
    1. Class scores ``[B, C+1, h, w]`` for the image's classes only (``class_labels`` of the
       metas; without them, the classes with predicted probability > 0.5), absent classes 0.
       ``bg_threshold=None`` (EPS / EPS++): softmax over the learned background and the present
       classes. A float ``t`` (CAM-only training): ``relu(M_i) / max relu(M_i)`` per present
       class, ``t`` for background.
    2. Bilinear resize to the input size, then refinement by PAMR and by a dense CRF (on each
       image without its padding), where configured.
    3. ``argmax`` over the ``C + 1`` channels (0 = background) at the original image size.

    Args:
        backbone (dict): Backbone config (the paper uses ResNet-38).
        decode_head (dict): :class:`CAMHead` config.
        loss_cls (dict): Classification loss config.
            Default: ``dict(type='MultiLabelBCELoss')``.
        loss_sal (dict | None): Saliency loss config, or None for classification only.
            Default: ``dict(type='IRDLoss')``.
        test_cfg (dict): ``mode`` ('whole' or 'slide'); ``scales`` (positive resize factors,
            default (1.0,)); ``flip`` (bool, default False); ``bg_threshold`` (None or float,
            default None); ``pamr`` (:class:`PAMR` config, None skips it); ``crf``
            (:class:`DenseCRF` config, None or {} skips it, default None).
        neck, train_cfg, data_preprocessor, pretrained, init_cfg: As ``EncoderDecoder``.

    Raises:
        ValueError: If ``test_cfg.scales`` is not a non-empty sequence of positive numbers.
        TypeError: If ``test_cfg.flip`` is not a bool.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 loss_cls: ConfigType = dict(type='MultiLabelBCELoss'),
                 loss_sal: OptConfigType = dict(type='IRDLoss'),
                 neck: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = dict(
                     mode='whole', scales=(1.0, ), flip=False, bg_threshold=None,
                     pamr=dict(type='PAMR', num_iter=10, dilations=(1, 2, 4, 8, 12, 24)),
                     crf=None),
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
        self.scales = _checked_scales(test_cfg.get('scales', (1.0, )))
        self.flip = test_cfg.get('flip', False)
        if not isinstance(self.flip, bool):
            raise TypeError(f'EPSClassifier: test_cfg.flip must be true or false, got '
                            f'{self.flip!r}')
        self.bg_threshold = test_cfg.get('bg_threshold')
        self.pamr = MODELS.build(test_cfg['pamr']) if test_cfg.get('pamr') else None
        self.crf = MODELS.build(test_cfg['crf']) if test_cfg.get('crf') else None

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Losses of a batch ``[B, 3, H, W]`` whose samples carry ``class_labels`` and, with a
        saliency loss, ``gt_saliency``.

        Raises:
            KeyError: If a saliency loss is configured and a sample has no ``gt_saliency``.
        """
        maps, logits = self.decode_head(self.extract_feat(inputs))
        labels = _stack_class_labels([s.metainfo for s in data_samples], logits)
        losses = {self.loss_cls.loss_name: self.loss_cls(logits, labels)}
        if self.loss_sal is not None:
            saliency = _stack_saliency(data_samples, inputs.shape[-2:]).to(inputs.device)
            losses[self.loss_sal.loss_name] = self.loss_sal(maps, saliency, labels, inputs)
        return losses

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Pseudo-mask scores ``[B, C+1, H, W]`` at the input size (steps 0-2 above)."""
        maps, logits = self.averaged_maps(inputs)
        if all('class_labels' in meta for meta in batch_img_metas):
            labels = _stack_class_labels(batch_img_metas, logits)
        else:
            labels = (logits.sigmoid() > 0.5).to(logits.dtype)
        scores = self.class_scores(maps, labels)
        scores = F.interpolate(scores, size=inputs.shape[-2:], mode='bilinear',
                               align_corners=self.align_corners)
        if self.pamr is not None:
            scores = self.pamr(inputs, scores)
        if self.crf is not None:
            scores = self.crf_refined(inputs, scores, batch_img_metas)
        return scores

    def averaged_maps(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        """Raw maps ``[B, C+1, h, w]`` at the size of the largest scale's maps and image-level
        logits ``[B, C]``, each averaged over ``test_cfg``'s scales and, with ``flip``, their
        mirrored passes."""
        height, width = inputs.shape[-2:]
        all_maps, logits_sum = [], 0
        for scale in self.scales:
            scaled = inputs if scale == 1.0 else F.interpolate(
                inputs, size=(round(height * scale), round(width * scale)), mode='bilinear',
                align_corners=self.align_corners)
            for mirrored in ((False, True) if self.flip else (False, )):
                maps, logits = self.decode_head(
                    self.extract_feat(scaled.flip(-1) if mirrored else scaled))
                all_maps.append(maps.flip(-1) if mirrored else maps)
                logits_sum = logits_sum + logits
        # The finest maps keep their detail; a single pass is left as the network gave it.
        size = max((maps.shape[-2:] for maps in all_maps), key=lambda hw: hw[0] * hw[1])
        maps_sum = sum(maps if maps.shape[-2:] == size else F.interpolate(
            maps, size=size, mode='bilinear', align_corners=self.align_corners)
            for maps in all_maps)
        return maps_sum / len(all_maps), logits_sum / len(all_maps)

    def crf_refined(self, inputs: Tensor, scores: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """``scores`` ``[B, C+1, H, W]`` replaced by the CRF's marginals inside each image's
        ``img_shape`` (the padding keeps its scores: it is cropped away afterwards)."""
        images = self._unnormalised_images(inputs)
        refined = scores.clone()
        for index, meta in enumerate(batch_img_metas):
            height, width = meta.get('img_shape', scores.shape[-2:])[:2]
            marginals = self.crf(images[index, :height, :width],
                                 scores[index, :, :height, :width].float().cpu().numpy())
            refined[index, :, :height, :width] = torch.from_numpy(marginals).to(refined)
        return refined

    def _unnormalised_images(self, inputs: Tensor) -> np.ndarray:
        """``uint8 [B, H, W, 3]`` images for the CRF's colour term: ``inputs`` with the data
        preprocessor's normalisation undone (channel order does not matter to it)."""
        preprocessor = self.data_preprocessor
        if getattr(preprocessor, '_enable_normalize', False):
            inputs = inputs * preprocessor.std + preprocessor.mean
        return inputs.detach().clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu() \
            .numpy()

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


def _checked_scales(scales: Sequence[float]) -> Tuple[float, ...]:
    """``test_cfg.scales`` as a tuple of floats; ``ValueError`` unless positive numbers."""
    if (isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales
            or any(not is_number(s) or not s > 0 for s in scales)):
        raise ValueError(f'EPSClassifier: test_cfg.scales must be a non-empty list of positive '
                         f'resize factors, e.g. (0.5, 1.0, 1.5, 2.0); got {scales!r}')
    return tuple(float(s) for s in scales)


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
