# MS COCO 2014 for stage 1, laid out as in the EPS code (halbielee/EPS, script/coco_eps.sh):
#   data/coco2014/{JPEGImages/{train2014,val2014}, SegmentationClass/{train2014,val2014},
#                  SALImages, ImageSets/{train,val}.txt, cls_labels.npy}
# SALImages: the PFAN saliency maps released with EPS; SegmentationClass: label PNGs (0 =
# background, 1..80 the classes in COCO's category order, 255 ignore); cls_labels.npy: image-level
# labels of the training ids (EPS's metadata/coco/cls_labels.npy). See WSSSCOCODataset.
dataset_type = 'WSSSCOCODataset'
data_root = 'data/coco2014'
crop_size = (321, 321)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSaliencyMap'),
    dict(type='TransformBroadcaster',
         mapping=dict(img=['img', 'gt_saliency']),
         auto_remap=True,
         share_random_params=True,
         transforms=[
             # EPS on COCO: longer side resized to [256, 448], random 321x321 crop, flip.
             dict(type='RandomResize', scale=[(256, 256), (448, 448)], keep_ratio=True),
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
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/train.txt',
        data_prefix=dict(img_path='JPEGImages/train2014', saliency_path='SALImages'),
        labels_file='cls_labels.npy',
        pipeline=train_pipeline))
# Validation scores the pseudo-mask rule on val2014; its image labels come from its masks.
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/val.txt',
        data_prefix=dict(img_path='JPEGImages/val2014', seg_map_path='SegmentationClass/val2014'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
# Pseudo-masks for stage 2 are made for train2014 and scored on its masks (the "pseudo-mask mIoU
# on train" of WSSS papers).
pseudo_mask_dataloader = dict(
    batch_size=1,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/train.txt',
        data_prefix=dict(
            img_path='JPEGImages/train2014', seg_map_path='SegmentationClass/train2014'),
        labels_file='cls_labels.npy',
        pipeline=test_pipeline))
custom_hooks = [dict(type='PAMRHook', dataloader=pseudo_mask_dataloader, out_dir='pseudo_masks')]
