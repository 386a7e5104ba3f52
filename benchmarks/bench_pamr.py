"""Benchmark of the project's PAMR against a straightforward conv-based implementation.

    python benchmarks/bench_pamr.py [--batch 8 --classes 21 --size 128 --mask-size 32
                                     --iters 10 --repeats 3 --device cpu]

Both run the same algorithm (Araslanov & Roth, CVPR 2020) in float32 on the same random inputs
with dilations (1, 2, 4, 8, 12, 24). Reported per implementation:

* median wall time of ``--repeats`` forward passes after one warm-up (``time.perf_counter``;
  on CUDA after ``torch.cuda.synchronize``), at torch's default number of threads;
* peak memory of one forward pass, in a fresh subprocess per implementation, after a small
  warm-up pass has loaded the kernels. CPU (Linux): the peak resident set size during the pass
  (``VmHWM`` of ``/proc/self/status``, reset to the current size through
  ``/proc/self/clear_refs`` just before the pass; ``getrusage``'s max RSS cannot be reset and
  starts at the parent's size after ``fork``) minus the resident set size before it. CUDA:
  ``torch.cuda.max_memory_allocated`` during the pass minus the allocation before it;
* the largest absolute difference of its output from the conv-based one.

The memory-traffic floor is the time the masks' traffic of the propagation alone would take at
the bandwidth of a 256 MiB ``Tensor.copy_`` measured on the same device: ``iters`` passes that
each read and write ``B * K * H * W`` float32 values.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from harness.eps.pamr import PAMR

DILATIONS = (1, 2, 4, 8, 12, 24)
IMPLEMENTATIONS = ('conv reference', 'harness PAMR')


class ConvPAMR(nn.Module):
    """PAMR as in the reference code: every neighbour of every pixel gathered by a 3x3 dilated
    convolution, i.e. a ``[B, K, 8 * len(dilations), H, W]`` tensor per iteration."""

    def __init__(self, num_iter: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.num_iter = num_iter
        self.dilations = tuple(dilations)
        window = torch.eye(9).view(9, 1, 3, 3)
        neighbours = window[[0, 1, 2, 3, 5, 6, 7, 8]]
        self.register_buffer('copy_kernel', neighbours)
        self.register_buffer('diff_kernel', window[4:5] - neighbours)
        self.register_buffer('window_kernel', window)

    def _local(self, x: Tensor, kernel: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        x = x.reshape(batch * channels, 1, height, width)
        taps = [F.conv2d(F.pad(x, [d] * 4, mode='replicate'), kernel, dilation=d)
                for d in self.dilations]
        return torch.cat(taps, 1).view(batch, channels, -1, height, width)

    def forward(self, image: Tensor, masks: Tensor) -> Tensor:
        masks = F.interpolate(masks, size=image.shape[-2:], mode='bilinear', align_corners=True)
        std = self._local(image, self.window_kernel).std(2, keepdim=True)
        affinity = -self._local(image, self.diff_kernel).abs() / (1e-8 + 0.1 * std)
        affinity = F.softmax(affinity.mean(1, keepdim=True), 2)
        for _ in range(self.num_iter):
            masks = (self._local(masks, self.copy_kernel) * affinity).sum(2)
        return masks


def build(name: str, iters: int, device: torch.device) -> nn.Module:
    module = ConvPAMR(iters, DILATIONS) if name == 'conv reference' else PAMR(iters, DILATIONS)
    return module.to(device)


def make_inputs(args: argparse.Namespace, device: torch.device) -> List[Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    masks = torch.rand(args.batch, args.classes, args.mask_size, args.mask_size,
                       generator=generator).softmax(1)
    return [image.to(device), masks.to(device)]


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (Linux), in MiB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_memory_mib(name: str, args: argparse.Namespace, device: torch.device) -> float:
    """Peak memory of one forward pass (see the module docstring); CPU in this process, so it
    must be a fresh one."""
    module = build(name, args.iters, device)
    inputs = make_inputs(args, device)
    with torch.no_grad():
        module(inputs[0][:1, :, :16, :16], inputs[1][:1, :, :4, :4])
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            module(*inputs)
            torch.cuda.synchronize(device)
            return (torch.cuda.max_memory_allocated(device) - before) / 2**20
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
        before = status_mib('VmRSS')
        module(*inputs)
        return status_mib('VmHWM') - before


def peak_memory_in_subprocess(name: str, args: argparse.Namespace) -> float:
    command = [sys.executable, os.path.abspath(__file__), '--memory-of', name,
               '--batch', str(args.batch), '--classes', str(args.classes),
               '--size', str(args.size), '--mask-size', str(args.mask_size),
               '--iters', str(args.iters), '--device', args.device]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def copy_bandwidth(device: torch.device, repeats: int = 5) -> float:
    """Bytes per second moved (read + written) by a 256 MiB ``Tensor.copy_``."""
    source = torch.ones(64 * 2**20, device=device)
    target = torch.empty_like(source)
    seconds = median_seconds(lambda: target.copy_(source), repeats, device)
    return 2 * source.numel() * source.element_size() / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--classes', type=int, default=21)
    parser.add_argument('--size', type=int, default=128, help='image height and width')
    parser.add_argument('--mask-size', type=int, default=32, help='mask height and width')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--memory-of', choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    device = torch.device(args.device)
    if args.memory_of:
        print(peak_memory_mib(args.memory_of, args, device))
        return

    print(f'torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, '
          f'load average {os.getloadavg()[0]:.2f}')
    print(f'batch {args.batch}, {args.classes} classes, image {args.size}x{args.size}, masks '
          f'{args.mask_size}x{args.mask_size}, {args.iters} iterations, dilations {DILATIONS}, '
          f'float32, median of {args.repeats}\n')
    inputs = make_inputs(args, device)
    results = {}
    with torch.no_grad():
        for name in IMPLEMENTATIONS:
            module = build(name, args.iters, device)
            output = module(*inputs)
            seconds = median_seconds(lambda: module(*inputs), args.repeats, device)
            memory = peak_memory_in_subprocess(name, args)
            results[name] = (seconds, memory, output)
    reference_seconds, _, reference = results['conv reference']
    print('| implementation | median time (s) | peak memory (MiB) | max abs diff | speed-up |')
    print('|---|---:|---:|---:|---:|')
    for name, (seconds, memory, output) in results.items():
        difference = (output - reference).abs().max().item()
        print(f'| {name} | {seconds:.4f} | {memory:.1f} | {difference:.1e} | '
              f'{reference_seconds / seconds:.1f}x |')

    bandwidth = copy_bandwidth(device)
    mask_bytes = 2 * args.iters * args.batch * args.classes * args.size * args.size * 4
    floor = mask_bytes / bandwidth
    fast_seconds = results['harness PAMR'][0]
    print(f'\nmemory-traffic floor: {mask_bytes / 2**20:.0f} MiB of mask reads and writes at '
          f'{bandwidth / 2**30:.1f} GiB/s (256 MiB copy_) = {floor * 1e3:.1f} ms; '
          f'harness PAMR takes {fast_seconds / floor:.1f}x that')


if __name__ == '__main__':
    main()
