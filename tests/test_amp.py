"""Mixed precision: the AmpOptimWrapper config, the check for CUDA, and float32 saliency losses
under autocast."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper

from harness.amp import (AmpUnavailableError, amp_dtype, amp_optim_wrapper,
                         check_amp_available)
from harness.eps import EPSLoss, IRDLoss

PAPER_STAGE1 = 'mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py'


@pytest.mark.parametrize('bf16_supported,dtype,loss_scale', [
    (True, 'bfloat16', 1.0),
    (False, 'float16', 'dynamic'),
])
def test_amp_optim_wrapper_keeps_the_optimizer_settings(bf16_supported, dtype, loss_scale):
    original = Config.fromfile(PAPER_STAGE1).optim_wrapper
    optim_wrapper = dict(original, clip_grad=dict(max_norm=10.0))
    before = Config(dict(optim_wrapper=optim_wrapper)).to_dict()
    converted = amp_optim_wrapper(optim_wrapper, bf16_supported=bf16_supported)
    assert converted == dict(type='AmpOptimWrapper', dtype=dtype, loss_scale=loss_scale,
                             optimizer=original.optimizer, paramwise_cfg=original.paramwise_cfg,
                             clip_grad=dict(max_norm=10.0))
    assert dtype in AmpOptimWrapper.valid_dtypes
    assert Config(dict(optim_wrapper=optim_wrapper)).to_dict() == before  # not modified


def test_amp_optim_wrapper_of_an_untyped_config_and_an_amp_config():
    plain = dict(optimizer=dict(type='AdamW', lr=2e-3))
    assert amp_optim_wrapper(plain, bf16_supported=False)['type'] == 'AmpOptimWrapper'
    amp = dict(type='AmpOptimWrapper', dtype='float16', optimizer=dict(type='SGD', lr=0.1))
    assert amp_optim_wrapper(amp, bf16_supported=True)['dtype'] == 'bfloat16'


def test_amp_optim_wrapper_refuses_other_wrappers():
    with pytest.raises(ValueError, match=r"amp: cannot turn optim_wrapper type 'OptimWrapperDict'"):
        amp_optim_wrapper(dict(type='OptimWrapperDict'), bf16_supported=True)


def test_amp_dtype():
    assert amp_dtype(True) == 'bfloat16'
    assert amp_dtype(False) == 'float16'


def test_check_amp_available_without_cuda():
    with pytest.raises(AmpUnavailableError, match=r'^amp is true, but this machine has no CUDA '
                                                  r'GPU .* set amp to false'):
        check_amp_available(cuda_available=False)
    assert issubclass(AmpUnavailableError, ValueError)
    check_amp_available(cuda_available=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_check_amp_available_asks_torch():
    with pytest.raises(AmpUnavailableError):
        check_amp_available()
    assert amp_dtype() == 'float16'


def _saliency_inputs(batch=2, classes=3, map_size=(5, 6), size=(20, 24)):
    generator = torch.Generator().manual_seed(3)
    maps = torch.randn(batch, classes + 1, *map_size, generator=generator) * 3
    saliency = torch.rand(batch, 1, *size, generator=generator)
    labels = (torch.rand(batch, classes, generator=generator) > 0.4).float()
    labels[:, 0] = 1
    images = torch.rand(batch, 3, *size, generator=generator)
    return maps, saliency, labels, images


@pytest.mark.parametrize('loss', [
    EPSLoss(),
    IRDLoss(refine='cam'),
    IRDLoss(refine='softmax'),
], ids=['eps', 'ird-cam', 'ird-softmax'])
def test_saliency_losses_compute_in_float32_under_autocast(loss):
    # Under autocast the head's maps (and the labels stacked like its logits) are bfloat16;
    # saliency and images come from the data in float32.
    maps, saliency, labels, images = _saliency_inputs()
    low = maps.bfloat16().requires_grad_()
    expected = loss(low.detach().float(), saliency, labels, images)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(low, saliency, labels.bfloat16(), images)
    assert value.dtype == torch.float32
    assert torch.allclose(value, expected, rtol=1e-6, atol=0)
    value.backward()
    assert low.grad.dtype == torch.bfloat16 and low.grad.abs().sum() > 0
