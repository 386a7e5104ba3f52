"""PAMR: every path equal to the conv-based reference of Araslanov & Roth (CVPR 2020), plus its
invariants and the rule that picks a path."""
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from reference_pamr import ReferencePAMR

from harness.eps.pamr import (CPU_SHIFTED_MAX_CLASSES, PAMR, choose_path, triton_kernels,
                              triton_probe_failure)
from mmseg.registry import MODELS

DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)
# The paths that run on CPU tensors without help ('triton' runs there in Triton's interpreter).
CPU_PATHS = ('embedding_bag', 'shifted')
PROJECT_ROOT = Path(__file__).resolve().parents[2]


CASES = [
    # batch, channels, classes, image (H, W), masks (h, w), num_iter, dilations
    pytest.param(2, 3, 21, (40, 36), (10, 9), 10, DEFAULT_DILATIONS, id='voc-like'),
    pytest.param(2, 3, 3, (16, 16), (8, 8), 10, DEFAULT_DILATIONS,
                 id='image-smaller-than-dilation'),
    pytest.param(1, 3, 5, (20, 33), (7, 9), 1, (1, ), id='non-square-one-dilation'),
    pytest.param(3, 3, 2, (9, 6), (9, 6), 0, DEFAULT_DILATIONS, id='no-iteration'),
    pytest.param(1, 1, 1, (5, 3), (2, 2), 3, (1, 3), id='one-channel-tiny'),
    pytest.param(4, 4, 2, (24, 17), (6, 5), 10, (2, 5), id='four-channels'),
]


def _inputs(batch, channels, classes, size, mask_size, dtype=torch.float32):
    generator = torch.Generator().manual_seed(batch * 1000 + classes * 10 + size[0])
    image = torch.rand(batch, channels, *size, generator=generator, dtype=dtype)
    masks = torch.rand(batch, classes, *mask_size, generator=generator, dtype=dtype)
    return image, masks


@pytest.mark.parametrize('path', CPU_PATHS + ('auto', ))
@pytest.mark.parametrize('batch,channels,classes,size,mask_size,num_iter,dilations', CASES)
def test_matches_reference_float32(batch, channels, classes, size, mask_size, num_iter, dilations,
                                   path):
    image, masks = _inputs(batch, channels, classes, size, mask_size)
    expected = ReferencePAMR(num_iter, dilations)(image, masks)
    refined = PAMR(num_iter, dilations, path=path)(image, masks)
    assert refined.shape == (batch, classes, *size)
    assert refined.dtype == torch.float32
    assert (refined - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize('path', CPU_PATHS)
@pytest.mark.parametrize('batch,channels,classes,size,mask_size,num_iter,dilations', CASES)
def test_matches_reference_float64(batch, channels, classes, size, mask_size, num_iter, dilations,
                                   path):
    image, masks = _inputs(batch, channels, classes, size, mask_size, torch.float64)
    expected = ReferencePAMR(num_iter, dilations).double()(image, masks)
    refined = PAMR(num_iter, dilations, path=path)(image, masks)
    assert refined.dtype == torch.float64
    assert (refined - expected).abs().max().item() < 1e-12


def test_unnormalised_image_matches_reference():
    image, masks = _inputs(2, 3, 4, (32, 32), (8, 8))
    image = image * 255 - 120
    expected = ReferencePAMR(10, DEFAULT_DILATIONS)(image, masks)
    assert (PAMR()(image, masks) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize('path', CPU_PATHS)
def test_gradients_match_reference(path):
    image, masks = _inputs(2, 3, 3, (11, 13), (6, 7), torch.float64)
    upstream = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    gradients = []
    for module in (ReferencePAMR(3, DEFAULT_DILATIONS).double(),
                   PAMR(3, DEFAULT_DILATIONS, path=path)):
        inputs = (image.clone().requires_grad_(), masks.clone().requires_grad_())
        (module(*inputs) * upstream).sum().backward()
        gradients.append([x.grad for x in inputs])
    for expected, actual in zip(*gradients):
        assert (actual - expected).abs().max().item() < 1e-10


def test_constant_mask_stays_constant():
    image, _ = _inputs(2, 3, 1, (23, 31), (1, 1))
    levels = torch.tensor([0.0, 0.25, 1.0, -3.0])
    masks = levels.view(1, 4, 1, 1).expand(2, 4, 5, 6)
    refined = PAMR()(image, masks)
    assert torch.allclose(refined, levels.view(1, 4, 1, 1).expand_as(refined), atol=1e-5)


def test_sum_over_classes_is_preserved():
    image, logits = _inputs(2, 3, 6, (30, 20), (10, 8))
    refined = PAMR()(image, logits.softmax(1))
    assert torch.allclose(refined.sum(1), torch.ones(2, 30, 20), atol=1e-5)


def test_output_shape_dtype_and_contiguity():
    image = torch.rand(3, 3, 19, 27, dtype=torch.float16)
    masks = torch.rand(3, 7, 4, 5, dtype=torch.float16)
    refined = PAMR(num_iter=2)(image, masks)
    assert refined.shape == (3, 7, 19, 27)
    assert refined.dtype == torch.float32
    assert refined.is_contiguous()


def test_built_from_the_registry():
    pamr = MODELS.build(dict(type='PAMR', num_iter=3, dilations=[1, 2]))
    assert isinstance(pamr, PAMR)
    assert (pamr.num_iter, pamr.dilations) == (3, (1, 2))
    assert len(pamr.offsets) == 16


@pytest.mark.parametrize('image_shape,masks_shape,match', [
    ((3, 8, 8), (1, 2, 4, 4), r'image must be 4-D .* got shape \(3, 8, 8\)'),
    ((1, 3, 8, 8), (1, 2, 1, 4, 4), r'masks must be 4-D .* got shape \(1, 2, 1, 4, 4\)'),
    ((2, 3, 8, 8), (1, 2, 4, 4),
     r'same batch size, got image \(2, 3, 8, 8\) and masks \(1, 2, 4, 4\)'),
])
def test_bad_inputs_raise(image_shape, masks_shape, match):
    with pytest.raises(ValueError, match=match):
        PAMR()(torch.rand(image_shape), torch.rand(masks_shape))


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_iter=-1), r'num_iter must be an int >= 0, got -1'),
    (dict(num_iter=2.5), r'num_iter must be an int >= 0, got 2.5'),
    (dict(dilations=()), r'dilations must be a non-empty sequence of positive ints, got \(\)'),
    (dict(dilations=(1, 0)), r'dilations must be .* got \(1, 0\)'),
    (dict(dilations=(1, 1.5)), r'dilations must be .* got \(1, 1.5\)'),
    (dict(path='cuda'), r"path must be one of \('auto', 'embedding_bag', 'shifted', 'triton'\), "
                        r"got 'cuda'"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PAMR(**kwargs)


def test_offsets_are_not_part_of_the_state_dict():
    # Checkpoints written before PAMR had a buffer load into it unchanged.
    assert PAMR().state_dict() == {}


@pytest.mark.parametrize('device_type,dtype,needs_grad,classes,triton_usable,expected', [
    ('cuda', torch.float32, False, 21, True, 'triton'),
    ('cuda', torch.float32, False, 1, True, 'triton'),
    ('cuda', torch.float32, False, 21, False, 'shifted'),
    ('cuda', torch.float32, True, 21, True, 'shifted'),
    ('cuda', torch.float64, False, 21, True, 'shifted'),
    ('cpu', torch.float32, False, CPU_SHIFTED_MAX_CLASSES + 1, False, 'embedding_bag'),
    ('cpu', torch.float64, True, 21, False, 'embedding_bag'),
    ('cpu', torch.float32, False, CPU_SHIFTED_MAX_CLASSES, False, 'shifted'),
    ('cpu', torch.float32, False, 1, False, 'shifted'),
    ('mps', torch.float32, False, 21, False, 'shifted'),
])
def test_choose_path(device_type, dtype, needs_grad, classes, triton_usable, expected):
    assert choose_path(device_type, dtype, needs_grad, classes, triton_usable) == expected


@pytest.mark.parametrize('classes,expected', [(1, 'shifted'), (21, 'embedding_bag')])
def test_auto_picks_by_the_number_of_classes_on_cpu(classes, expected):
    image, masks = _inputs(1, 3, classes, (8, 8), (4, 4))
    assert PAMR().select_path(image, masks) == expected
    assert PAMR(path='shifted').select_path(image, masks) == 'shifted'


@pytest.mark.parametrize('path', CPU_PATHS)
def test_computes_in_float32_under_autocast(path):
    image, masks = _inputs(2, 3, 4, (20, 18), (5, 6))
    image, masks = image.bfloat16(), masks.bfloat16()
    expected = PAMR(path=path)(image.float(), masks.float())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        refined = PAMR(path=path)(image, masks)
    assert refined.dtype == torch.float32
    assert torch.equal(refined, expected)


def test_triton_path_refuses_float64_and_gradients():
    image, masks = _inputs(1, 3, 2, (8, 8), (4, 4))
    with pytest.raises(ValueError, match=r"path 'triton' computes in float32, got torch.float64"):
        PAMR(path='triton')(image.double(), masks)
    with pytest.raises(ValueError, match=r"path 'triton' has no backward"):
        PAMR(path='triton')(image, masks.requires_grad_())


TRITON_CASES = [
    # batch, channels, classes, image (H, W), masks (h, w), num_iter, dilations
    (2, 3, 3, (16, 12), (4, 3), 2, (1, 3, 8)),
    (1, 3, 1, (9, 7), (9, 7), 2, DEFAULT_DILATIONS),  # IRD-like: one map, offsets off the image
    (1, 1, 40, (6, 5), (3, 3), 1, (1, )),  # more classes than one tile holds
]
# Runs PAMR(path='triton') on saved inputs and saves the output; run with TRITON_INTERPRET=1.
TRITON_SCRIPT = """
import sys, torch
from harness.eps.pamr import PAMR
cases = torch.load(sys.argv[1])
torch.save([PAMR(num_iter, dilations, path='triton')(image, masks)
            for image, masks, num_iter, dilations in cases], sys.argv[2])
"""


def test_triton_kernels_match_reference_in_the_interpreter(tmp_path):
    """The Triton path's kernels, run by Triton's interpreter on CPU tensors (the interpreter
    is chosen when triton is imported, hence the subprocess)."""
    if triton_kernels() is None:
        pytest.skip('triton is not installed: the Triton path of PAMR is not checked')
    cases = []
    for batch, channels, classes, size, mask_size, num_iter, dilations in TRITON_CASES:
        image, masks = _inputs(batch, channels, classes, size, mask_size)
        cases.append((image, masks, num_iter, dilations))
    torch.save(cases, tmp_path / 'cases.pt')
    subprocess.run([sys.executable, '-c', TRITON_SCRIPT, str(tmp_path / 'cases.pt'),
                    str(tmp_path / 'refined.pt')], cwd=PROJECT_ROOT, check=True,
                   env={**os.environ, 'TRITON_INTERPRET': '1'})
    for (image, masks, num_iter, dilations), refined in zip(
            cases, torch.load(tmp_path / 'refined.pt')):
        expected = ReferencePAMR(num_iter, dilations)(image, masks)
        assert refined.shape == expected.shape and refined.dtype == torch.float32
        assert refined.is_contiguous()
        assert (refined - expected).abs().max().item() < 1e-5


def test_auto_falls_back_to_shifted_where_the_triton_kernels_cannot_run():
    """Without a GPU (and without the interpreter) Triton cannot launch its kernels: a forced
    'triton' path raises, 'auto' warns once and refines with the shifted path instead."""
    if triton_kernels() is None:
        pytest.skip('triton is not installed: there is no Triton failure to fall back from')
    image, masks = _inputs(2, 3, 3, (12, 10), (4, 4))
    expected = ReferencePAMR(2, DEFAULT_DILATIONS)(image, masks)
    pamr = PAMR(2)
    with pytest.warns(RuntimeWarning, match=r"Triton kernels cannot run \(.+\); falling back to "
                                            r"the 'shifted' path"):
        refined = pamr._refine(image, masks, 'triton')
    assert (refined - expected).abs().max().item() < 1e-5
    assert pamr.triton_failure is not None
    # Triton's error types vary (no driver: RuntimeError; CPU tensors on a GPU machine:
    # ValueError), so the forced path must raise exactly the error that 'auto' fell back from.
    with pytest.raises(Exception) as forced:
        PAMR(2, path='triton')(image, masks)
    assert f'{forced.typename}: {forced.value}' == pamr.triton_failure


# In Triton's interpreter: the probe of the genuine kernels, then 'auto' on a device where it
# picks the Triton path (CPU taken for CUDA by choose_path) with a propagation kernel that
# forgets to read the neighbours. Saves what it saw for the test to check.
PROBE_SCRIPT = '''
import sys, warnings
import torch
import triton
import triton.language as tl
from harness.eps import pamr as pamr_module, pamr_triton
from harness.eps.pamr import PAMR


@triton.jit
def copying_kernel(image_ptr, offsets_ptr, scale_ptr, logit_max_ptr, inverse_sum_ptr, source_ptr,
                   target_ptr, height, width, padded_classes, NUM_OFFSETS: tl.constexpr,
                   BLOCK_PIXELS: tl.constexpr, BLOCK_CHANNELS: tl.constexpr,
                   BLOCK_CLASSES: tl.constexpr):
    batch = tl.program_id(1).to(tl.int64)
    pixels = tl.program_id(0) * BLOCK_PIXELS + tl.arange(0, BLOCK_PIXELS)
    classes = tl.program_id(2) * BLOCK_CLASSES + tl.arange(0, BLOCK_CLASSES)
    inside = (pixels < height * width)[:, None]
    tile = (batch * height * width * padded_classes + pixels[:, None] * padded_classes
            + classes[None, :])
    tl.store(target_ptr + tile, tl.load(source_ptr + tile, mask=inside), mask=inside)


image, masks = torch.load(sys.argv[1])
choose_path = pamr_module.choose_path
pamr_module.choose_path = lambda device_type, *args, **kwargs: choose_path('cuda', *args, **kwargs)
seen = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    seen['genuine_path'] = PAMR(2, (1, 2)).select_path(image, masks)
    pamr_triton._propagate_kernel = copying_kernel
    pamr_module.triton_probe_failure.cache_clear()
    seen['forced'] = PAMR(2, (1, 2), path='triton')(image, masks)
    pamr = PAMR(2, (1, 2))
    seen['auto'] = [pamr(image, masks), pamr(image, masks), PAMR(2, (1, 2))(image, masks)]
    seen['wrong_path'] = pamr.select_path(image, masks)
seen['warnings'] = [f'{w.category.__name__}: {w.message}' for w in caught]
torch.save(seen, sys.argv[2])
'''


def test_auto_falls_back_once_where_the_triton_kernels_fail_their_probe(tmp_path):
    """A propagation kernel that runs but computes the wrong thing: 'auto' probes it before its
    first use, warns once and refines with the shifted path; the genuine kernels pass."""
    if triton_kernels() is None:
        pytest.skip('triton is not installed: the Triton probe of PAMR is not checked')
    image, masks = _inputs(2, 3, 3, (12, 10), (4, 4))
    torch.save((image, masks), tmp_path / 'inputs.pt')
    (tmp_path / 'probe.py').write_text(PROBE_SCRIPT)
    subprocess.run([sys.executable, str(tmp_path / 'probe.py'), str(tmp_path / 'inputs.pt'),
                    str(tmp_path / 'seen.pt')], cwd=PROJECT_ROOT, check=True,
                   env={**os.environ, 'TRITON_INTERPRET': '1',
                        'PYTHONPATH': os.pathsep.join(filter(None, [
                            str(PROJECT_ROOT), os.environ.get('PYTHONPATH')]))})
    seen = torch.load(tmp_path / 'seen.pt')
    expected = ReferencePAMR(2, (1, 2))(image, masks)
    assert seen['genuine_path'] == 'triton'
    assert (seen['forced'] - expected).abs().max().item() > 1e-2  # the kernel is wrong
    for refined in seen['auto']:
        assert (refined - expected).abs().max().item() < 1e-5
    assert seen['wrong_path'] == 'shifted'
    assert len(seen['warnings']) == 1
    assert re.fullmatch(
        r"RuntimeWarning: PAMR: the Triton kernels failed their check on cpu for 3-channel "
        r"images, 3 classes and dilations \(1, 2\) \(they differ from the torch path by up to "
        r"[0-9.e-]+ \(more than 1e-05\) on a probe\); falling back to the 'shifted' path",
        seen['warnings'][0])


def test_probe_reports_kernels_that_cannot_launch_and_warns_once():
    """Without a GPU (and without the interpreter) the kernels cannot launch on CPU tensors."""
    if triton_kernels() is None:
        pytest.skip('triton is not installed: there is no Triton failure to probe')
    triton_probe_failure.cache_clear()
    with pytest.warns(RuntimeWarning, match=r"failed their check on cpu .*; falling back"):
        failure = triton_probe_failure(torch.device('cpu'), 3, 4, (1, 2))
    assert failure is not None and 'differ' not in failure
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert triton_probe_failure(torch.device('cpu'), 3, 4, (1, 2)) == failure
