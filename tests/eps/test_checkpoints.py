import os

import pytest
import torch
from mmengine.logging import HistoryBuffer

from harness.eps.checkpoints import trusted_checkpoint_loading


def test_mmengine_checkpoint_contents_load_inside_the_context_only(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save({'message_hub': HistoryBuffer([1.0, 2.0], [1, 1])}, path)
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path)
    with trusted_checkpoint_loading():
        assert torch.load(path)['message_hub'].mean() == 1.5
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ


def test_an_earlier_setting_is_restored(monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '0')
    with trusted_checkpoint_loading():
        assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'
    assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '0'
