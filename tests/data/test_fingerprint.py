import os
import shutil

from harness.data.fingerprint import INFO_FILE, dataset_fingerprint
from harness.data.synthetic import SyntheticConfig, generate_dataset


def test_a_synthetic_dataset_is_named_by_its_generator_settings(tmp_path):
    first = generate_dataset(tmp_path / 'a', SyntheticConfig(num_train=4, num_val=2,
                                                             image_size=32, seed=0))
    same = generate_dataset(tmp_path / 'b', SyntheticConfig(num_train=4, num_val=2,
                                                            image_size=32, seed=0))
    other_seed = generate_dataset(tmp_path / 'c', SyntheticConfig(num_train=4, num_val=2,
                                                                  image_size=32, seed=1))
    assert dataset_fingerprint(first) == dataset_fingerprint(same)
    assert dataset_fingerprint(first) != dataset_fingerprint(other_seed)


def test_another_dataset_is_named_by_its_files_sizes_and_times(tiny_dataset, tmp_path):
    root = tmp_path / 'voc'
    shutil.copytree(tiny_dataset, root)  # copy2: same sizes and modification times
    (root / INFO_FILE).unlink()  # not the generator's any more: a dataset like any other
    before = dataset_fingerprint(root)
    assert dataset_fingerprint(root) == before
    image = next((root / 'JPEGImages').iterdir())
    status = image.stat()
    os.utime(image, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    touched = dataset_fingerprint(root)
    assert touched != before
    split = root / 'ImageSets' / 'Segmentation' / 'train.txt'
    split.write_text(split.read_text() + 'shapes_999999\n')
    assert dataset_fingerprint(root) not in (before, touched)
    assert dataset_fingerprint(tmp_path / 'absent') == 'absent'


def test_a_linked_folder_counts_and_a_link_cycle_ends(tiny_dataset, tmp_path):
    root = tmp_path / 'voc'
    root.mkdir()
    (root / 'ImageSets').symlink_to(tiny_dataset / 'ImageSets')
    (root / 'loop').symlink_to(root)
    linked = dataset_fingerprint(root)
    (root / 'ImageSets').unlink()
    shutil.copytree(tiny_dataset / 'ImageSets', root / 'ImageSets')
    assert dataset_fingerprint(root) == linked  # the same files, reached through a link or not
