# Stage 2 on PASCAL VOC 2012 (train_aug), the paper's segmentation setting as mmseg ships it:
# DeepLabV3+ on ResNetV1c-101 (ImageNet weights), output stride 8, 512x512 crops, batch 16
# (4 GPUs x 4), 40k iterations, SGD lr 0.01, poly decay, weight decay 5e-4.
_base_ = [
    '../_base_/models/deeplabv3plus_r101-d8.py', '../_base_/datasets/voc12aug_stage2.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40k.py'
]
