# PASCAL VOC 2012 + SBD (train_aug, 10,582 images) for stage 1, laid out as in the EPS code:
#   data/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug, SALImages,
#                           ImageSets/Segmentation/{train_aug,train,val}.txt, cls_labels.npy}
# SALImages: saliency maps (as released with EPS); cls_labels.npy: image-level labels.
dataset_type = 'WSSSVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
crop_size = (448, 448)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSaliencyMap'),
    dict(type='TransformBroadcaster',
         mapping=dict(img=['img', 'gt_saliency']),
         auto_remap=True,
         share_random_params=True,
         transforms=[
             # EPS: longer side resized to [448, 768], random 448x448 crop, horizontal flip.
             dict(type='RandomResize', scale=[(448, 448), (768, 768)], keep_ratio=True),
             dict(type='RandomCrop', crop_size=crop_size),
             dict(type='RandomFlip', prob=0.5),
         ]),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackWSSSInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackWSSSInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train_aug.txt',
        data_prefix=dict(img_path='JPEGImages', saliency_path='SALImages'),
        labels_file='cls_labels.npy',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/val.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        labels_file='cls_labels.npy',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
# Pseudo-masks for stage 2 are made for train_aug; their mIoU is measured on the masks of
# SegmentationClassAug (the usual "pseudo-mask mIoU on train" of WSSS papers).
pseudo_mask_dataloader = dict(
    batch_size=1,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train_aug.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        labels_file='cls_labels.npy',
        pipeline=test_pipeline))
# IRD diagnostics (IRDDiagnosticsHook, added by the EPS++ configs): the 1,464 train images with
# VOC's own masks, un-augmented, with their saliency maps.
ird_diagnostics_dataloader = dict(
    batch_size=1,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass',
                         saliency_path='SALImages'),
        labels_file='cls_labels.npy',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='LoadSaliencyMap'),
            dict(type='PackWSSSInputs'),
        ]))
custom_hooks = [dict(type='PAMRHook', dataloader=pseudo_mask_dataloader, out_dir='pseudo_masks')]
