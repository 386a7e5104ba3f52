"""Crash-safe MMEngine checkpoints: written whole, resumed past a damaged file and with the
random state, loadable under torch >= 2.6."""
import errno
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from mmseg.registry import HOOKS

WHOLE_FILE_BACKEND = 'local_whole_files'
PARTIAL_MARK = '.partial-'
CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


class DiskFullError(OSError):
    """No room for a file on its disk; the one-line message names the folder, the space needed
    and the space free. The file's previous version, if any, is kept."""


class DamagedCheckpointError(RuntimeError):
    """A stage's checkpoints are all damaged; the message (one line) names them."""


@contextmanager
def replaced_whole(path: Union[str, Path]) -> Iterator[Path]:
    """Yields a partial file next to ``path`` (``.<name>.partial-<pid>``) for the block to
    write; when the block ends, renames it over ``path``. Readers see the previous ``path`` (or
    none), then the new one whole, never part of it; an error or a killed process leaves the
    previous one. On an error the partial file is removed and the error raised.
    """
    path = Path(path)
    partial = path.with_name(f'.{path.name}{PARTIAL_MARK}{os.getpid()}')
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_whole(path: Union[str, Path], data: bytes) -> None:
    """Writes ``data`` to ``path`` whole or not at all (:func:`replaced_whole`), flushed to disk
    before the rename, so that a power loss too leaves the previous ``path`` or the new one.

    Args:
        path (str | Path): Destination file.
        data (bytes): Content.

    Raises:
        DiskFullError: If the disk (or the user's quota) is full.
    """
    path = Path(path)
    try:
        with replaced_whole(path) as partial, open(partial, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            full = DiskFullError(
                f'no space left in {path.parent} for {path.name}: it needs {_mib(len(data))}, '
                f'{_mib(shutil.disk_usage(path.parent).free)} free; make room there or choose '
                'another folder (the files already there are kept)')
            full.errno = error.errno
            raise full from error
        raise


def _mib(size: int) -> str:
    return f'{size / 2**20:.1f} MiB'


@register_backend(WHOLE_FILE_BACKEND)
class WholeFileBackend(LocalBackend):
    """MMEngine's local file backend whose writes are :func:`write_whole`."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        Path(filepath).parent.mkdir(parents=True, exist_ok=True)
        write_whole(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose checkpoints are written whole and whose old checkpoints are
    deleted only after the new one is saved.

    - Local checkpoints and ``last_checkpoint`` are written by :func:`write_whole`: a full disk
      (:class:`DiskFullError`) or a killed process leaves the previous checkpoints and no
      partial file under a checkpoint's name. Partial files left by a killed process are
      removed in ``before_train``.
    - With ``max_keep_ckpts``, the checkpoints beyond it are deleted after the new checkpoint
      and ``last_checkpoint`` are written (MMEngine 0.10 deletes first, so a worker killed in
      between leaves ``last_checkpoint`` naming a deleted file).

    Args:
        *args, **kwargs: As ``CheckpointHook``. Without ``backend_args`` (and with a local
            ``out_dir``) the checkpoints go through :class:`WholeFileBackend`.
    """

    def __init__(self, *args, **kwargs) -> None:
        out_dir = kwargs.get('out_dir')
        if (kwargs.get('backend_args') is None and kwargs.get('file_client_args') is None
                and (out_dir is None or '://' not in str(out_dir))):
            kwargs['backend_args'] = dict(backend=WHOLE_FILE_BACKEND)
        super().__init__(*args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, WholeFileBackend):
            for folder in {Path(self.out_dir), Path(runner.work_dir)}:
                for partial in folder.glob(f'.*{PARTIAL_MARK}*'):
                    partial.unlink(missing_ok=True)

    def _save_checkpoint_with_step(self, runner, step: int, meta: Optional[dict]) -> None:
        stale: List[int] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            excess = len(self.keep_ckpt_ids) + 1 - self.max_keep_ckpts
            stale = list(self.keep_ckpt_ids)[:max(excess, 0)]
            self.keep_ckpt_ids.append(step)  # a deque of maxlen max_keep_ckpts drops stale ids
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        write_whole(Path(runner.work_dir) / 'last_checkpoint', str(self.last_ckpt).encode())
        for old_step in stale:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)


def resumable_checkpoint(work_dir: Union[str, Path]) -> Optional[str]:
    """The checkpoint a run in ``work_dir`` resumes from.

    That is the one ``last_checkpoint`` names if it loads, else the newest ``iter_*.pth`` /
    ``epoch_*.pth`` that loads; each damaged one is named in a warning. Candidates are loaded on
    the CPU with full unpickling: use only on trusted checkpoints, such as a trial's own.

    Args:
        work_dir (str | Path): The run's work dir.

    Returns:
        str | None: Path of the checkpoint, or None when there is none.

    Raises:
        DamagedCheckpointError: If there are checkpoints and none loads.
    """
    work_dir = Path(work_dir)
    candidates: List[Path] = []
    record = work_dir / 'last_checkpoint'
    if record.is_file() and record.read_text().strip():
        candidates.append(Path(record.read_text().strip()))
    steps = {path: int(CHECKPOINT_NAME.match(path.name).group(1))
             for path in work_dir.glob('*.pth') if CHECKPOINT_NAME.match(path.name)}
    candidates += [path for path in sorted(steps, key=steps.get, reverse=True)
                   if path not in candidates]
    damaged: List[str] = []
    for path in candidates:
        reason = _load_failure(path)
        if reason is None:
            if damaged:
                print_log(f'damaged checkpoint(s) {"; ".join(damaged)}: resuming from {path}',
                          logger='current', level=logging.WARNING)
            return str(path)
        damaged.append(f'{path} ({reason})')
    if damaged:
        raise DamagedCheckpointError(
            f'no checkpoint in {work_dir} can be loaded: {"; ".join(damaged)}; remove them '
            f'and {record.name} to train this stage from its start')
    return None


def _load_failure(path: Path) -> Optional[str]:
    """None if the checkpoint at ``path`` loads, else why not (one line)."""
    if not path.is_file():
        return 'missing'
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        return f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        return 'not an MMEngine checkpoint (no state_dict)'
    return None


class RandomStateHook(Hook):
    """Saves torch's random generator states with every checkpoint and restores them on resume,
    so that a resumed run draws the random numbers (e.g. dropout masks) of an uninterrupted one.

    MMEngine replays the data pipeline's draws on resume, but not torch's generators. Saved in
    ``checkpoint['random_state']``: the CPU generator and, with CUDA, every device's generator
    (rank 0's). Restored before the first training iteration of a run resumed at the
    checkpoint's iteration; a checkpoint loaded by ``load_from`` is left alone.
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
    """Context in which MMEngine can load checkpoints that this project's runs wrote.

    torch >= 2.6 loads with ``weights_only=True`` by default, which MMEngine 0.10 checkpoints
    (holding the message hub) fail. Within this context ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
    makes torch unpickle in full: use it only around loads of trusted checkpoints.
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
