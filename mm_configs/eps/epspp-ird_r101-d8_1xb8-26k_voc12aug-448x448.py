# EPS++ stage 1 on PASCAL VOC 2012 (train_aug), the paper's setting (TPAMI 2023, Sec. 5.1):
# batch 8, 448x448 crops, ~20 epochs (26.5k iterations), SGD lr 0.01 with poly decay, weight decay
# 5e-4, IRD threshold 0.5. The paper's backbone is ResNet-38 (ImageNet weights), which mmseg
# does not ship; ResNetV1c-101 at output stride 8 is the closest mmseg backbone.
_base_ = [
    '../_base_/models/eps_r18-tiny.py', '../_base_/datasets/voc12aug_wsss.py',
    '../_base_/default_runtime.py'
]
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
    # IRD drops nothing during the first ~2 epochs, while the localization maps take shape.
    loss_sal=dict(threshold=0.5, warmup_iters=2500))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4),
    # The classifier is new: EPS trains it at 10x the backbone's learning rate.
    paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=10.0)}))
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=26500, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=26500, val_interval=26500)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CrashSafeCheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# Pseudo-masks of train_aug, and IRD's dropped region against VOC's train masks every 5000
# iterations after the warm-up and at the end (ird/precision, ird/recall).
custom_hooks = [
    dict(type='PAMRHook', dataloader={{_base_.pseudo_mask_dataloader}}, out_dir='pseudo_masks'),
    dict(type='IRDDiagnosticsHook', dataloader={{_base_.ird_diagnostics_dataloader}},
         interval=5000),
]
