"""PAMR's CUDA path: two Triton kernels that recompute the affinities on the fly.

Imported only where :class:`harness.eps.pamr.PAMR` may take this path (it needs ``triton``).
:func:`_statistics_kernel` stores per pixel the channel scales
``1 / (C * (1e-8 + 0.1 * sigma_c))``, the largest of the ``N`` logits and the inverse softmax
sum; each iteration is one :func:`_propagate_kernel` launch that recomputes the logits from the
image. Tensors are pixel-major ``[B, H * W, channels]``, channels and classes zero-padded to a
power of two (padding adds 0 everywhere). With ``TRITON_INTERPRET=1`` set before ``triton`` is
imported, the kernels run on CPU tensors.
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

# A program refines 256 pixels x <= 16 classes or 128 x 32 (<= 4096 accumulators in registers);
# more classes are split over the grid's third axis.
MAX_BLOCK_CLASSES = 32


@triton.jit
def _neighbour_pixel(offsets_ptr, n, rows, cols, height, width):
    """Flat index of neighbour ``n`` of each pixel; clamping replicates the image border."""
    row = tl.minimum(tl.maximum(rows + tl.load(offsets_ptr + 2 * n), 0), height - 1)
    col = tl.minimum(tl.maximum(cols + tl.load(offsets_ptr + 2 * n + 1), 0), width - 1)
    return row * width + col


@triton.jit
def _neighbour_logit(image, centre, scale, neighbour, inside, BLOCK_CHANNELS: tl.constexpr):
    """``l_n(p)`` of a tile of pixels: ``-sum_c |I_c(p) - I_c(q)| * scale_c(p)``."""
    channels = tl.arange(0, BLOCK_CHANNELS)
    values = tl.load(image + neighbour[:, None] * BLOCK_CHANNELS + channels[None, :],
                     mask=inside[:, None], other=0.0)
    return -tl.sum(tl.abs(centre - values) * scale, axis=1)


@triton.jit
def _statistics_kernel(image_ptr, offsets_ptr, scale_ptr, logit_max_ptr, inverse_sum_ptr,
                       height, width, CHANNELS: tl.constexpr, NUM_OFFSETS: tl.constexpr,
                       NUM_DILATIONS: tl.constexpr, BLOCK_PIXELS: tl.constexpr,
                       BLOCK_CHANNELS: tl.constexpr):
    """Per pixel: channel scales ``[B, H*W, BLOCK_CHANNELS]``, largest logit and inverse softmax
    sum ``[B, H*W]``. Grid: ``(cdiv(H * W, BLOCK_PIXELS), B)``."""
    batch = tl.program_id(1).to(tl.int64)
    num_pixels = height * width
    pixels = tl.program_id(0) * BLOCK_PIXELS + tl.arange(0, BLOCK_PIXELS)
    inside = pixels < num_pixels
    rows = pixels // width
    cols = pixels % width
    channels = tl.arange(0, BLOCK_CHANNELS)
    tile = pixels[:, None] * BLOCK_CHANNELS + channels[None, :]
    image = image_ptr + batch * num_pixels * BLOCK_CHANNELS
    centre = tl.load(image + tile, mask=inside[:, None], other=0.0)

    # sigma_c(p) over the dilated 3x3 windows, centre counted once per dilation; two passes, as
    # a sum of squares loses the small variance of an unnormalised image.
    num_taps = 9 * NUM_DILATIONS
    total = centre * NUM_DILATIONS
    for n in range(NUM_OFFSETS):
        neighbour = _neighbour_pixel(offsets_ptr, n, rows, cols, height, width)
        total += tl.load(image + neighbour[:, None] * BLOCK_CHANNELS + channels[None, :],
                         mask=inside[:, None], other=0.0)
    mean = total / num_taps
    squares = (centre - mean) * (centre - mean) * NUM_DILATIONS
    for n in range(NUM_OFFSETS):
        neighbour = _neighbour_pixel(offsets_ptr, n, rows, cols, height, width)
        deviation = tl.load(image + neighbour[:, None] * BLOCK_CHANNELS + channels[None, :],
                            mask=inside[:, None], other=0.0) - mean
        squares += deviation * deviation
    sigma = tl.sqrt(squares / (num_taps - 1))
    scale = 1.0 / (CHANNELS * (1e-8 + 0.1 * sigma))
    tl.store(scale_ptr + batch * num_pixels * BLOCK_CHANNELS + tile, scale, mask=inside[:, None])

    # Online softmax statistics over the N logits.
    logit_max = tl.full([BLOCK_PIXELS], float('-inf'), tl.float32)
    exp_sum = tl.zeros([BLOCK_PIXELS], tl.float32)
    for n in range(NUM_OFFSETS):
        neighbour = _neighbour_pixel(offsets_ptr, n, rows, cols, height, width)
        logit = _neighbour_logit(image, centre, scale, neighbour, inside, BLOCK_CHANNELS)
        new_max = tl.maximum(logit_max, logit)
        exp_sum = exp_sum * tl.exp(logit_max - new_max) + tl.exp(logit - new_max)
        logit_max = new_max
    tl.store(logit_max_ptr + batch * num_pixels + pixels, logit_max, mask=inside)
    tl.store(inverse_sum_ptr + batch * num_pixels + pixels, 1.0 / exp_sum, mask=inside)


@triton.jit
def _propagate_kernel(image_ptr, offsets_ptr, scale_ptr, logit_max_ptr, inverse_sum_ptr,
                      source_ptr, target_ptr, height, width, padded_classes,
                      NUM_OFFSETS: tl.constexpr, BLOCK_PIXELS: tl.constexpr,
                      BLOCK_CHANNELS: tl.constexpr, BLOCK_CLASSES: tl.constexpr):
    """One PAMR iteration: ``target[b, p, k] = sum_n a_n(p) * source[b, q_n(p), k]``.

    ``source`` and ``target`` are ``[B, H*W, padded_classes]``. Grid:
    ``(cdiv(H * W, BLOCK_PIXELS), B, padded_classes / BLOCK_CLASSES)``.
    """
    batch = tl.program_id(1).to(tl.int64)
    num_pixels = height * width
    pixels = tl.program_id(0) * BLOCK_PIXELS + tl.arange(0, BLOCK_PIXELS)
    inside = pixels < num_pixels
    rows = pixels // width
    cols = pixels % width
    channels = tl.arange(0, BLOCK_CHANNELS)
    tile = pixels[:, None] * BLOCK_CHANNELS + channels[None, :]
    image = image_ptr + batch * num_pixels * BLOCK_CHANNELS
    centre = tl.load(image + tile, mask=inside[:, None], other=0.0)
    scale = tl.load(scale_ptr + batch * num_pixels * BLOCK_CHANNELS + tile, mask=inside[:, None],
                    other=0.0)
    logit_max = tl.load(logit_max_ptr + batch * num_pixels + pixels, mask=inside, other=0.0)
    inverse_sum = tl.load(inverse_sum_ptr + batch * num_pixels + pixels, mask=inside, other=0.0)

    classes = tl.program_id(2) * BLOCK_CLASSES + tl.arange(0, BLOCK_CLASSES)
    source = source_ptr + batch * num_pixels * padded_classes + classes[None, :]
    refined = tl.zeros([BLOCK_PIXELS, BLOCK_CLASSES], tl.float32)
    for n in range(NUM_OFFSETS):
        neighbour = _neighbour_pixel(offsets_ptr, n, rows, cols, height, width)
        logit = _neighbour_logit(image, centre, scale, neighbour, inside, BLOCK_CHANNELS)
        affinity = tl.exp(logit - logit_max) * inverse_sum
        refined += affinity[:, None] * tl.load(source + neighbour[:, None] * padded_classes,
                                               mask=inside[:, None], other=0.0)
    tl.store(target_ptr + batch * num_pixels * padded_classes + pixels[:, None] * padded_classes
             + classes[None, :], refined, mask=inside[:, None])


def _pixel_major(x: Tensor, channels: int) -> Tensor:
    """``[B, C, H, W]`` as a new ``[B, H * W, channels]`` tensor, zero beyond ``C``."""
    batch, num_channels = x.shape[:2]
    packed = x.new_zeros(batch, x.shape[2] * x.shape[3], channels)
    packed[:, :, :num_channels] = x.flatten(2).transpose(1, 2)
    return packed


def refine(image: Tensor, masks: Tensor, offsets: Tensor, num_dilations: int,
           num_iter: int) -> Tensor:
    """Runs ``num_iter`` PAMR iterations of ``masks`` along the edges of ``image``.

    Args:
        image (Tensor): Image ``[B, C, H, W]``, float32.
        masks (Tensor): Masks ``[B, K, H, W]`` at the image's size, float32.
        offsets (Tensor): ``(dy, dx)`` of the ``N`` neighbours in pixels, int32 ``[N, 2]``, on
            the same device.
        num_dilations (int): Number of dilations the offsets come from (``N / 8``).
        num_iter (int): Number of iterations, >= 1.

    Returns:
        Tensor: Refined masks ``[B, K, H, W]``, float32, a new contiguous tensor.
    """
    batch, channels, height, width = image.shape
    num_classes = masks.shape[1]
    num_pixels = height * width
    block_channels = triton.next_power_of_2(channels)
    block_classes = min(triton.next_power_of_2(num_classes), MAX_BLOCK_CLASSES)
    block_pixels = 256 if block_classes <= 16 else 128
    class_blocks = triton.cdiv(num_classes, block_classes)
    padded_classes = class_blocks * block_classes

    pixels_image = _pixel_major(image, block_channels)
    scale = torch.empty_like(pixels_image)
    logit_max = image.new_empty(batch, num_pixels)
    inverse_sum = image.new_empty(batch, num_pixels)
    offsets = offsets.contiguous()
    pixel_blocks = triton.cdiv(num_pixels, block_pixels)
    _statistics_kernel[(pixel_blocks, batch)](
        pixels_image, offsets, scale, logit_max, inverse_sum, height, width, CHANNELS=channels,
        NUM_OFFSETS=offsets.shape[0], NUM_DILATIONS=num_dilations, BLOCK_PIXELS=block_pixels,
        BLOCK_CHANNELS=block_channels)
    source = _pixel_major(masks, padded_classes)
    target = torch.empty_like(source)
    for _ in range(num_iter):
        _propagate_kernel[(pixel_blocks, batch, class_blocks)](
            pixels_image, offsets, scale, logit_max, inverse_sum, source, target, height, width,
            padded_classes, NUM_OFFSETS=offsets.shape[0], BLOCK_PIXELS=block_pixels,
            BLOCK_CHANNELS=block_channels, BLOCK_CLASSES=block_classes)
        source, target = target, source
    refined = source[:, :, :num_classes].transpose(1, 2)
    return refined.reshape(batch, num_classes, height, width).contiguous()
