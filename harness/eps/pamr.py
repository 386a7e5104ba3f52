"""Pixel-adaptive mask refinement (PAMR).

Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020; the
semantics are those of ``PAMR`` in their code (github.com/visinf/1-stage-wseg,
``models/mods/pamr.py``).

The reference materialises every neighbour of every mask pixel with a convolution, a
``[B, K, 8 * len(dilations), H, W]`` tensor per iteration. Here an iteration takes one of three
paths, all equal to the reference up to float rounding:

- ``'embedding_bag'``: one ``F.embedding_bag`` call: the masks are a table with one row of ``K``
  class scores per pixel, each pixel is a bag of the rows of its neighbours, weighted by its
  affinities (computed once per call). On CPU this runs FBGEMM's fused gather-multiply-add
  kernels; on CUDA the same gather is slower than the reference.
- ``'shifted'``: plain torch: the sum over the neighbours of affinity times a shifted view of
  the replicate-padded masks (one multiply-add per neighbour). Runs everywhere, with autograd.
- ``'triton'``: :mod:`harness.eps.pamr_triton`, one fused kernel per iteration that recomputes
  the affinities from the image instead of reading them (CUDA, float32, no autograd).

``path='auto'`` (the default) picks, per call:

==========================================  =====================================================
inputs                                      path
==========================================  =====================================================
CUDA, float32, no gradient needed           ``'triton'`` where ``triton`` imports and its kernels
                                            pass their probe (else ``'shifted'``, with one
                                            warning)
CUDA otherwise (float64, or gradients)      ``'shifted'``
CPU, ``K > CPU_SHIFTED_MAX_CLASSES``        ``'embedding_bag'``
CPU, ``K <= CPU_SHIFTED_MAX_CLASSES``       ``'shifted'``
other devices                               ``'shifted'``
==========================================  =====================================================

(``K`` is the number of mask channels.) On CPU, ``embedding_bag`` pays a cost per pixel and
neighbour that only several classes amortise, while ``shifted`` pays per class; on CUDA the
Triton kernels read the masks and image once per iteration where the others make a pass over
the masks per neighbour. ``benchmarks/bench_pamr.py`` times every path at K = 21 and K = 1.

The probe (:func:`triton_probe_failure`): before ``'auto'`` first takes the Triton path in a
process, for a device, number of image channels, number of classes and dilations (what the
kernels are compiled for), it refines a small random input (2 images of 16x12 pixels, 2
iterations) with the Triton kernels and with ``'shifted'``. Where the kernels fail to compile or
launch, or their result differs by more than ``TRITON_PROBE_TOLERANCE`` anywhere, ``'auto'``
takes ``'shifted'`` for such inputs from then on, after one warning that says why. A forced
``path='triton'`` is not probed.
"""
import functools
import warnings
from numbers import Integral
from types import ModuleType
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.registry import MODELS

PATHS = ('auto', 'embedding_bag', 'shifted', 'triton')
# Largest number of classes for which the shifted path beats embedding_bag on CPU
# (benchmarks/bench_pamr.py; the figures: docs/benchmarks.md).
CPU_SHIFTED_MAX_CLASSES = 2
# Largest difference from the 'shifted' path, on the probe's values in [0, 1], for which 'auto'
# trusts the Triton kernels: the tolerance the tests hold every path to against the reference.
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
    """Why the Triton kernels must not refine ``[B, channels, H, W]`` images with
    ``num_classes`` masks and these dilations on ``device``, or ``None`` where they passed the
    probe (see the module docstring). Runs once per process and arguments; warns once when they
    fail."""
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
        # Triton reports a kernel that cannot compile or launch here (no GPU driver, no C
        # compiler, a ptxas error) with exceptions of several types.
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
    """The path ``'auto'`` takes for inputs of this kind (the table in the module docstring)."""
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

    Every pixel ``p`` has ``N = 8 * len(dilations)`` neighbours: the 8 pixels around it at
    distance ``d`` (in pixels, along rows, columns and diagonals) for each dilation ``d``, with
    image borders replicated. Its affinity to neighbour ``q`` is
    ``softmax_q(-mean_c |I_c(p) - I_c(q)| / (1e-8 + 0.1 * sigma_c(p)))``, where ``sigma_c(p)`` is
    the unbiased standard deviation of channel ``c`` over the ``9 * len(dilations)`` taps of the
    dilated 3x3 windows around ``p`` (the centre counted once per dilation). Each of the
    ``num_iter`` iterations replaces every mask value by the affinity-weighted sum of its
    neighbours' values; the sum over classes of a pixel is therefore preserved.

    PAMR computes in float32 (float64 if an input is float64), with autocast disabled: under
    mixed precision the refinement is not done in bfloat16 / float16.

    Gradients flow to ``image`` and ``masks`` on the ``'embedding_bag'`` and ``'shifted'``
    paths (``'auto'`` never picks ``'triton'`` when a gradient is needed). The project uses PAMR
    without gradient: ``IRDLoss`` refines a detached foreground map, ``EPSClassifier`` refines
    predictions at test time.

    Args:
        num_iter: Number of propagation steps (0 returns the upsampled masks).
        dilations: Neighbour distances in pixels.
        path: ``'auto'`` (see the module docstring), or one of ``'embedding_bag'``,
            ``'shifted'``, ``'triton'`` to force it.
    """

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
                 path: str = 'auto') -> None:
        super().__init__()
        if isinstance(num_iter, bool) or not isinstance(num_iter, Integral) or num_iter < 0:
            raise ValueError(f'PAMR: num_iter must be an int >= 0, got {num_iter!r}')
        dilations = tuple(dilations)
        if not dilations or any(isinstance(d, bool) or not isinstance(d, Integral) or d < 1
                                for d in dilations):
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
        # On the module's device, so that no call copies it there (a host-to-device copy
        # would stall the CPU until the GPU has caught up).
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
            image: ``[B, C, H, W]`` image, any number of channels and any value range (the
                affinities are normalised by the local standard deviation).
            masks: ``[B, K, h, w]`` class scores or probabilities, bilinearly upsampled to
                ``H x W`` (``align_corners=True``) before the refinement.

        Returns:
            ``[B, K, H, W]`` refined masks, float32 (float64 if an input is float64).
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
        # Upsampling channels-last is faster and makes embedding_bag's [B * H * W, K] table a
        # view; 'shifted' works on class planes, 'triton' packs the masks itself.
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
        # Triton reports a kernel that cannot compile or launch here (no GPU driver, no C
        # compiler, a ptxas error) with exceptions of several types.
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
        neighbours (the affinities are their softmax over ``N``).

        Each neighbour is a shifted view of one replicate-padded copy of the image (padding by the
        largest dilation replicates the border as the reference's per-dilation padding does), so
        no ``[B, C, N, H, W]`` tensor is built.
        """
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
        # Stacked as [B, H, N, W]: each neighbour writes whole rows; embedding_bag's transpose
        # to [B, H, W, N] then moves small blocks that stay in cache.
        logits = torch.stack([(image - neighbour).abs_().div_(denominator).sum(1)
                              for neighbour in neighbours], 2)
        return logits.div_(-channels)

    def _neighbour_index(self, batch: int, height: int, width: int, device: torch.device) -> Tensor:
        """``[B * H * W, N]`` rows of the neighbours of every pixel in the ``[B * H * W, K]`` table.

        Clamping the coordinates to the image replicates its border, like the reference's
        replicate padding.
        """
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
    """float32, or float64 where an input is float64 (bfloat16 / float16 are computed in float32)."""
    return torch.promote_types(torch.promote_types(image.dtype, masks.dtype), torch.float32)
