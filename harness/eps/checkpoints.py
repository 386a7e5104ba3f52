"""MMEngine checkpoints that survive a killed process and load under torch >= 2.6."""
import os
from contextlib import contextmanager
from typing import Iterator, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

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
