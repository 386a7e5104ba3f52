# The bundled dataset for stage 2 (segmentation). Training data is the union of
#   labelled_dataset:        ids with ground-truth masks (SSSS: the labelled fraction), and
#   pseudo_labelled_dataset: ids with stage-1 pseudo-masks (WSSS: all ids; SSSS: the rest).
# harness.trial writes the split files, points pseudo_labelled_dataset at the pseudo-mask folder
# and keeps the non-empty parts. Used on its own, this config is fully supervised.
dataset_type = 'SyntheticShapesDataset'
data_root = 'data/shapes_voc'
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(64, 64), ratio_range=(1.0, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
labelled_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='ImageSets/Segmentation/train.txt',
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    labels_file='cls_labels.npy',
    pipeline=train_pipeline)
pseudo_labelled_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='ImageSets/Segmentation/train.txt',
    data_prefix=dict(img_path='JPEGImages', seg_map_path='pseudo_masks'),
    labels_file='cls_labels.npy',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ConcatDataset', datasets=[labelled_dataset]))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
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
