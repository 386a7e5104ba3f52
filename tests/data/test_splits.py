import pytest

from harness.data.splits import (parse_fraction, read_ids, split_by_fraction, split_from_file,
                                 write_ids)

IDS = [f'img_{i:03d}' for i in range(40)]


@pytest.mark.parametrize('value,expected', [('1/8', 0.125), (0.25, 0.25), ('0.5', 0.5), (1, 1.0),
                                            (0, 0.0), ('0/1', 0.0)])
def test_parse_fraction(value, expected):
    assert parse_fraction(value) == expected


@pytest.mark.parametrize('value', [-0.5, 1.5, '3/2', 'half', '1/0'])
def test_fraction_outside_the_unit_interval_is_an_error(value):
    with pytest.raises(ValueError, match='labelled_fraction'):
        parse_fraction(value)


def test_split_sizes_and_partition():
    labelled, unlabelled = split_by_fraction(IDS, 0.25, seed=0)
    assert len(labelled) == 10 and len(unlabelled) == 30
    assert sorted(labelled + unlabelled) == IDS


def test_split_is_deterministic_and_seed_dependent():
    assert split_by_fraction(IDS, '1/8', 3) == split_by_fraction(list(reversed(IDS)), '1/8', 3)
    assert split_by_fraction(IDS, '1/8', 3) != split_by_fraction(IDS, '1/8', 4)


def test_smaller_fractions_are_nested_in_larger_ones():
    small, _ = split_by_fraction(IDS, '1/8', 0)
    large, _ = split_by_fraction(IDS, '1/2', 0)
    assert set(small) <= set(large)


def test_full_fraction_labels_everything_and_tiny_fraction_at_least_one():
    assert split_by_fraction(IDS, 1, 0) == (IDS, [])
    assert len(split_by_fraction(IDS, 0.001, 0)[0]) == 1


def test_fraction_zero_labels_nothing_as_wsss_does():
    assert split_by_fraction(IDS, 0, 3) == ([], IDS)


def test_split_file_round_trip_and_semi_supervised_format(tmp_path):
    path = tmp_path / 'splits/pascal/1_8/labeled.txt'
    write_ids(path, ['img_003', 'img_001'])
    assert read_ids(path) == ['img_003', 'img_001']
    assert split_from_file(IDS, path)[0] == ['img_001', 'img_003']
    other = tmp_path / 'pairs.txt'
    other.write_text('JPEGImages/img_002.jpg SegmentationClass/img_002.png\n\n')
    assert read_ids(other) == ['img_002']


def test_split_file_with_unknown_ids_is_an_error(tmp_path):
    path = write_ids(tmp_path / 'labeled.txt', ['img_001', 'nope_1'])
    with pytest.raises(ValueError, match=r"1 ids that are not in the training set, e.g. \['nope_1'\]"):
        split_from_file(IDS, path)


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.txt'):
        read_ids(tmp_path / 'absent.txt')
