"""Benchmark of the project's PAMR paths against a straightforward conv-based implementation.

    python benchmarks/bench_pamr.py [--shape ird|pseudo-mask|both] [--device cpu|cuda]
                                    [--iters 10 --repeats 3]

Shapes (``--shape``, default both, one table each):

* ``pseudo-mask``: batch 8, 21 classes, image 128x128, masks 32x32: ``EPSClassifier``'s
  pseudo-masks (VOC's 21 classes, output stride 4);
* ``ird``: batch 8, 1 class, image 448x448, masks 448x448: ``IRDLoss`` at the paper's crop (one
  foreground map, refined at image resolution).

Every implementation runs the same algorithm (Araslanov & Roth, CVPR 2020) in float32 on the same
random inputs with dilations (1, 2, 4, 8, 12, 24): the conv reference (the authors' code, in
``reference_pamr.py``), each PAMR path that runs on the device (``embedding_bag`` and ``shifted``
everywhere, ``triton`` on CUDA where triton imports) and ``PAMR()`` as configs build it
(``auto``, which picks a path per call). Reported:

* first call: wall time of the first forward pass, which includes compiling the Triton kernels
  (Triton caches them on disk, in ``~/.triton/cache``: a later process skips the compile);
* median wall time of ``--repeats`` forward passes after that (``time.perf_counter``; on CUDA
  after ``torch.cuda.synchronize``), at torch's default number of threads;
* peak memory of one forward pass. CPU (Linux), in a fresh subprocess per implementation after a
  small warm-up pass: the peak resident set size during the pass (``VmHWM`` of
  ``/proc/self/status``, reset to the current size through ``/proc/self/clear_refs`` just before
  the pass; ``getrusage``'s max RSS cannot be reset and starts at the parent's size after
  ``fork``) minus the resident set size before it. CUDA: ``torch.cuda.max_memory_allocated``
  during the pass minus the allocation before it;
* the largest absolute difference of its output from the conv reference's;
* speed-up over the conv reference, and time over the memory-traffic floor.

The memory-traffic floor is the time that the masks' traffic of the propagation alone would
take at the bandwidth of a 256 MiB ``Tensor.copy_`` measured on the same device: ``iters`` passes
that each read and write ``B * K * H * W`` float32 values. It leaves out the image and the
affinities, which any implementation reads too.
"""
import argparse
import importlib.metadata
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple

import torch
import torch.nn as nn
from torch import Tensor

from harness.eps.pamr import PAMR, triton_kernels
from reference_pamr import ReferencePAMR

DILATIONS = (1, 2, 4, 8, 12, 24)


class Shape(NamedTuple):
    batch: int
    classes: int
    size: int
    mask_size: int


SHAPES: Dict[str, Shape] = {
    'pseudo-mask': Shape(batch=8, classes=21, size=128, mask_size=32),
    'ird': Shape(batch=8, classes=1, size=448, mask_size=448),
}


def implementations(device: torch.device) -> List[str]:
    """Names of what runs on ``device``: the reference, PAMR's paths there, and ``auto``."""
    paths = ['embedding_bag', 'shifted']
    if device.type == 'cuda' and triton_kernels() is not None:
        paths.append('triton')
    return ['conv reference'] + paths + ['auto']


def build(name: str, iters: int, device: torch.device) -> nn.Module:
    if name == 'conv reference':
        return ReferencePAMR(iters, DILATIONS).to(device)
    return PAMR(iters, DILATIONS, path=name).to(device)


def make_inputs(shape: Shape, device: torch.device) -> List[Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(shape.batch, 3, shape.size, shape.size, generator=generator)
    masks = torch.rand(shape.batch, shape.classes, shape.mask_size, shape.mask_size,
                       generator=generator)
    # Class probabilities; one class is a foreground map in [0, 1] (a softmax would make it 1).
    masks = masks.softmax(1) if shape.classes > 1 else masks
    return [image.to(device), masks.to(device)]


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``run``, with the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (Linux), in MiB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_memory_mib(module: nn.Module, inputs: List[Tensor], device: torch.device) -> float:
    """Peak memory of one forward pass (see the module docstring). On CPU it must run in a
    fresh process whose only other pass was a small warm-up."""
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


def cpu_peak_memory_in_subprocess(name: str, shape_name: str, iters: int) -> float:
    command = [sys.executable, os.path.abspath(__file__), '--memory-of', name,
               '--shape', shape_name, '--iters', str(iters), '--device', 'cpu']
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def memory_of(name: str, shape_name: str, iters: int) -> float:
    """The CPU subprocess's side of :func:`cpu_peak_memory_in_subprocess`."""
    device = torch.device('cpu')
    module = build(name, iters, device)
    image, masks = make_inputs(SHAPES[shape_name], device)
    module(image[:1, :, :16, :16], masks[:1, :, :4, :4])
    return peak_memory_mib(module, [image, masks], device)


def copy_bandwidth(device: torch.device, repeats: int = 5) -> float:
    """Bytes per second moved (read + written) by a 256 MiB ``Tensor.copy_``."""
    source = torch.ones(64 * 2**20, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    seconds = statistics.median(timed(lambda: target.copy_(source), device)
                                for _ in range(repeats))
    return 2 * source.numel() * source.element_size() / seconds


def bench_shape(shape_name: str, args: argparse.Namespace, device: torch.device,
                bandwidth: float) -> None:
    """Prints the table of one shape."""
    shape = SHAPES[shape_name]
    inputs = make_inputs(shape, device)
    print(f'\n### {shape_name}: batch {shape.batch}, {shape.classes} '
          f'{"class" if shape.classes == 1 else "classes"}, image '
          f'{shape.size}x{shape.size}, masks {shape.mask_size}x{shape.mask_size}, '
          f'{args.iters} iterations\n')
    floor = 2 * args.iters * shape.batch * shape.classes * shape.size * shape.size * 4 / bandwidth
    print('| implementation | first call (s) | median time (ms) | peak memory (MiB) '
          '| max abs diff | speed-up | x floor |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    reference = None
    for name in implementations(device):
        module = build(name, args.iters, device)
        label = name if name == 'conv reference' else f"PAMR '{name}'"
        if name == 'auto':
            label = f"PAMR auto (-> '{module.select_path(*inputs)}')"
        try:
            first_call = timed(lambda: module(*inputs), device)
        # A path that cannot run here (a Triton kernel that does not compile) is reported in
        # its row; the other rows are still worth having.
        except Exception as error:
            print(f'| {label} | failed: {type(error).__name__}: {error} | | | | | |'
                  .replace('\n', ' '))
            continue
        seconds = statistics.median(timed(lambda: module(*inputs), device)
                                    for _ in range(args.repeats))
        output = module(*inputs)
        if device.type == 'cuda':
            memory = peak_memory_mib(module, inputs, device)
        else:
            memory = cpu_peak_memory_in_subprocess(name, shape_name, args.iters)
        if reference is None:
            reference = (output, seconds)
        difference = (output - reference[0]).abs().max().item()
        print(f'| {label} | {first_call:.3f} | {seconds * 1e3:.2f} | {memory:.1f} | '
              f'{difference:.1e} | {reference[1] / seconds:.1f}x | {seconds / floor:.1f}x |',
              flush=True)
    print(f'\nmemory-traffic floor: {2 * args.iters} passes over {shape.batch} x '
          f'{shape.classes} x {shape.size}^2 float32 masks at {bandwidth / 2**30:.1f} GiB/s = '
          f'{floor * 1e3:.3f} ms')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--shape', default='both', choices=tuple(SHAPES) + ('both', ))
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--memory-of', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    if args.memory_of:
        print(memory_of(args.memory_of, args.shape, args.iters))
        return

    triton_version = (importlib.metadata.version('triton') if triton_kernels() is not None
                      else 'not importable')
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    print(f'torch {torch.__version__}, triton {triton_version}, device {device} ({name}), '
          f'{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; '
          f'dilations {DILATIONS}, float32, median of {args.repeats}')
    bandwidth = copy_bandwidth(device)
    for shape_name in (SHAPES if args.shape == 'both' else [args.shape]):
        bench_shape(shape_name, args, device, bandwidth)


if __name__ == '__main__':
    main()
