"""Loading MMEngine checkpoints under torch >= 2.6."""
import os
from contextlib import contextmanager
from typing import Iterator


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
