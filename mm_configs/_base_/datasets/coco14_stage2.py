# MS COCO 2014 for stage 2; same two-part training set as shapes_voc_stage2.py
# (labelled_dataset + pseudo_labelled_dataset, filled in by harness.trial).
_base_ = './coco14_wsss.py'
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
labelled_dataset = dict(
    type='WSSSCOCODataset',
    data_root={{_base_.data_root}},
    ann_file='ImageSets/train.txt',
    data_prefix=dict(img_path='JPEGImages/train2014', seg_map_path='SegmentationClass/train2014'),
    labels_file='cls_labels.npy',
    pipeline=train_pipeline)
pseudo_labelled_dataset = dict(
    type='WSSSCOCODataset',
    data_root={{_base_.data_root}},
    ann_file='ImageSets/train.txt',
    data_prefix=dict(img_path='JPEGImages/train2014', seg_map_path='pseudo_masks'),
    labels_file='cls_labels.npy',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=4,
    dataset=dict(_delete_=True, type='ConcatDataset', datasets=[labelled_dataset]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
custom_hooks = []
