"""Mixed-precision training (the trial's ``amp`` setting) with MMEngine's ``AmpOptimWrapper``.

bfloat16 needs no loss scaling; float16 (GPUs before Ampere) gets dynamic loss scaling.
"""
import copy
from typing import Any, Mapping, Optional

import torch

AMP_WRAPPER = 'AmpOptimWrapper'
# Wrapper types whose arguments AmpOptimWrapper accepts (it subclasses OptimWrapper).
CONVERTIBLE_WRAPPERS = ('OptimWrapper', AMP_WRAPPER)


class AmpUnavailableError(ValueError):
    """``amp`` was asked for where mixed-precision training cannot run."""


def check_amp_available(cuda_available: Optional[bool] = None) -> None:
    """Checks that mixed precision can train here (MMEngine would fail only in the runner).

    Args:
        cuda_available: Whether a CUDA GPU is usable (default: ``torch.cuda.is_available()``).

    Raises:
        AmpUnavailableError: no CUDA GPU.
    """
    if not (torch.cuda.is_available() if cuda_available is None else cuda_available):
        raise AmpUnavailableError(
            'amp is true, but this machine has no CUDA GPU (torch.cuda.is_available() is False): '
            "mixed precision uses MMEngine's AmpOptimWrapper, which autocasts to bfloat16 / "
            'float16 on CUDA only; set amp to false to train in float32')


def amp_dtype(bf16_supported: Optional[bool] = None) -> str:
    """``'bfloat16'`` where the GPU supports it, else ``'float16'``.

    Args:
        bf16_supported: Whether the GPU computes in bfloat16 (default:
            ``torch.cuda.is_bf16_supported()``, False without CUDA).
    """
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return 'bfloat16' if bf16_supported else 'float16'


def amp_optim_wrapper(optim_wrapper: Mapping[str, Any],
                      bf16_supported: Optional[bool] = None) -> dict:
    """The ``AmpOptimWrapper`` config equivalent to an ``OptimWrapper`` config.

    Every other key is kept; bfloat16 gets ``loss_scale=1.0``, float16 ``'dynamic'``.

    Args:
        optim_wrapper: The config's ``optim_wrapper`` dict (not modified).
        bf16_supported: Whether the GPU computes in bfloat16 (default: ask torch).

    Returns:
        A new dict with ``type='AmpOptimWrapper'``, ``dtype`` and ``loss_scale``.

    Raises:
        ValueError: ``optim_wrapper``'s type is not ``OptimWrapper`` / ``AmpOptimWrapper``.
    """
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type not in CONVERTIBLE_WRAPPERS:
        raise ValueError(f'amp: cannot turn optim_wrapper type {wrapper_type!r} into '
                         f'{AMP_WRAPPER}; supported types: {CONVERTIBLE_WRAPPERS}')
    dtype = amp_dtype(bf16_supported)
    converted = copy.deepcopy(dict(optim_wrapper))
    converted.update(type=AMP_WRAPPER, dtype=dtype,
                     loss_scale=1.0 if dtype == 'bfloat16' else 'dynamic')
    return converted
