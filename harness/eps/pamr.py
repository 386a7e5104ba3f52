"""Pixel-adaptive mask refinement (PAMR).

Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020, with the
semantics of ``PAMR`` in github.com/visinf/1-stage-wseg (``models/mods/pamr.py``). Three paths,
equal to it up to float rounding: ``'embedding_bag'`` (one ``F.embedding_bag`` per iteration),
``'shifted'`` (sums of shifted views, with autograd) and ``'triton'``
(:mod:`harness.eps.pamr_triton`: CUDA, float32, no autograd).
"""
import functools
import warnings
from types import ModuleType
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS
from .arguments import is_integer

PATHS = ('auto', 'embedding_bag', 'shifted', 'triton')
# On CPU, 'auto' takes 'shifted' up to this many classes and 'embedding_bag' above
# (benchmarks/bench_pamr.py).
CPU_SHIFTED_MAX_CLASSES = 2
# Largest difference from 'shifted' on the probe for which 'auto' trusts the Triton kernels.
TRITON_PROBE_TOLERANCE = 1e-5
TRITON_PROBE_ITERATIONS = 2


@functools.lru_cache(maxsize=None)
def triton_kernels() -> Optional[ModuleType]:
    """:mod:`harness.eps.pamr_triton`, or ``None`` where ``triton`` cannot be imported."""
    try:
        from . import pamr_triton
    except ImportError:
        return None
    return pamr_triton


@functools.lru_cache(maxsize=None)
def triton_probe_failure(device: torch.device, channels: int, num_classes: int,
                         dilations: Tuple[int, ...]) -> Optional[str]:
    """Why the Triton kernels must not be used for such inputs, or None if they pass the probe.

    The probe refines a random input (2 images of 16x12 pixels, ``TRITON_PROBE_ITERATIONS``
    iterations) with the Triton kernels and with ``'shifted'``; it fails where the kernels cannot
    compile or launch or differ by more than ``TRITON_PROBE_TOLERANCE``. Cached per process and
    arguments; warns (``RuntimeWarning``) once on failure.

    Args:
        device (torch.device): Device of the inputs.
        channels (int): Number of image channels.
        num_classes (int): Number of mask channels ``K``.
        dilations (tuple[int]): Neighbour distances in pixels.

    Returns:
        str | None: The reason of the failure, or None.
    """
    kernels = triton_kernels()
    if kernels is None:
        failure = 'triton cannot be imported'
    else:
        reference = PAMR(TRITON_PROBE_ITERATIONS, dilations, path='shifted').to(device)
        generator = torch.Generator().manual_seed(0)
        image = torch.rand(2, channels, 16, 12, generator=generator).to(device)
        masks = torch.rand(2, num_classes, 16, 12, generator=generator).to(device)
        try:
            with torch.no_grad():
                expected = reference._refine_shifted(image, masks)
                refined = kernels.refine(image, masks, reference.offset_table, len(dilations),
                                         TRITON_PROBE_ITERATIONS)
            difference = (refined - expected).abs().max().item()
            failure = (None if difference <= TRITON_PROBE_TOLERANCE else
                       f'they differ from the torch path by up to {difference:.3g} (more than '
                       f'{TRITON_PROBE_TOLERANCE:g}) on a probe')
        # Triton raises several exception types for a kernel that cannot compile or launch.
        except Exception as error:
            failure = f'{type(error).__name__}: {error}'
    if failure is not None:
        warnings.warn(f'PAMR: the Triton kernels failed their check on {device} for '
                      f'{channels}-channel images, {num_classes} classes and dilations '
                      f"{dilations} ({failure}); falling back to the 'shifted' path",
                      RuntimeWarning)
    return failure


def choose_path(device_type: str, dtype: torch.dtype, needs_grad: bool, num_classes: int,
                triton_usable: bool) -> str:
    """The path ``'auto'`` takes for inputs of this kind.

    ``'triton'`` on CUDA for float32 without gradient where ``triton_usable``;
    ``'embedding_bag'`` on CPU for ``num_classes > CPU_SHIFTED_MAX_CLASSES``; else ``'shifted'``.
    """
    if device_type == 'cuda':
        if dtype == torch.float32 and not needs_grad and triton_usable:
            return 'triton'
        return 'shifted'
    if device_type == 'cpu' and num_classes > CPU_SHIFTED_MAX_CLASSES:
        return 'embedding_bag'
    return 'shifted'


@MODELS.register_module()
class PAMR(nn.Module):
    """Refines class masks by propagating them between pixels of similar colour.

    Every pixel ``p`` has ``N = 8 * len(dilations)`` neighbours ``q``: the 8 pixels at distance
    ``d`` (rows, columns, diagonals) for each dilation ``d``, image borders replicated. Affinity
    ``a(p, q) = softmax_q(-mean_c |I_c(p) - I_c(q)| / (1e-8 + 0.1 * sigma_c(p)))``, with
    ``sigma_c(p)`` the unbiased standard deviation of channel ``c`` over the ``9 * len(dilations)``
    taps of the dilated 3x3 windows around ``p`` (centre counted once per dilation). Each of the
    ``num_iter`` iterations sets ``m(p) = sum_q a(p, q) m(q)``, so a pixel's sum over classes is
    preserved. Computes in float32 (float64 if an input is float64) with autocast off.
    Gradients flow to ``image`` and ``masks`` on the ``'embedding_bag'`` and ``'shifted'`` paths.

    Args:
        num_iter (int): Number of propagation steps, >= 0 (0 returns the upsampled masks).
            Default: 10.
        dilations (Sequence[int]): Neighbour distances in pixels, each >= 1.
            Default: (1, 2, 4, 8, 12, 24).
        path (str): ``'auto'`` (per call: see :func:`choose_path`; a Triton path that fails
            :func:`triton_probe_failure` falls back to ``'shifted'``), or ``'embedding_bag'``,
            ``'shifted'``, ``'triton'`` to force one (not probed). Default: 'auto'.

    Raises:
        ValueError: If ``num_iter``, ``dilations`` or ``path`` is invalid.
    """

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
                 path: str = 'auto') -> None:
        super().__init__()
        if not is_integer(num_iter) or num_iter < 0:
            raise ValueError(f'PAMR: num_iter must be an int >= 0, got {num_iter!r}')
        dilations = tuple(dilations)
        if not dilations or any(not is_integer(d) or d < 1 for d in dilations):
            raise ValueError(f'PAMR: dilations must be a non-empty sequence of positive ints, '
                             f'got {dilations!r}')
        if path not in PATHS:
            raise ValueError(f'PAMR: path must be one of {PATHS}, got {path!r}')
        self.num_iter = int(num_iter)
        self.dilations = tuple(int(d) for d in dilations)
        self.path = path
        # (dy, dx) of the neighbours in the reference's order: per dilation, the 3x3 window in
        # raster order without its centre.
        self.offsets: Tuple[Tuple[int, int], ...] = tuple(
            (dy * d, dx * d) for d in self.dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0))
        # A buffer, so it lives on the module's device: no host-to-device copy (a sync) per call.
        self.register_buffer('offset_table', torch.tensor(self.offsets, dtype=torch.int32),
                             persistent=False)
        # Why the Triton kernels failed here, if they did; 'auto' then stops trying them.
        self.triton_failure: Optional[str] = None

    def extra_repr(self) -> str:
        return f'num_iter={self.num_iter}, dilations={self.dilations}, path={self.path!r}'

    def select_path(self, image: Tensor, masks: Tensor) -> str:
        """The path that :meth:`forward` takes for these inputs (``self.path`` unless 'auto')."""
        if self.path != 'auto':
            return self.path
        path = choose_path(image.device.type, _computation_dtype(image, masks),
                           _needs_grad(image, masks), masks.shape[1],
                           triton_usable=self.triton_failure is None)
        # Only inputs that would take the Triton path pay for importing triton and its probe.
        if path == 'triton' and triton_probe_failure(image.device, image.shape[1],
                                                     masks.shape[1], self.dilations):
            return 'shifted'
        return path

    def forward(self, image: Tensor, masks: Tensor) -> Tensor:
        """Refines ``masks`` along the edges of ``image``.

        Args:
            image (Tensor): Image ``[B, C, H, W]``, any channels and value range (the
                affinities are normalized by the local standard deviation).
            masks (Tensor): Class scores or probabilities ``[B, K, h, w]``, upsampled to
                ``H x W`` bilinearly (``align_corners=True``) before the refinement.

        Returns:
            Tensor: Refined masks ``[B, K, H, W]``, float32 (float64 if an input is float64).

        Raises:
            ValueError: If the inputs are not 4-D or their batch sizes differ, or if a forced
                ``'triton'`` path gets float64 inputs or needs a gradient.
        """
        if image.dim() != 4:
            raise ValueError(f'PAMR: image must be 4-D [B, C, H, W], got shape '
                             f'{tuple(image.shape)}')
        if masks.dim() != 4:
            raise ValueError(f'PAMR: masks must be 4-D [B, K, h, w], got shape '
                             f'{tuple(masks.shape)}')
        if image.shape[0] != masks.shape[0]:
            raise ValueError(f'PAMR: image and masks must have the same batch size, got image '
                             f'{tuple(image.shape)} and masks {tuple(masks.shape)}')
        with torch.autocast(image.device.type, enabled=False):
            return self._refine(image, masks, self.select_path(image, masks))

    def _refine(self, image: Tensor, masks: Tensor, path: str) -> Tensor:
        """:meth:`forward` along ``path``, with autocast off."""
        dtype = _computation_dtype(image, masks)
        if path == 'triton' and dtype != torch.float32:
            raise ValueError(f"PAMR: path 'triton' computes in float32, got {dtype} inputs")
        image = image.to(dtype)
        # Channels-last makes embedding_bag's [B * H * W, K] table a view of the masks.
        layout = torch.channels_last if path == 'embedding_bag' else torch.contiguous_format
        masks = F.interpolate(masks.to(dtype).contiguous(memory_format=layout),
                              size=image.shape[-2:], mode='bilinear', align_corners=True)
        if self.num_iter == 0:
            return masks.contiguous()
        if path == 'triton':
            refined = self._refine_triton(image, masks)
            if refined is not None:
                return refined
            path = 'shifted'
        if path == 'shifted':
            return self._refine_shifted(image, masks)
        return self._refine_embedding_bag(image, masks)

    def _refine_triton(self, image: Tensor, masks: Tensor) -> Optional[Tensor]:
        """The Triton path; ``None`` (after one warning) where it cannot run and the path is
        'auto'."""
        kernels = triton_kernels()
        if _needs_grad(image, masks):
            raise ValueError("PAMR: path 'triton' has no backward; use 'shifted' or "
                             "'embedding_bag' where a gradient is needed")
        try:
            if kernels is None:
                raise ImportError('triton cannot be imported')
            return kernels.refine(image, masks, self.offset_table.to(image.device),
                                  len(self.dilations), self.num_iter)
        # Triton raises several exception types for a kernel that cannot compile or launch.
        except Exception as error:
            if self.path == 'triton':
                raise
            self.triton_failure = f'{type(error).__name__}: {error}'
            warnings.warn(f'PAMR: the Triton kernels cannot run ({self.triton_failure}); '
                          "falling back to the 'shifted' path", RuntimeWarning)
            return None

    def _refine_shifted(self, image: Tensor, masks: Tensor) -> Tensor:
        """``num_iter`` iterations as sums of shifted views of the replicate-padded masks."""
        affinity = torch.softmax(self._logits(image), 2)
        height, width = masks.shape[-2:]
        pad = max(self.dilations)
        for _ in range(self.num_iter):
            padded = F.pad(masks, [pad] * 4, mode='replicate')
            refined = None
            for n, (dy, dx) in enumerate(self.offsets):
                shifted = padded[:, :, pad + dy:pad + dy + height, pad + dx:pad + dx + width]
                weight = affinity[:, None, :, n]
                refined = (shifted * weight if refined is None
                           else refined.addcmul_(shifted, weight))
            masks = refined
        return masks

    def _refine_embedding_bag(self, image: Tensor, masks: Tensor) -> Tensor:
        """``num_iter`` ``F.embedding_bag`` calls over channels-last ``masks``."""
        batch, num_classes, height, width = masks.shape
        weights = torch.softmax(self._logits(image).transpose(2, 3), -1)
        weights = weights.reshape(-1, len(self.offsets))
        index = self._neighbour_index(batch, height, width, image.device)
        table = masks.permute(0, 2, 3, 1).reshape(-1, num_classes)
        for _ in range(self.num_iter):
            table = F.embedding_bag(index, table, per_sample_weights=weights, mode='sum')
        return table.view(batch, height, width, num_classes).permute(0, 3, 1, 2).contiguous()

    def _logits(self, image: Tensor) -> Tensor:
        """``[B, H, N, W]`` affinity logits of every pixel of a ``[B, C, H, W]`` image to its
        ``N`` neighbours (the affinities are their softmax over ``N``), from shifted views of one
        replicate-padded image."""
        channels, height, width = image.shape[1:]
        pad = max(self.dilations)
        padded = F.pad(image, [pad] * 4, mode='replicate')
        neighbours = [padded[:, :, pad + dy:pad + dy + height, pad + dx:pad + dx + width]
                      for dy, dx in self.offsets]
        num_dilations = len(self.dilations)
        num_taps = 9 * num_dilations
        mean = image * num_dilations
        for neighbour in neighbours:
            mean += neighbour
        mean /= num_taps
        var = (image - mean).square_().mul_(num_dilations)
        for neighbour in neighbours:
            var += (neighbour - mean).square_()
        denominator = 1e-8 + 0.1 * var.div_(num_taps - 1).sqrt_()
        # [B, H, N, W]: each neighbour writes whole rows; the transpose to [B, H, W, N] is cheap.
        logits = torch.stack([(image - neighbour).abs_().div_(denominator).sum(1)
                              for neighbour in neighbours], 2)
        return logits.div_(-channels)

    def _neighbour_index(self, batch: int, height: int, width: int, device: torch.device) -> Tensor:
        """``[B * H * W, N]`` rows of every pixel's neighbours in the ``[B * H * W, K]`` table;
        clamped coordinates replicate the border."""
        offsets = self.offset_table.to(device)
        rows = (torch.arange(height, device=device)[:, None] + offsets[:, 0]).clamp_(0, height - 1)
        cols = (torch.arange(width, device=device)[:, None] + offsets[:, 1]).clamp_(0, width - 1)
        index = rows[:, None, :] * width + cols[None, :, :]
        # int32 halves the index traffic of every iteration where it can address all entries.
        dtype = torch.int32 if batch * index.numel() < 2**31 else torch.int64
        first_rows = torch.arange(0, batch * height * width, height * width, device=device,
                                  dtype=dtype)
        return (first_rows[:, None, None, None] + index.to(dtype)).view(-1, len(self.offsets))


def _needs_grad(image: Tensor, masks: Tensor) -> bool:
    return torch.is_grad_enabled() and (image.requires_grad or masks.requires_grad)


def _computation_dtype(image: Tensor, masks: Tensor) -> torch.dtype:
    """float32, or float64 where an input is float64 (never bfloat16 / float16)."""
    return torch.promote_types(torch.promote_types(image.dtype, masks.dtype), torch.float32)
