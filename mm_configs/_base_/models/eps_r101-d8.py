# The EPS / EPS++ stage-1 network at paper size: ResNetV1c-101 (ImageNet weights) at output
# stride 8, SyncBN, 448x448 crops, 20 classes (VOC; leaves change it). The paper's backbone is
# ResNet-38, which mmseg does not ship; ResNetV1c-101 d8 is the closest mmseg backbone.
_base_ = './eps_r18-tiny.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(448, 448)),
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(
        depth=101,
        stem_channels=64,
        base_channels=64,
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg),
    decode_head=dict(in_channels=2048, num_classes=20),
    # A saliency map of another size than the compared maps is resized as the EPS code does
    # (F.interpolate's default, nearest; see docs/eps_fidelity.md).
    loss_sal=dict(resize='nearest'))
