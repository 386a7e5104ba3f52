"""Faults that tests inject into a trial at a chosen training iteration, as MMEngine hooks.

A test gives its trials a stage config written by :func:`write_stage_config`: the real config
plus one of these hooks, and this module in ``custom_imports``. Ray workers import it from
``tests/``, which the test puts on the ``PYTHONPATH`` of the Ray cluster it starts (raylets and
their workers inherit the environment of the process that started them). A hook acts in
``after_train_iter`` of its iteration, after MMEngine's ``CheckpointHook`` has written that
iteration's checkpoint, and leaves a record (JSON: rank, pid, iteration) where the test waits
for it, so that a test waits for an event, never for a time:

- :class:`KillAfterCheckpoint`: rank 0 SIGKILLs its own process, on the first attempt only;
- :class:`RaiseAtIteration`: every rank raises :class:`InjectedFault`, on every attempt;
- :class:`WaitForFile`: every rank waits until a file appears (rank 0 records that it waits).
"""
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict

from mmengine.hooks import Hook

from mmseg.registry import HOOKS

MODULE = 'fault_injection'
WAIT_TIMEOUT_S = 1200.0


class InjectedFault(RuntimeError):
    """The error :class:`RaiseAtIteration` raises."""


class _AtIteration(Hook):
    """Calls :meth:`act` in ``after_train_iter`` of training iteration ``iteration`` (1-based, as
    MMEngine names checkpoints: ``iter_10.pth`` is saved after the 10th iteration)."""

    # After CheckpointHook (VERY_LOW): the iteration's checkpoint is on disk when act() runs.
    priority = 'LOWEST'

    def __init__(self, iteration: int, record: str) -> None:
        self.iteration = iteration
        self.record = Path(record)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if runner.iter + 1 == self.iteration:  # runner.iter counts the iterations done before
            self.act(runner)

    def act(self, runner: Any) -> None:
        """The fault; each hook below defines its own."""
        raise NotImplementedError

    def write_record(self, runner: Any) -> None:
        """Writes rank, pid and iteration to :attr:`record` (whole, or not at all)."""
        self.record.parent.mkdir(parents=True, exist_ok=True)
        partial = self.record.with_name(f'.{self.record.name}.{os.getpid()}')
        partial.write_text(json.dumps({'rank': runner.rank, 'pid': os.getpid(),
                                       'iteration': self.iteration}))
        os.replace(partial, self.record)


@HOOKS.register_module()
class KillAfterCheckpoint(_AtIteration):
    """Rank 0 SIGKILLs its own process after the checkpoint of ``iteration``, unless ``record``
    exists (a restarted attempt): a worker lost mid-training, once."""

    def act(self, runner: Any) -> None:
        if runner.rank == 0 and not self.record.exists():
            self.write_record(runner)
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class RaiseAtIteration(_AtIteration):
    """Every rank raises :class:`InjectedFault` at ``iteration``, on every attempt: a trial that
    fails for good. ``record`` is written first (rank 0)."""

    def act(self, runner: Any) -> None:
        if runner.rank == 0:
            self.write_record(runner)
        raise InjectedFault(f'injected at training iteration {self.iteration}')


@HOOKS.register_module()
class WaitForFile(_AtIteration):
    """At ``iteration``, rank 0 writes ``record`` and every rank waits until ``release`` exists
    (at most :data:`WAIT_TIMEOUT_S`, then ``TimeoutError``): a trial held in mid-training."""

    def __init__(self, iteration: int, record: str, release: str) -> None:
        super().__init__(iteration, record)
        self.release = Path(release)

    def act(self, runner: Any) -> None:
        if runner.rank == 0:
            self.write_record(runner)
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while not self.release.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f'{self.release} did not appear within {WAIT_TIMEOUT_S:g} s: '
                                   'the test holding this trial at iteration '
                                   f'{self.iteration} never released it')
            time.sleep(0.2)


def python_path() -> str:
    """``PYTHONPATH`` with ``tests/`` (this module's folder) first: for the processes (a trial's
    command line, a Ray cluster) that must import this module."""
    return os.pathsep.join([str(Path(__file__).resolve().parent),
                            *filter(None, [os.environ.get('PYTHONPATH')])])


def write_stage_config(path: Path, base: Path, hook: Dict[str, Any]) -> Path:
    """Writes a stage config that inherits ``base`` (an absolute path), imports this module and
    adds ``hook`` (a hook config: ``type`` and arguments) to ``base``'s custom hooks."""
    path.write_text(
        f'_base_ = [{str(base)!r}]\n'
        f'custom_imports = dict(imports=_base_.custom_imports.imports + [{MODULE!r}],\n'
        '                      allow_failed_imports=False)\n'
        f"custom_hooks = _base_.get('custom_hooks', []) + [{hook!r}]\n")
    return path
