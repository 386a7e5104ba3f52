# A small EPS / EPS++ stage-1 network for CPU runs: ResNetV1c-18 at a quarter of the width,
# output stride 4 (dilated stages 3-4), trained from scratch, BN (not SyncBN: CPU runs).
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(64, 64))
model = dict(
    type='EPSClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=16,
        base_channels=16,
        num_stages=4,
        out_indices=(3, ),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg,
        contract_dilation=True),
    decode_head=dict(type='CAMHead', in_channels=128, num_classes=5),
    loss_cls=dict(type='MultiLabelSoftMarginLoss'),
    loss_sal=dict(
        type='IRDLoss',
        threshold=0.5,
        # Nothing is dropped for the first third of training: from scratch the network would
        # otherwise settle on background everywhere (see IRDLoss).
        warmup_iters=200,
        pamr=dict(type='PAMR', num_iter=10, dilations=(1, 2, 4, 8, 12, 24)),
        # Only for a saliency map of another size than the image, which training never passes.
        resize='bilinear'),
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
