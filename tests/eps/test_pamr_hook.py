"""PAMRHook in a real MMEngine run: masks on disk, logged metrics and the metrics file are exact
for a model whose predictions are known (see controlled_classifier)."""
import json

import numpy as np
import pytest
import torch
from controlled_classifier import controlled_classifier, paint
from mmengine.runner import Runner
from PIL import Image

# the first four PASCAL VOC classes: a subset of WSSSVOCDataset's, with their indices 0..3
CLASSES = ('background', 'aeroplane', 'bicycle', 'bird')
PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
# per image: the painted blocks (the model predicts them) and the ground-truth blocks, in cells
# of 4 pixels on 8 x 8 cells; (label, top, left, height, width)
IMAGES = {
    'a': ([(1, 1, 1, 3, 3), (3, 5, 2, 2, 4)], [(1, 1, 1, 3, 4), (3, 5, 2, 2, 2)]),
    'b': ([(2, 2, 2, 2, 2)], [(2, 2, 2, 2, 2)]),
}


def write_split(root):
    """A VOC-layout split of the IMAGES above (lossless PNG images)."""
    for folder in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (root / folder).mkdir(parents=True)
    for image_id, (painted, truth) in IMAGES.items():
        image, _ = paint((8, 8), painted)
        _, labels = paint((8, 8), truth)
        rgb = (image.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
        Image.fromarray(rgb).save(root / 'JPEGImages' / f'{image_id}.png')
        Image.fromarray(labels.to(torch.uint8).numpy()).save(
            root / 'SegmentationClass' / f'{image_id}.png')
    (root / 'ImageSets/Segmentation/train.txt').write_text('\n'.join(IMAGES) + '\n')


def test_writes_the_models_masks_and_their_exact_metrics(tmp_path):
    write_split(tmp_path / 'data')
    dataloader = dict(
        batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='WSSSVOCDataset', data_root=str(tmp_path / 'data'),
                     ann_file='ImageSets/Segmentation/train.txt', img_suffix='.png',
                     data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                     metainfo=dict(classes=CLASSES, palette=PALETTE),
                     pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                               dict(type='PackWSSSInputs')]))
    model = controlled_classifier(
        loss_sal=None, test_cfg=dict(mode='whole', bg_threshold=None, pamr=None),
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0],
                               std=[255, 255, 255], bgr_to_rgb=True, size=(32, 32)))
    work_dir = tmp_path / 'work'
    # one iteration at learning rate 0: the model's weights, and so its masks, stay as built
    Runner(model=model, work_dir=str(work_dir), default_scope='mmseg', train_dataloader=dataloader,
           optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
           train_cfg=dict(by_epoch=False, max_iters=1),
           custom_hooks=[dict(type='PAMRHook', dataloader=dataloader, out_dir='masks')]).train()

    for image_id, (painted, _) in IMAGES.items():
        written = Image.open(work_dir / 'masks' / f'{image_id}.png')
        assert written.mode == 'P'
        np.testing.assert_array_equal(np.asarray(written), paint((8, 8), painted)[1].numpy())
    # pixels (2 images of 32 x 32 = 2048):
    #   aeroplane: predicted 12 x 12 = 144 inside the ground truth's 12 x 16 = 192 -> IoU 75
    #   bicycle: 8 x 8 = 64 predicted and true -> 100
    #   bird: predicted 8 x 16 = 128 around the ground truth's 8 x 8 = 64 -> 50
    #   background: true 2048 - 320 = 1728, predicted 2048 - 336 = 1712, both 2048 - 384 = 1664
    #               -> IoU 1664 / 1776 = 93.69, recall 1664 / 1728 = 96.30
    #   right: 1664 + 144 + 64 + 64 = 1936 of 2048 = 94.53; mean recall of 96.30, 75, 100, 100
    expected = {'pseudo/aAcc': 94.53, 'pseudo/mIoU': 79.67, 'pseudo/mAcc': 92.82,
                'pseudo/IoU.background': 93.69, 'pseudo/IoU.aeroplane': 75.0,
                'pseudo/IoU.bicycle': 100.0, 'pseudo/IoU.bird': 50.0}
    # (float32 percentages: 93.69 is stored as 93.69000244140625)
    written_metrics = json.loads((work_dir / 'masks_metrics.json').read_text())
    assert written_metrics == pytest.approx(expected, abs=1e-4)
    # logged like any metric, at the run's last iteration
    logged = [json.loads(line) for path in work_dir.glob('*/vis_data/scalars.json')
              for line in path.read_text().splitlines()]
    assert [entry for entry in logged if 'pseudo/mIoU' in entry] == [
        pytest.approx(dict(expected, step=1), abs=1e-4)]
