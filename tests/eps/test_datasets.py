import numpy as np
import pytest
from PIL import Image

from harness.data import synthetic
from harness.eps import SyntheticShapesDataset, WSSSVOCDataset
from harness.eps.datasets import read_class_labels_from_mask

TRAIN_PREFIX = dict(img_path='JPEGImages', saliency_path='SALImages')
VAL_PREFIX = dict(img_path='JPEGImages', seg_map_path='SegmentationClass')


def build(root, split='train', data_prefix=TRAIN_PREFIX, **kwargs):
    return SyntheticShapesDataset(data_root=str(root),
                                  ann_file=f'ImageSets/Segmentation/{split}.txt',
                                  data_prefix=data_prefix, **kwargs)


def test_reads_ids_paths_and_labels_from_cls_labels(tiny_dataset):
    dataset = build(tiny_dataset, labels_file='cls_labels.npy')
    ids = (tiny_dataset / 'ImageSets/Segmentation/train.txt').read_text().split()
    assert len(dataset) == len(ids)
    stored = np.load(tiny_dataset / 'cls_labels.npy', allow_pickle=True).item()
    info = dataset.get_data_info(0)
    assert info['img_id'] == ids[0]
    assert info['saliency_path'].endswith(f'SALImages/{ids[0]}.png')
    assert 'seg_map_path' not in info  # stage-1 training never sees masks
    np.testing.assert_array_equal(info['class_labels'], stored[ids[0]])
    assert dataset.metainfo['classes'] == synthetic.CLASSES


def test_labels_derived_from_masks_equal_cls_labels(tiny_dataset):
    from_file = build(tiny_dataset, 'val', VAL_PREFIX, labels_file='cls_labels.npy')
    from_masks = build(tiny_dataset, 'val', VAL_PREFIX)
    for i in range(len(from_file)):
        np.testing.assert_array_equal(from_file.get_data_info(i)['class_labels'],
                                      from_masks.get_data_info(i)['class_labels'])


def test_voc_dataset_has_the_21_voc_classes():
    assert len(WSSSVOCDataset.METAINFO['classes']) == 21


@pytest.mark.parametrize('folder', ['SALImages', 'JPEGImages'])
def test_missing_file_is_named(dataset_copy, folder):
    victim = sorted((dataset_copy / folder).iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        build(dataset_copy, labels_file='cls_labels.npy')


def test_missing_split_file_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match='JPEGImages.*SALImages'):
        build(tmp_path / 'nowhere')


def test_missing_labels_file_is_named(dataset_copy):
    (dataset_copy / 'cls_labels.npy').unlink()
    with pytest.raises(FileNotFoundError, match='cls_labels.npy'):
        build(dataset_copy, labels_file='cls_labels.npy')


def test_id_without_labels_is_named(dataset_copy):
    labels = np.load(dataset_copy / 'cls_labels.npy', allow_pickle=True).item()
    missing_id = sorted(labels)[0]
    del labels[missing_id]
    np.save(dataset_copy / 'cls_labels.npy', labels)
    with pytest.raises(KeyError, match=missing_id):
        build(dataset_copy, labels_file='cls_labels.npy')


def test_no_labels_at_all_is_an_error(tiny_dataset):
    with pytest.raises(ValueError, match='labels_file'):
        build(tiny_dataset)


def test_unknown_class_index_in_a_mask_is_named(tmp_path):
    mask = tmp_path / 'bad.png'
    Image.fromarray(np.array([[0, 1], [9, 255]], dtype=np.uint8)).save(mask)
    with pytest.raises(ValueError, match=r'bad.png holds class indices \[9\]'):
        read_class_labels_from_mask(str(mask), num_classes=5)


def test_labels_from_mask_ignore_background_and_255(tmp_path):
    mask = tmp_path / 'ok.png'
    Image.fromarray(np.array([[0, 2], [5, 255]], dtype=np.uint8)).save(mask)
    np.testing.assert_array_equal(read_class_labels_from_mask(str(mask), 5), [0, 1, 0, 0, 1])
