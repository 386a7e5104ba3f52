# EPS++ stage 1 on PASCAL VOC 2012 (train_aug), the paper's setting (TPAMI 2023, Sec. 5.1):
# batch 8, 448x448 crops, ~20 epochs (26.5k iterations), SGD lr 0.01 with poly decay, weight decay
# 5e-4, IRD threshold 0.5. The paper's backbone is ResNet-38 (ImageNet weights), which mmseg
# does not ship; ResNetV1c-101 at output stride 8 is the closest mmseg backbone.
_base_ = [
    '../_base_/models/eps_r101-d8.py', '../_base_/datasets/voc12aug_wsss.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_stage1_26k.py'
]
# IRD drops nothing during the first ~2 epochs, while the localization maps take shape.
model = dict(loss_sal=dict(threshold=0.5, warmup_iters=2500))
# Pseudo-masks of train_aug, and IRD's dropped region against VOC's train masks every 5000
# iterations after the warm-up and at the end (ird/precision, ird/recall).
custom_hooks = [
    dict(type='PAMRHook', dataloader={{_base_.pseudo_mask_dataloader}}, out_dir='pseudo_masks'),
    dict(type='IRDDiagnosticsHook', dataloader={{_base_.ird_diagnostics_dataloader}},
         interval=5000),
]
