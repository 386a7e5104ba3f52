# EPS++ stage 1 on MS COCO 2014 (train2014, 82,081 images), at the EPS code's COCO setting
# (script/coco_eps.sh): batch 16, 321x321 crops of images resized to a longer side in [256, 448],
# 256.5k iterations (50 epochs), SGD lr 0.01 with poly decay, weight decay 5e-4, the classifier at
# 10x; IRD threshold 0.5 as on VOC. Pseudo-masks as in EPS's infer.py: scales 0.5, 1, 1.5, 2 and
# their horizontal flips. The paper's backbone is ResNet-38 (ImageNet weights), which mmseg does
# not ship; ResNetV1c-101 at output stride 8 is the closest mmseg backbone.
_base_ = [
    '../_base_/models/eps_r101-d8.py', '../_base_/datasets/coco14_wsss.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_stage1_256k.py'
]
model = dict(
    data_preprocessor=dict(size=(321, 321)),
    decode_head=dict(num_classes=80),
    # IRD drops nothing during the first ~2 epochs, while the localization maps take shape.
    loss_sal=dict(threshold=0.5, warmup_iters=10000),
    test_cfg=dict(scales=(0.5, 1.0, 1.5, 2.0), flip=True))
