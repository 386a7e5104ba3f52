import builtins
import errno
import os

import pytest
import torch
from mmengine.logging import HistoryBuffer

from harness.eps.checkpoints import (DamagedCheckpointError, DiskFullError, replaced_whole,
                                     resumable_checkpoint, trusted_checkpoint_loading,
                                     write_whole)


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


class _SaveFails(Exception):
    """Stands for the process being killed while it writes a checkpoint."""


def _train_toy_model(work_dir, hook_type: str, fail_at_iter: int = 0, max_iters: int = 3,
                     max_keep_ckpts: int = 1):
    """Trains a linear model for ``max_iters`` iterations with a checkpoint every iteration
    (keeping ``max_keep_ckpts``); the save of iteration ``fail_at_iter`` raises halfway, as a
    killed process stops."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    import harness.eps  # noqa: F401  (registers CrashSafeCheckpointHook)

    class ToyModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, mode='tensor'):
            return {'loss': self.linear(inputs).square().mean()}

    runner = Runner(
        model=ToyModel(), work_dir=str(work_dir), default_scope='mmseg',
        experiment_name=str(work_dir),  # not the second it starts in: a logger of its own
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 8, batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type=hook_type, by_epoch=False, interval=1,
                                           max_keep_ckpts=max_keep_ckpts)))
    save = runner.save_checkpoint

    def save_or_fail(out_dir, filename, *args, **kwargs):
        if filename == f'iter_{fail_at_iter}.pth':
            raise _SaveFails(filename)
        save(out_dir, filename, *args, **kwargs)

    runner.save_checkpoint = save_or_fail
    runner.train()


@pytest.mark.parametrize('hook_type, resumable', [('CheckpointHook', False),
                                                  ('CrashSafeCheckpointHook', True)])
def test_a_checkpoint_save_cut_short_leaves_a_resumable_run(tmp_path, hook_type, resumable):
    with pytest.raises(_SaveFails):
        _train_toy_model(tmp_path, hook_type, fail_at_iter=3)
    named = (tmp_path / 'last_checkpoint').read_text()
    assert named.endswith('iter_2.pth')
    # MMEngine's hook deleted iteration 2 before writing iteration 3: nothing to resume from.
    assert os.path.isfile(named) is resumable


@pytest.mark.parametrize('max_iters, max_keep_ckpts, kept', [
    (5, 1, [5]), (5, 3, [3, 4, 5]), (3, 4, [1, 2, 3])])
def test_crash_safe_hook_keeps_max_keep_ckpts(tmp_path, max_iters, max_keep_ckpts, kept):
    _train_toy_model(tmp_path, 'CrashSafeCheckpointHook', max_iters=max_iters,
                     max_keep_ckpts=max_keep_ckpts)
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == [f'iter_{i}.pth' for i in kept]
    assert (tmp_path / 'last_checkpoint').read_text().endswith(f'iter_{max_iters}.pth')


class _FullDiskFile:
    """A file on a disk that fills up during the write: half the bytes land, then ENOSPC."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[:len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()


@pytest.fixture
def disk_full_for(monkeypatch):
    """``disk_full_for(name)``: from now on, every file opened for writing whose path contains
    ``name`` runs out of space halfway through its first write."""
    real_open = builtins.open

    def arm(name):
        def open_on_a_full_disk(file, mode='r', *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            return _FullDiskFile(handle) if 'w' in mode and name in str(file) else handle

        monkeypatch.setattr(builtins, 'open', open_on_a_full_disk)
    return arm


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_partial_one(tmp_path,
                                                                           disk_full_for):
    (tmp_path / '.iter_9.pth.partial-4242').write_bytes(b'left by a killed process')
    disk_full_for('iter_3.pth')
    with pytest.raises(DiskFullError) as raised:
        _train_toy_model(tmp_path, 'CrashSafeCheckpointHook', max_iters=3)
    message = str(raised.value)
    assert len(message.splitlines()) == 1 and str(tmp_path) in message
    assert 'iter_3.pth' in message and 'MiB' in message and 'needs' in message
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix == '.pth' or
                  path.name.startswith('.')) == ['iter_2.pth']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')
    assert torch.load(tmp_path / 'iter_2.pth', weights_only=False)['meta']['iter'] == 2


def test_a_result_file_on_a_full_disk_keeps_its_previous_version(tmp_path, disk_full_for):
    result = tmp_path / 'result.json'
    write_whole(result, b'{"val/mIoU": 40.0}')
    disk_full_for('result.json')
    with pytest.raises(DiskFullError, match=f'no space left in {tmp_path} for result.json: it '
                       r'needs 0\.0 MiB'):
        write_whole(result, b'{"val/mIoU": 41.0}')
    assert result.read_bytes() == b'{"val/mIoU": 40.0}'
    assert [path.name for path in tmp_path.iterdir()] == ['result.json']


def test_a_file_replaced_whole_is_the_old_one_until_the_block_ends_and_after_it_fails(tmp_path):
    target = tmp_path / 'mask.png'
    target.write_bytes(b'old')
    with replaced_whole(target) as partial:
        partial.write_bytes(b'new')
        assert target.read_bytes() == b'old' and partial.parent == tmp_path
    assert target.read_bytes() == b'new'
    with pytest.raises(OSError, match='cut short'):
        with replaced_whole(target) as partial:
            partial.write_bytes(b'par')
            raise OSError('cut short')
    assert target.read_bytes() == b'new'
    assert [path.name for path in tmp_path.iterdir()] == ['mask.png']


def test_resume_passes_over_a_damaged_checkpoint_to_the_previous_good_one(tmp_path,
                                                                          request):
    _train_toy_model(tmp_path, 'CrashSafeCheckpointHook', max_iters=3, max_keep_ckpts=3)
    assert resumable_checkpoint(tmp_path) == str(tmp_path / 'iter_3.pth')
    damaged = tmp_path / 'iter_3.pth'
    damaged.write_bytes(damaged.read_bytes()[:1000])  # cut short, as a full disk once did
    messages = request.getfixturevalue('mmengine_messages')  # the runner's logger
    assert resumable_checkpoint(tmp_path) == str(tmp_path / 'iter_2.pth')
    assert any(message.startswith(f'damaged checkpoint(s) {damaged} (') and
               message.endswith(f'resuming from {tmp_path / "iter_2.pth"}')
               for message in messages), messages
    for path in tmp_path.glob('iter_*.pth'):
        path.write_bytes(b'')
    with pytest.raises(DamagedCheckpointError, match=f'no checkpoint in {tmp_path} can be '
                       f'loaded: {damaged} .*iter_2.pth .*iter_1.pth'):
        resumable_checkpoint(tmp_path)


def test_no_checkpoint_is_no_resume(tmp_path):
    assert resumable_checkpoint(tmp_path) is None
    (tmp_path / 'last_checkpoint').write_text('')  # cut short before its text
    assert resumable_checkpoint(tmp_path) is None


class _Stop(Exception):
    """Stands for the process being killed after a checkpoint."""


def _train_dropout_model(work_dir, random_state: bool, stop_after: int = 0) -> torch.Tensor:
    """Trains a linear model behind a dropout layer (seed 0, 6 iterations, a checkpoint every
    2), resuming from ``work_dir`` when it holds one; with ``stop_after`` the run stops right
    after that iteration's checkpoint. Returns the trained weight."""
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from harness.eps.checkpoints import RandomStateHook

    class DropoutModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.dropout = torch.nn.Dropout(0.5)
            self.linear = torch.nn.Linear(8, 1)

        def forward(self, inputs, mode='tensor'):
            return {'loss': self.linear(self.dropout(inputs)).square().mean()}

    class StopAfter(Hook):
        priority = 'LOWEST'  # after the checkpoint of the iteration

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == stop_after:
                raise _Stop()

    torch.manual_seed(0)  # the same initial weights in every run
    runner = Runner(
        model=DropoutModel(), work_dir=str(work_dir), default_scope='mmseg',
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(8))] * 8, batch_size=2,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=6), randomness=dict(seed=0),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2)),
        custom_hooks=[StopAfter()] if stop_after else [], resume=True)
    if random_state:
        runner.register_hook(RandomStateHook())
    with trusted_checkpoint_loading():
        runner.train()
    return runner.model.linear.weight.detach().clone()


@pytest.mark.parametrize('random_state', [True, False])
def test_a_resumed_run_ends_as_an_uninterrupted_one_with_the_random_state(tmp_path,
                                                                          random_state):
    uninterrupted = _train_dropout_model(tmp_path / 'whole', random_state)
    with pytest.raises(_Stop):
        _train_dropout_model(tmp_path / 'resumed', random_state, stop_after=4)
    resumed = _train_dropout_model(tmp_path / 'resumed', random_state)
    # Without the saved state the resumed run draws other dropout masks from iteration 5 on.
    assert torch.equal(resumed, uninterrupted) is random_state
