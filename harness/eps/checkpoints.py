"""MMEngine checkpoints that survive a killed process, resume a run exactly and load under
torch >= 2.6."""
import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook

from mmseg.registry import HOOKS


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` that deletes old checkpoints only after the new one is saved.

    With ``max_keep_ckpts`` set, MMEngine 0.10 deletes the oldest kept checkpoint *before* it
    writes the new one and ``last_checkpoint``: a worker killed in between (a preempted node, a
    Ray Train restart) leaves ``last_checkpoint`` naming a deleted file, and the run can no longer
    resume. Here the new checkpoint and ``last_checkpoint`` are written first; the checkpoints
    beyond ``max_keep_ckpts`` are deleted afterwards. Arguments are those of ``CheckpointHook``.
    """

    def _save_checkpoint_with_step(self, runner, step: int, meta: Optional[dict]) -> None:
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        excess = len(self.keep_ckpt_ids) + 1 - self.max_keep_ckpts
        stale: List[int] = list(self.keep_ckpt_ids)[:max(excess, 0)]
        self.keep_ckpt_ids.append(step)  # a deque of maxlen max_keep_ckpts drops the stale ids
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        keep, self.max_keep_ckpts = self.max_keep_ckpts, -1  # the parent saves, deletes nothing
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            self.max_keep_ckpts = keep
        if is_main_process():
            for old_step in stale:
                path = self.file_backend.join_path(self.out_dir,
                                                   self.filename_tmpl.format(old_step))
                if self.file_backend.isfile(path):
                    self.file_backend.remove(path)


class RandomStateHook(Hook):
    """Saves torch's random generator states with every checkpoint and restores them when a run
    resumes from it: a resumed run then draws the random numbers (dropout masks) that the run
    would have drawn had it never stopped, and ends with the same weights and metrics.

    MMEngine re-seeds a resumed run from its seed and replays the training data loader up to the
    checkpoint's iteration, which replays the data pipeline's numpy draws; torch's generators,
    though, start again from the seed. Saved in ``checkpoint['random_state']``: the CPU generator
    and, with CUDA, every device's generator (rank 0's, which saves the checkpoints). Restored
    before the first training iteration of a run resumed at the checkpoint's iteration (after
    the replay); a checkpoint loaded to start a new run (``load_from``) is left alone.
    """

    def __init__(self) -> None:
        self._resumed: Optional[Dict[str, Any]] = None

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        checkpoint['random_state'] = {
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        state = checkpoint.get('random_state')
        self._resumed = None if state is None else {**state, 'iter': checkpoint['meta']['iter']}

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        state, self._resumed = self._resumed, None
        if state is None or state['iter'] != runner.iter:
            return
        torch.set_rng_state(state['torch'])
        if state['cuda'] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


@contextmanager
def trusted_checkpoint_loading() -> Iterator[None]:
    """Lets MMEngine resume from / load checkpoints that this project's own runs wrote.

    torch 2.6 made ``torch.load`` default to ``weights_only=True``; MMEngine 0.10 calls it without
    the argument, and its checkpoints hold the message hub (``HistoryBuffer``, numpy arrays), so
    every resume fails with "Weights only load failed". Within this context torch falls back to
    full unpickling (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``): use it only around loads of
    checkpoints you trust, such as those of a trial's own work dir.
    """
    previous = os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    try:
        yield
    finally:
        if previous is None:
            del os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD']
        else:
            os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = previous
