"""harness.data.prepare on small downloads in their genuine formats: VOC's tar, SBD's tgz of
MATLAB structs, COCO's zips and instances JSON; then harness.data.check and a trial on the
result."""
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.io import savemat

from downloads import (COCO_CATEGORY_IDS, coco_instances, jpeg_bytes, object_mask,
                       saliency_files, sbd_files, voc_files, write_archive)
from harness.data import check, prepare
from tiny_configs import SHORT, SMALL_STAGE2_CROPS, TINY_STAGE1, TINY_STAGE2

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VOC_CONFIGS = [
    PROJECT_ROOT / 'mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py',
    PROJECT_ROOT / 'mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py']
COCO_CONFIGS = [PROJECT_ROOT / 'mm_configs/eps/epspp-ird_r101-d8_1xb16-256k_coco14-321x321.py',
                PROJECT_ROOT / 'mm_configs/eps/eps_r101-d8_1xb16-256k_coco14-321x321.py',
                PROJECT_ROOT / 'mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-80k_coco14-512x512.py']

# VOC: its own masks for its train/val ids (255 bands around objects); SBD's for the others.
# SBD also has masks for 2007_000032 (VOC's wins) and 2007_000033, 2008_000002 (VOC val: not in
# train_aug). 2012_000001 is in no list.
VOC_TRAIN, VOC_VAL = ['2007_000032', '2007_000039'], ['2007_000033', '2008_000002']
SBD_TRAIN, SBD_VAL = ['2007_000032', '2008_000002', '2008_000008'], ['2007_000033', '2008_000015']
TRAIN_AUG = ['2007_000032', '2007_000039', '2008_000008', '2008_000015']
SIZES = {'2007_000032': (30, 40), '2007_000039': (36, 28), '2007_000033': (32, 32),
         '2008_000002': (24, 40), '2008_000008': (40, 30), '2008_000015': (30, 30),
         '2012_000001': (20, 20)}
VOC_MASKS = {
    '2007_000032': object_mask(30, 40, [(1, 4, 4, 12, 20), (15, 15, 22, 28, 38)], border=2),
    '2007_000039': object_mask(36, 28, [(7, 10, 5, 30, 20)], border=1),
    '2007_000033': object_mask(32, 32, [(20, 2, 2, 30, 30)], border=2),
    '2008_000002': object_mask(24, 40, [(11, 5, 5, 20, 35)], border=1)}
SBD_MASKS = {
    '2007_000032': object_mask(30, 40, [(2, 0, 0, 30, 40)]),
    '2007_000033': object_mask(32, 32, [(3, 0, 0, 10, 10)]),
    '2008_000002': object_mask(24, 40, [(4, 0, 0, 10, 10)]),
    '2008_000008': object_mask(40, 30, [(3, 5, 5, 25, 25), (9, 30, 0, 40, 30)]),
    '2008_000015': object_mask(30, 30, [(20, 10, 10, 20, 20)])}


def voc_download(tmp: Path, kind: str, sbd_masks=SBD_MASKS, saliency_ids=TRAIN_AUG) -> dict:
    """The three VOC inputs as archives (``kind='archives'``) or folders."""
    voc = voc_files(VOC_MASKS, VOC_TRAIN, VOC_VAL, SIZES)
    sbd = sbd_files(sbd_masks, SBD_TRAIN, SBD_VAL)
    saliency = saliency_files({i: SIZES[i] for i in saliency_ids + ['2012_000001']})
    archives = kind == 'archives'
    voc_name = 'VOCtrainval_11-May-2012.tar' if archives else 'voc'
    return dict(voc=write_archive(tmp / voc_name, voc),
                sbd=write_archive(tmp / ('benchmark.tgz' if archives else 'sbd'), sbd),
                saliency=write_archive(tmp / ('saliency.zip' if archives else 'sal'), saliency))


def run_voc(inputs: dict, out: Path, capsys) -> str:
    prepare.main(['voc', '--voc', str(inputs['voc']), '--sbd', str(inputs['sbd']),
                  '--saliency', str(inputs['saliency']), '--out', str(out), '--workers', '2'])
    return capsys.readouterr().out


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        prepare.main(argv)
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith('error: refused, nothing written: ') and error.count('\n') == 1
    return error


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def listed(path: Path):
    return path.read_text().split()


@pytest.fixture(scope='module')
def voc_layout(tmp_path_factory) -> Path:
    """The VOC layout prepared from the archives (read-only for tests)."""
    tmp = tmp_path_factory.mktemp('voc')
    inputs = voc_download(tmp, 'archives')
    out = tmp / 'VOC2012'
    prepare.main(['voc', '--voc', str(inputs['voc']), '--sbd', str(inputs['sbd']),
                  '--saliency', str(inputs['saliency']), '--out', str(out), '--workers', '2'])
    return out


def test_voc_archives_become_the_layout_of_the_voc_configs(voc_layout):
    lists = voc_layout / 'ImageSets' / 'Segmentation'
    assert listed(lists / 'train.txt') == VOC_TRAIN and listed(lists / 'val.txt') == VOC_VAL
    assert listed(lists / 'train_aug.txt') == TRAIN_AUG
    images = sorted(TRAIN_AUG + VOC_VAL)
    assert sorted(p.stem for p in (voc_layout / 'JPEGImages').iterdir()) == images
    voc = voc_files(VOC_MASKS, VOC_TRAIN, VOC_VAL, SIZES)
    for image_id in images:
        assert (voc_layout / 'JPEGImages' / f'{image_id}.jpg').read_bytes() == \
            voc[f'VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg']
    for image_id, mask in VOC_MASKS.items():  # VOC's own, 255 borders kept, in both folders
        assert (voc_layout / 'SegmentationClass' / f'{image_id}.png').read_bytes() == \
            voc[f'VOCdevkit/VOC2012/SegmentationClass/{image_id}.png']
        np.testing.assert_array_equal(pixels(voc_layout / 'SegmentationClassAug' /
                                             f'{image_id}.png'), mask)
        assert 255 in mask
    for image_id in ('2008_000008', '2008_000015'):
        written = Image.open(voc_layout / 'SegmentationClassAug' / f'{image_id}.png')
        assert written.mode == 'P' and written.getpalette()[3:6] == [128, 0, 0]
        np.testing.assert_array_equal(np.asarray(written), SBD_MASKS[image_id])
    assert sorted(p.stem for p in (voc_layout / 'SegmentationClassAug').iterdir()) == \
        sorted(set(VOC_MASKS) | set(SBD_MASKS))
    assert sorted(p.stem for p in (voc_layout / 'SALImages').iterdir()) == TRAIN_AUG

    labels = np.load(voc_layout / 'cls_labels.npy', allow_pickle=True).item()
    assert sorted(labels) == images
    expected = {'2007_000032': [1, 15], '2007_000039': [7], '2007_000033': [20],
                '2008_000002': [11], '2008_000008': [3, 9], '2008_000015': [20]}
    for image_id, classes in expected.items():
        assert labels[image_id].dtype == np.float32 and labels[image_id].shape == (20, )
        assert sorted(np.flatnonzero(labels[image_id]) + 1) == classes


def test_check_accepts_the_voc_layout_for_the_paper_configs(voc_layout, capsys):
    argv = [str(voc_layout)] + [f'--config={config}' for config in VOC_CONFIGS]
    assert check.main(argv) == 0
    assert 'OK' in capsys.readouterr().out


def test_voc_folders_are_linked_and_a_rerun_restores_only_what_is_missing(tmp_path, capsys):
    inputs = voc_download(tmp_path, 'folders')
    out = tmp_path / 'VOC2012'
    run_voc(inputs, out, capsys)
    source = inputs['voc'] / 'VOCdevkit/VOC2012/JPEGImages/2007_000039.jpg'
    assert os.path.samefile(out / 'JPEGImages/2007_000039.jpg', source)  # linked, not copied

    removed = [out / 'SALImages/2008_000015.png', out / 'SegmentationClassAug/2008_000008.png',
               out / 'JPEGImages/2007_000039.jpg']
    wrong = out / 'SegmentationClassAug/2008_000015.png'
    originals = {path: path.read_bytes() for path in removed}
    kept = {path: os.stat(path) for path in out.rglob('*') if path.is_file()
            and path not in removed and path != wrong}
    for path in removed:
        path.unlink()
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(wrong)

    configs = [f'--config={config}' for config in VOC_CONFIGS]
    assert check.main([str(out), *configs]) == 1
    report = capsys.readouterr().out
    assert f'1 saliency maps missing: {out}/SALImages/2008_000015.png' in report
    assert f'1 images missing: {out}/JPEGImages/2007_000039.jpg' in report

    summary = run_voc(inputs, out, capsys)
    assert 'SALImages: 3 kept, 1 written' in summary
    assert 'SegmentationClassAug: 4 kept, 1 replaced, 1 written' in summary
    for path, data in originals.items():
        assert path.read_bytes() == data
    np.testing.assert_array_equal(pixels(wrong), SBD_MASKS['2008_000015'])
    for path, before in kept.items():  # untouched: same file, same modification time
        after = os.stat(path)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), path
    assert check.main([str(out), *configs]) == 0


def test_sbd_mat_without_gtcls_is_refused_before_anything_is_written(tmp_path, capsys):
    inputs = voc_download(tmp_path, 'archives')
    files = sbd_files(SBD_MASKS, SBD_TRAIN, SBD_VAL)
    for image_id in ('2008_000008', '2008_000015'):
        buffer = io.BytesIO()
        savemat(buffer, {'GTinst': {'Segmentation': SBD_MASKS[image_id]}})
        files[f'benchmark_RELEASE/dataset/cls/{image_id}.mat'] = buffer.getvalue()
    write_archive(inputs['sbd'], files)
    error = refused(['voc', '--voc', str(inputs['voc']), '--sbd', str(inputs['sbd']),
                     '--saliency', str(inputs['saliency']), '--out', str(tmp_path / 'out')],
                    capsys)
    assert ('2 malformed SBD masks (e.g. 2008_000008.mat: no GTcls.Segmentation, '
            '2008_000015.mat: no GTcls.Segmentation)') in error
    assert not (tmp_path / 'out').exists()


def test_train_aug_ids_without_saliency_are_refused_naming_them(tmp_path, capsys):
    inputs = voc_download(tmp_path, 'folders', saliency_ids=['2007_000032', '2008_000008'])
    error = refused(['voc', '--voc', str(inputs['voc']), '--sbd', str(inputs['sbd']),
                     '--saliency', str(inputs['saliency']), '--out', str(tmp_path / 'out')],
                    capsys)
    assert ('2 train_aug ids without a saliency map <id>.png in SAL (e.g. 2007_000039, '
            '2008_000015)') in error
    assert not (tmp_path / 'out').exists()


# ---- COCO ----

def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = mask.ravel(order='F').astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return dict(counts=counts, size=list(mask.shape))


def rect(height, width, top, left, bottom, right) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


def polygon(top, left, bottom, right) -> list:
    """A rectangle as a COCO polygon (pycocotools fills rows top..bottom-1, cols left..right-1)."""
    return [[left, top, right, top, right, bottom, left, bottom]]


def compressed_rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(counts=encoded['counts'].decode(), size=list(mask.shape))


def annotation(index, image_id, category, segmentation, crowd=0) -> dict:
    return dict(id=index, image_id=image_id, category_id=category, segmentation=segmentation,
                iscrowd=crowd, area=0, bbox=[0, 0, 1, 1])


# Image 9 (20x30): a person (category 1) with a toothbrush (90) on it, a stop sign (13, the
# 12th category: 12 is unused) as compressed RLE, a crowd region (uncompressed RLE) half on the
# person. Image 25: only a crowd. Image 30: a bicycle (2) as uncompressed RLE. Image 31: nothing.
TRAIN_IMAGES = [dict(id=9, file_name='COCO_train2014_000000000009.jpg', height=20, width=30),
                dict(id=25, file_name='COCO_train2014_000000000025.jpg', height=16, width=16),
                dict(id=30, file_name='COCO_train2014_000000000030.jpg', height=18, width=12),
                dict(id=31, file_name='COCO_train2014_000000000031.jpg', height=10, width=10)]
TRAIN_ANNOTATIONS = [  # the toothbrush first: painting in the JSON's order would hide it
    annotation(2, 9, 90, polygon(4, 4, 8, 10)),
    annotation(1, 9, 1, polygon(2, 2, 16, 14)),
    annotation(3, 9, 13, compressed_rle(rect(20, 30, 5, 18, 15, 26))),
    annotation(4, 9, 1, uncompressed_rle(rect(20, 30, 12, 10, 19, 17)), crowd=1),
    annotation(5, 25, 1, uncompressed_rle(rect(16, 16, 0, 0, 8, 8)), crowd=1),
    annotation(6, 30, 2, uncompressed_rle(rect(18, 12, 3, 3, 9, 11)))]
VAL_IMAGES = [dict(id=42, file_name='COCO_val2014_000000000042.jpg', height=12, width=14)]
VAL_ANNOTATIONS = [annotation(7, 42, 5, polygon(1, 1, 6, 6))]


def expected_train_mask_9() -> np.ndarray:
    mask = np.zeros((20, 30), np.uint8)
    mask[12:19, 10:17] = 255  # crowd, where no object lies
    mask[2:16, 2:14] = 1  # person
    mask[4:8, 4:10] = 80  # toothbrush: smaller, so on top of the person
    mask[5:15, 18:26] = 12  # stop sign
    return mask


def coco_download(tmp: Path, kind: str, train_annotations=TRAIN_ANNOTATIONS) -> dict:
    archives = kind == 'archives'
    images = {}
    for folder, entries in (('train2014', TRAIN_IMAGES), ('val2014', VAL_IMAGES)):
        files = {f'{folder}/{entry["file_name"]}': jpeg_bytes(entry['height'], entry['width'],
                                                              entry['id']) for entry in entries}
        images[folder] = write_archive(tmp / (f'{folder}.zip' if archives else 'images'), files)
    annotations = {
        'annotations/instances_train2014.json': coco_instances(TRAIN_IMAGES, train_annotations),
        'annotations/instances_val2014.json': coco_instances(VAL_IMAGES, VAL_ANNOTATIONS)}
    saliency = saliency_files({Path(entry['file_name']).stem: (entry['height'], entry['width'])
                               for entry in TRAIN_IMAGES})
    return dict(train=images['train2014'], val=images['val2014'],
                annotations=write_archive(
                    tmp / ('annotations_trainval2014.zip' if archives else 'coco'), annotations),
                saliency=write_archive(tmp / 'coco_saliency', saliency))


def coco_argv(inputs: dict, out: Path) -> list:
    train = inputs['train'] if inputs['train'].suffix else inputs['train'] / 'train2014'
    val = inputs['val'] if inputs['val'].suffix else inputs['val'] / 'val2014'
    return ['coco', '--train-images', str(train), '--val-images', str(val),
            '--annotations', str(inputs['annotations']), '--saliency', str(inputs['saliency']),
            '--out', str(out), '--workers', '2']


@pytest.fixture(scope='module')
def coco_layout(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp('coco')
    out = tmp / 'coco2014'
    prepare.main(coco_argv(coco_download(tmp, 'archives'), out))
    return out


def test_coco_category_ids_are_the_real_ones():
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[11] == 13
    assert COCO_CATEGORY_IDS[-1] == 90


def test_coco_archives_become_the_layout_of_the_coco_configs(coco_layout):
    assert listed(coco_layout / 'ImageSets/train.txt') == [
        'COCO_train2014_000000000009', 'COCO_train2014_000000000030']  # 25: crowd only
    assert listed(coco_layout / 'ImageSets/val.txt') == ['COCO_val2014_000000000042']
    np.testing.assert_array_equal(
        pixels(coco_layout / 'SegmentationClass/train2014/COCO_train2014_000000000009.png'),
        expected_train_mask_9())
    bicycle = np.zeros((18, 12), np.uint8)
    bicycle[3:9, 3:11] = 2
    np.testing.assert_array_equal(
        pixels(coco_layout / 'SegmentationClass/train2014/COCO_train2014_000000000030.png'),
        bicycle)
    airplane = np.zeros((12, 14), np.uint8)
    airplane[1:6, 1:6] = 5
    np.testing.assert_array_equal(
        pixels(coco_layout / 'SegmentationClass/val2014/COCO_val2014_000000000042.png'), airplane)
    assert (coco_layout / 'JPEGImages/train2014/COCO_train2014_000000000030.jpg').read_bytes() \
        == jpeg_bytes(18, 12, 30)
    assert (coco_layout / 'JPEGImages/val2014/COCO_val2014_000000000042.jpg').is_file()
    assert sorted(p.name for p in (coco_layout / 'SALImages').iterdir()) == [
        'COCO_train2014_000000000009.png', 'COCO_train2014_000000000030.png']

    labels = np.load(coco_layout / 'cls_labels.npy', allow_pickle=True).item()
    assert sorted(labels) == ['COCO_train2014_000000000009', 'COCO_train2014_000000000030']
    assert labels['COCO_train2014_000000000009'].shape == (80, )
    assert list(np.flatnonzero(labels['COCO_train2014_000000000009']) + 1) == [1, 12, 80]
    assert list(np.flatnonzero(labels['COCO_train2014_000000000030']) + 1) == [2]


def test_check_accepts_the_coco_layout_for_the_paper_configs(coco_layout, capsys):
    argv = [str(coco_layout)] + [f'--config={config}' for config in COCO_CONFIGS]
    assert check.main(argv) == 0


def test_coco_folders_give_the_same_layout(coco_layout, tmp_path, capsys):
    out = tmp_path / 'coco2014'
    prepare.main(coco_argv(coco_download(tmp_path, 'folders'), out))
    summary = capsys.readouterr().out
    assert f'{out}: train 2, val 1 ids' in summary
    assert 'skipped: 2 train and 0 val images without a non-crowd object' in summary
    for path in coco_layout.rglob('*'):
        if path.is_file() and path.suffix != '.npy':
            assert (out / path.relative_to(coco_layout)).read_bytes() == path.read_bytes(), path


def test_coco_malformed_segmentation_and_missing_image_are_refused(tmp_path, capsys):
    broken = [*TRAIN_ANNOTATIONS, annotation(8, 9, 3, [[1, 2, 3]]),
              annotation(9, 31, 3, polygon(1, 1, 5, 5))]
    inputs = coco_download(tmp_path, 'folders', train_annotations=broken)
    (inputs['train'] / 'train2014/COCO_train2014_000000000031.jpg').unlink()
    error = refused(coco_argv(inputs, tmp_path / 'out'), capsys)
    assert ('1 malformed segmentations (e.g. instances_train2014.json annotation 8: polygons '
            'need an even number (>= 6) of coordinates each)') in error
    assert '1 train images without their file in' in error
    assert 'COCO_train2014_000000000031.jpg' in error
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('damage', ['no SALImages', 'labels of 20 classes'])
def test_sweep_check_refuses_a_coco_layout_the_configs_cannot_read(coco_layout, damage, tmp_path,
                                                                   capsys):
    from harness import sweep as sweep_cli
    from test_validation import refused as refused_line, write_sweep

    root = shutil.copytree(coco_layout, tmp_path / 'coco2014')
    if damage == 'no SALImages':
        shutil.rmtree(root / 'SALImages')
        expected = f"1 folders missing: {root / 'SALImages'} (data_prefix['saliency_path'])"
    else:
        labels = np.load(root / 'cls_labels.npy', allow_pickle=True).item()
        np.save(root / 'cls_labels.npy', {key: value[:20] for key, value in labels.items()})
        expected = (f'2 labels of another length than the 80 classes in {root}/cls_labels.npy: '
                    'COCO_train2014_000000000009 (shape (20,))')
    sweep = write_sweep(tmp_path, data_root=str(root), stage1_config=str(COCO_CONFIGS[0]),
                        stage2_config=str(COCO_CONFIGS[2]))
    assert expected in refused_line(sweep_cli.main, [str(sweep), '--check'], capsys)


@pytest.mark.slow
def test_both_stages_run_on_the_prepared_voc_layout(voc_layout, tmp_path):
    from harness.trial import TrialSpec, run_trial

    tiny1, tiny2 = tmp_path / 'stage1.py', tmp_path / 'stage2.py'
    tiny1.write_text(TINY_STAGE1.format(config=VOC_CONFIGS[0]))
    tiny2.write_text(TINY_STAGE2.format(config=VOC_CONFIGS[1]))
    spec = TrialSpec(stage1_config=str(tiny1), stage2_config=str(tiny2), task='wsss',
                     data_root=str(voc_layout),
                     stage1={**SHORT, 'model.loss_sal.warmup_iters': 1,
                             'custom_hooks.0.dataloader.num_workers': 0,
                             'custom_hooks.1.dataloader.num_workers': 0},
                     stage2={**SHORT, **SMALL_STAGE2_CROPS})
    result = run_trial(spec, tmp_path / 'trial', stage1_cache=tmp_path / 'stage1')
    for key in ('val/mIoU', 'pseudo/mIoU', 'stage1/mIoU'):
        assert 0 <= result[key] <= 100
    assert 'val/IoU.aeroplane' in result and 'pseudo/IoU.tvmonitor' in result
    masks = sorted(path.stem for path in tmp_path.glob('stage1/*/pseudo_masks/*.png'))
    assert masks == TRAIN_AUG


def test_default_outputs_are_the_configs_data_roots():
    from mmengine.config import Config

    datasets = PROJECT_ROOT / 'mm_configs/_base_/datasets'
    for name, default in (('voc12aug_wsss.py', prepare.VOC_DATA_ROOT),
                          ('coco14_wsss.py', prepare.COCO_DATA_ROOT)):
        assert Config.fromfile(str(datasets / name)).data_root == default


def test_check_refuses_bad_arguments_with_status_2(tmp_path, capsys):
    for argv, expected in (([str(tmp_path / 'absent'), '--config', str(VOC_CONFIGS[0])],
                            'is not a folder'),
                           ([str(tmp_path), '--config', str(tmp_path / 'absent.py')],
                            'absent.py not found')):
        with pytest.raises(SystemExit) as caught:
            check.main(argv)
        assert caught.value.code == 2 and expected in capsys.readouterr().err
