# A small DeepLabV3+ for CPU runs, as a delta on the paper-size one: ResNetV1c-18 at a quarter of
# the width, output stride 8 (dilated stages 3-4), trained from scratch, BN (not SyncBN: CPU
# runs), no auxiliary head, 64x64 crops, the bundled dataset's 6 classes.
_base_ = './deeplabv3plus_r101-d8.py'
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=(64, 64))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        depth=18,
        stem_channels=16,
        base_channels=16,
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=128,
        channels=64,
        dilations=(1, 2, 4, 6),
        c1_in_channels=16,
        c1_channels=16,
        num_classes=6,
        norm_cfg=norm_cfg),
    auxiliary_head=None)
