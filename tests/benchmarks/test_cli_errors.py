"""The benchmarks' own command lines refuse missing files and files of the wrong kind in one line
(exit status 2), before anything is trained, generated or written."""
import importlib
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STAGE1 = 'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
STAGE2 = 'mm_configs/stage2/deeplabv3plus_r18-tiny_1xb16-600i_shapes-64x64.py'
SWEEP = 'experiments/quickstart.yaml'


@pytest.fixture
def refused(monkeypatch, capsys):
    """Runs ``benchmarks/<script>``'s ``main`` from the checkout; it must exit 2 with one line,
    the error, on stderr and leave the checkout as it was. Returns the line."""
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / 'benchmarks'))

    def run(script: str, *args: str) -> str:
        before = sorted(PROJECT_ROOT.glob('*'))
        with pytest.raises(SystemExit) as exit_info:
            importlib.import_module(script).main(list(args))
        error = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2, error
        assert error.startswith('error: ') and '\n' not in error, error
        assert sorted(PROJECT_ROOT.glob('*')) == before
        return error
    return run


@pytest.mark.parametrize('args,expected', [
    (['absent.py'], 'config absent.py not found'),
    ([STAGE2], f"config {STAGE2} is not a stage-1 config: its model is 'EncoderDecoder'"),
    ([SWEEP], f"config {SWEEP} is not a stage-1 config: its model is None"),
])
def test_bench_step(args, expected, refused):
    assert expected in refused('bench_step', *args, '--device', 'cpu')


@pytest.mark.parametrize('args,expected', [
    (['--config', 'absent.py'], '--config absent.py not found'),
    (['--config', STAGE2], f'--config {STAGE2} is not a stage-1 config'),
    (['--checkpoint', 'absent.pth'], '--checkpoint absent.pth not found'),
    (['--checkpoint', 'README.md'], 'checkpoint README.md cannot be read as a PyTorch checkpoint'),
    (['--work-dir', 'README.md'], '--work-dir README.md is a file, not a folder'),
])
def test_bench_pseudo_masks(args, expected, refused):
    assert expected in refused('bench_pseudo_masks', *args)


@pytest.mark.parametrize('args,expected', [
    (['absent.yaml'], ['sweep file', 'absent.yaml not found']),
    ([STAGE1], [Path(STAGE1).name]),
    ([SWEEP, '--out', 'README.md'], ['--out README.md is a file, not a folder']),
])
def test_quickstart_seeds(args, expected, refused):
    error = refused('quickstart_seeds', *args)
    assert all(fragment in error for fragment in expected), error
