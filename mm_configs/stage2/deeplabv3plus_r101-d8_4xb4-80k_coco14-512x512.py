# Stage 2 on MS COCO 2014 (train2014 with pseudo-masks, val2014): DeepLabV3+ on ResNetV1c-101
# (ImageNet weights), output stride 8, 512x512 crops, batch 16 (4 GPUs x 4), SGD lr 0.01, poly
# decay, weight decay 5e-4 -- the VOC stage-2 setting -- for 80k iterations (mmseg's COCO-Stuff164k
# schedule for this model), 81 classes.
_base_ = [
    '../_base_/models/deeplabv3plus_r101-d8.py', '../_base_/datasets/coco14_stage2.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
model = dict(decode_head=dict(num_classes=81), auxiliary_head=dict(num_classes=81))
