# The bundled dataset (python -m harness.data.synthetic --out data/shapes_voc), stage 1 (WSSS):
# training sees images, image-level labels and saliency maps only; validation scores the
# pseudo-masks against the val masks; PAMRHook writes the pseudo-masks of the train split.
dataset_type = 'SyntheticShapesDataset'
data_root = 'data/shapes_voc'
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadSaliencyMap'),
    # The saliency map must follow the image through every geometric augmentation.
    dict(type='TransformBroadcaster',
         mapping=dict(img=['img', 'gt_saliency']),
         auto_remap=True,
         share_random_params=True,
         transforms=[
             dict(type='RandomResize', scale=(64, 64), ratio_range=(1.0, 1.5), keep_ratio=True),
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
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train.txt',
        data_prefix=dict(img_path='JPEGImages', saliency_path='SALImages'),
        labels_file='cls_labels.npy',
        pipeline=train_pipeline))
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
pseudo_mask_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        labels_file='cls_labels.npy',
        pipeline=test_pipeline))
# IRD diagnostics (IRDDiagnosticsHook, added by the EPS++ configs): the train split without
# augmentation, with masks, saliency and the per-pixel saliency error kinds the generator injected.
ird_diagnostics_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='ImageSets/Segmentation/train.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass',
                         saliency_path='SALImages', saliency_errors_path='SaliencyErrors'),
        labels_file='cls_labels.npy',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='LoadSaliencyMap'),
            dict(type='LoadSaliencyErrors'),
            dict(type='PackWSSSInputs'),
        ]))
custom_hooks = [dict(type='PAMRHook', dataloader=pseudo_mask_dataloader, out_dir='pseudo_masks')]
