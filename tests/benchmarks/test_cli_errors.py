"""The benchmarks' own command lines refuse missing files and files of the wrong kind in one line
(exit status 2), before anything is trained, generated or written."""
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STAGE1 = 'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
STAGE2 = 'mm_configs/stage2/deeplabv3plus_r18-tiny_1xb16-600i_shapes-64x64.py'
SWEEP = 'experiments/quickstart.yaml'


def refused(script: str, *args: str) -> str:
    """Runs ``benchmarks/<script>`` from the checkout; it must exit 2 with one line, the error,
    on stderr and leave the checkout as it was. Returns the line."""
    before = sorted(PROJECT_ROOT.glob('*'))
    result = subprocess.run([sys.executable, f'benchmarks/{script}', *args], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    error = result.stderr.strip()
    assert result.returncode == 2, result.stdout + result.stderr
    assert error.startswith('error: ') and '\n' not in error, error
    assert sorted(PROJECT_ROOT.glob('*')) == before
    return error


@pytest.mark.parametrize('args,expected', [
    (['absent.py'], 'config absent.py not found'),
    ([STAGE2], f"config {STAGE2} is not a stage-1 config: its model is 'EncoderDecoder'"),
    ([SWEEP], f"config {SWEEP} is not a stage-1 config: its model is None"),
])
def test_bench_step(args, expected):
    assert expected in refused('bench_step.py', *args, '--device', 'cpu')


@pytest.mark.parametrize('args,expected', [
    (['--config', 'absent.py'], '--config absent.py not found'),
    (['--config', STAGE2], f'--config {STAGE2} is not a stage-1 config'),
    (['--checkpoint', 'absent.pth'], '--checkpoint absent.pth not found'),
    (['--checkpoint', 'README.md'], 'checkpoint README.md cannot be read as a PyTorch checkpoint'),
    (['--work-dir', 'README.md'], '--work-dir README.md is a file, not a folder'),
])
def test_bench_pseudo_masks(args, expected):
    assert expected in refused('bench_pseudo_masks.py', *args)


@pytest.mark.parametrize('args,expected', [
    (['absent.yaml'], ['sweep file', 'absent.yaml not found']),
    ([STAGE1], [Path(STAGE1).name]),
    ([SWEEP, '--out', 'README.md'], ['--out README.md is a file, not a folder']),
])
def test_quickstart_seeds(args, expected):
    error = refused('quickstart_seeds.py', *args)
    assert all(fragment in error for fragment in expected), error
