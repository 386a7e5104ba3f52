# The EPS / EPS++ stage-1 network at paper size: ResNetV1c-101 (ImageNet weights) at output
# stride 8, SyncBN, 448x448 crops, 20 classes (VOC; leaves change it). The paper's backbone is
# ResNet-38, which mmseg does not ship; ResNetV1c-101 d8 is the closest mmseg backbone.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(448, 448))
model = dict(
    type='EPSClassifier',
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(
        type='ResNetV1c',
        depth=101,
        stem_channels=64,
        base_channels=64,
        num_stages=4,
        out_indices=(3, ),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg,
        contract_dilation=True),
    decode_head=dict(type='CAMHead', in_channels=2048, num_classes=20),
    loss_cls=dict(type='MultiLabelBCELoss'),
    loss_sal=dict(
        type='IRDLoss',
        threshold=0.5,
        # Nothing is dropped during the warm-up, while the localization maps take shape (see
        # IRDLoss); leaves set its length.
        warmup_iters=200,
        pamr=dict(type='PAMR', num_iter=10, dilations=(1, 2, 4, 8, 12, 24)),
        # A saliency map of another size than the compared maps is resized as the EPS code does
        # (F.interpolate's default, nearest; see docs/eps_fidelity.md).
        resize='nearest'),
    # Pseudo-masks: one pass (EPS's inference: scales=(0.5, 1.0, 1.5, 2.0), flip=True), the
    # learned background, PAMR, no dense CRF: crf=dict(type='DenseCRF') adds it with PSA's
    # parameters (an empty dict, not None, so that a config or an override can fill it in).
    test_cfg=dict(
        mode='whole',
        scales=(1.0, ),
        flip=False,
        bg_threshold=None,
        pamr=dict(type='PAMR', num_iter=10, dilations=(1, 2, 4, 8, 12, 24)),
        crf=dict()))
