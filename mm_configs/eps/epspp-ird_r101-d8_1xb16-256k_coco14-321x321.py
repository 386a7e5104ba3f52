# EPS++ stage 1 on MS COCO 2014 (train2014, 82,081 images), at the EPS code's COCO setting
# (script/coco_eps.sh): batch 16, 321x321 crops of images resized to a longer side in [256, 448],
# 256.5k iterations (50 epochs), SGD lr 0.01 with poly decay, weight decay 5e-4, the classifier at
# 10x; IRD threshold 0.5 as on VOC. Pseudo-masks as in EPS's infer.py: scales 0.5, 1, 1.5, 2 and
# their horizontal flips. The paper's backbone is ResNet-38 (ImageNet weights), which mmseg does
# not ship; ResNetV1c-101 at output stride 8 is the closest mmseg backbone.
_base_ = [
    '../_base_/models/eps_r18-tiny.py', '../_base_/datasets/coco14_wsss.py',
    '../_base_/default_runtime.py'
]
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(321, 321)),
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(
        depth=101,
        stem_channels=64,
        base_channels=64,
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg),
    decode_head=dict(in_channels=2048, num_classes=80),
    # IRD drops nothing during the first ~2 epochs, while the localization maps take shape.
    loss_sal=dict(threshold=0.5, warmup_iters=10000),
    test_cfg=dict(scales=(0.5, 1.0, 1.5, 2.0), flip=True))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=10.0)}))
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=256500, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=256500, val_interval=256500)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CrashSafeCheckpointHook', by_epoch=False, interval=10000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
