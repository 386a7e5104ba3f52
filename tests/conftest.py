"""Shared fixtures: a tiny copy of the bundled dataset, generated once per test session."""
from pathlib import Path

import pytest

from harness.data.synthetic import SyntheticConfig, generate_dataset


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory) -> Path:
    """A bundled-format dataset with 12 train and 6 val images of 64x64 (read-only for tests)."""
    root = tmp_path_factory.mktemp('data') / 'shapes_voc'
    return generate_dataset(root, SyntheticConfig(num_train=12, num_val=6, image_size=64))


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    import shutil
    copy = tmp_path / 'shapes_voc'
    shutil.copytree(tiny_dataset, copy)
    return copy


@pytest.fixture
def mmengine_messages():
    """The messages logged from now on through MMEngine's current logger (``print_log(...,
    logger='current')``), whichever stream that logger writes to."""
    import logging

    from mmengine.logging import MMLogger

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)
