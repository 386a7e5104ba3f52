"""MS COCO 2014 in the EPS code's layout: the dataset, the paper configs, both stages run."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from harness.eps import WSSSCOCODataset
from harness.eps.datasets import COCO_CLASSES
from harness.pseudo_mask_grid import write_pseudo_mask_grid
from harness.trial import TrialSpec, run_trial
from tiny_configs import SHORT, SMALL_STAGE2_CROPS, TINY_STAGE1, TINY_STAGE2

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STAGE1 = PROJECT_ROOT / 'mm_configs/eps/epspp-ird_r101-d8_1xb16-256k_coco14-321x321.py'
STAGE1_EPS = PROJECT_ROOT / 'mm_configs/eps/eps_r101-d8_1xb16-256k_coco14-321x321.py'
STAGE2 = PROJECT_ROOT / 'mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-80k_coco14-512x512.py'
SPLITS = (('train', 'train2014'), ('val', 'val2014'))


def write_coco_layout(bundled: Path, root: Path) -> Path:
    """The bundled dataset rewritten in the EPS code's COCO layout: ids ``COCO_<split>2014_<n>``,
    images and masks under ``<split>2014/`` folders, labels widened to 80 classes (its 5 shape
    classes become COCO classes 1..5, which its masks' indices already are)."""
    labels = np.load(bundled / 'cls_labels.npy', allow_pickle=True).item()
    coco_labels = {}
    for split, folder in SPLITS:
        ids = (bundled / 'ImageSets' / 'Segmentation' / f'{split}.txt').read_text().split()
        coco_ids = [f'COCO_{folder}_{index:012d}' for index in range(len(ids))]
        for sub in (f'JPEGImages/{folder}', f'SegmentationClass/{folder}', 'SALImages',
                    'ImageSets'):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for old, new in zip(ids, coco_ids):
            shutil.copy(bundled / 'JPEGImages' / f'{old}.jpg',
                        root / 'JPEGImages' / folder / f'{new}.jpg')
            shutil.copy(bundled / 'SegmentationClass' / f'{old}.png',
                        root / 'SegmentationClass' / folder / f'{new}.png')
            shutil.copy(bundled / 'SALImages' / f'{old}.png', root / 'SALImages' / f'{new}.png')
            if split == 'train':
                coco_labels[new] = np.pad(labels[old], (0, 80 - len(labels[old])))
        (root / 'ImageSets' / f'{split}.txt').write_text('\n'.join(coco_ids) + '\n')
    np.save(root / 'cls_labels.npy', coco_labels)
    return root


@pytest.fixture(scope='module')
def coco_dataset(tiny_dataset, tmp_path_factory) -> Path:
    """12 train and 6 val images in the COCO 2014 layout (read-only for tests)."""
    return write_coco_layout(tiny_dataset, tmp_path_factory.mktemp('coco') / 'coco2014')


def stage1_dataset(root: Path, **prefix) -> WSSSCOCODataset:
    return WSSSCOCODataset(
        data_root=str(root), ann_file='ImageSets/train.txt', labels_file='cls_labels.npy',
        data_prefix=prefix or dict(img_path='JPEGImages/train2014', saliency_path='SALImages'))


def test_reads_the_eps_coco_layout(coco_dataset):
    dataset = stage1_dataset(coco_dataset)
    assert len(dataset) == 12
    info = dataset.get_data_info(0)
    assert info['img_id'] == 'COCO_train2014_000000000000'
    assert info['img_path'].endswith('JPEGImages/train2014/COCO_train2014_000000000000.jpg')
    assert info['saliency_path'].endswith('SALImages/COCO_train2014_000000000000.png')
    assert info['class_labels'].shape == (80, )
    classes = dataset.metainfo['classes']
    assert len(classes) == 81 and classes[:3] == ('background', 'person', 'bicycle')
    assert classes[-1] == 'toothbrush' and len(dataset.metainfo['palette']) == 81


@pytest.mark.parametrize('folder,prefix', [
    ('SALImages', dict(img_path='JPEGImages/train2014', saliency_path='SALImages')),
    ('SegmentationClass/train2014',
     dict(img_path='JPEGImages/train2014', seg_map_path='SegmentationClass/train2014')),
])
def test_missing_folder_is_named_with_the_coco_layout(coco_dataset, tmp_path, folder, prefix):
    root = shutil.copytree(coco_dataset, tmp_path / 'coco2014')
    shutil.rmtree(root / folder)
    key = next(key for key, value in prefix.items() if value == folder)
    with pytest.raises(FileNotFoundError) as caught:
        stage1_dataset(root, **prefix)
    message = str(caught.value)
    assert f"{root / folder} (data_prefix['{key}']) not found" in message
    assert 'JPEGImages/{train2014,val2014}/<id>.jpg' in message  # the expected layout
    assert 'SALImages/<id>.png' in message and 'cls_labels.npy' in message


def test_configs_are_the_eps_coco_setting():
    epspp, eps, stage2 = (Config.fromfile(str(path)) for path in (STAGE1, STAGE1_EPS, STAGE2))
    for cfg in (epspp, eps):
        assert cfg.dataset_type == 'WSSSCOCODataset' and cfg.data_root == 'data/coco2014'
        assert cfg.train_dataloader.batch_size == 16
        assert cfg.crop_size == (321, 321) and cfg.model.data_preprocessor.size == (321, 321)
        assert cfg.train_cfg.max_iters == 256500
        assert cfg.model.decode_head.num_classes == 80
        assert cfg.model.test_cfg.scales == (0.5, 1.0, 1.5, 2.0) and cfg.model.test_cfg.flip
    assert (epspp.model.loss_sal.type, epspp.model.loss_sal.threshold) == ('IRDLoss', 0.5)
    assert dict(eps.model.loss_sal) == dict(type='EPSLoss', tau=0.4, lam=0.9, resize='nearest')
    assert stage2.model.decode_head.num_classes == len(COCO_CLASSES) == 81
    assert stage2.model.auxiliary_head.num_classes == 81
    assert stage2.labelled_dataset.type == stage2.pseudo_labelled_dataset.type == 'WSSSCOCODataset'


@pytest.mark.slow
def test_both_stages_run_on_the_coco_layout(coco_dataset, tmp_path):
    tiny1, tiny2 = tmp_path / 'stage1.py', tmp_path / 'stage2.py'
    tiny1.write_text(TINY_STAGE1.format(config=STAGE1))
    tiny2.write_text(TINY_STAGE2.format(config=STAGE2))
    spec = TrialSpec(stage1_config=str(tiny1), stage2_config=str(tiny2), task='wsss',
                     data_root=str(coco_dataset),
                     stage1={**SHORT, 'model.loss_sal.warmup_iters': 1,
                             'custom_hooks.0.dataloader.num_workers': 0},
                     stage2={**SHORT, **SMALL_STAGE2_CROPS})
    result = run_trial(spec, tmp_path / 'trial', stage1_cache=tmp_path / 'stage1')
    for key in ('val/mIoU', 'pseudo/mIoU', 'stage1/mIoU'):
        assert 0 <= result[key] <= 100
    assert 'pseudo/IoU.person' in result and 'val/IoU.toothbrush' in result
    masks = sorted(path.name for path in tmp_path.glob('stage1/*/pseudo_masks/*.png'))
    assert masks == [f'COCO_train2014_{index:012d}.png' for index in range(12)]

    # The trial's visualisation finds the images and masks of the COCO layout (train2014/).
    grid = write_pseudo_mask_grid(Path(result['stage1_config']), 0.5, tmp_path / 'grid.png',
                                  count=2)
    # 2 rows x 5 panels of 2 inches: image, saliency, CAM, saliency errors, pseudo-mask
    assert np.asarray(Image.open(grid)).shape[:2] == (400, 1000)
