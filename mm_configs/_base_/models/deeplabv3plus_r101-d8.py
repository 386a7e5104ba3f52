# DeepLabV3+ on ResNetV1c-101 (ImageNet weights) at output stride 8, SyncBN, with mmseg's FCN
# auxiliary head: the papers' stage-2 network (512x512 crops, 21 classes: VOC; leaves change it).
_base_ = './deeplabv3plus_r18-tiny.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(
        depth=101,
        stem_channels=64,
        base_channels=64,
        strides=(1, 2, 2, 1),
        dilations=(1, 1, 1, 2),
        norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=2048,
        channels=512,
        dilations=(1, 12, 24, 36),
        c1_in_channels=256,
        c1_channels=48,
        num_classes=21,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=1024,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
