"""benchmarks/bench_step.py: a CPU run at the small size accounts for the whole step."""
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SMALL_STAGE1 = 'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
PHASES = ('data (dataloader next + data_preprocessor)', 'backbone + head forward',
          'saliency loss (PAMR included)', 'classification loss', 'backward', 'optimizer step')


def bench_step(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'benchmarks/bench_step.py', SMALL_STAGE1, *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)


def table_rows(output: str) -> dict:
    """``{phase: (milliseconds, percent of the step)}`` from the printed Markdown table."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) == 3 and cells[0] not in ('phase', '---'):
            rows[cells[0]] = (float(cells[1]), float(cells[2]))
    return rows


def test_phases_add_up_to_the_step():
    result = bench_step('--device', 'cpu', '--size', 'small', '--iters', '2', '--warmup', '1')
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert set(rows) == set(PHASES) | {'sum of phases', 'step (timed on its own)'}
    assert all(rows[phase][0] > 0 for phase in PHASES)
    # The median of 2 steps is their mean, and each step's phases are disjoint parts of it: their
    # medians add up to at most the step's median (time counted twice would exceed it, however
    # small), short of it only by the timer's own overhead (about 0.3%). A phase's work left
    # untimed would leave a gap of its share, over 2% for all but the classification loss.
    step = rows['step (timed on its own)'][0]
    phases = sum(rows[phase][0] for phase in PHASES)
    rounding = 0.005 * (len(PHASES) + 1)
    assert 0.98 * step <= phases <= step + rounding
    assert abs(rows['sum of phases'][0] - phases) <= 0.01 * len(PHASES)
    assert "PAMR path 'auto' (-> 'shifted')" in result.stdout


def test_amp_on_the_cpu_is_refused_before_anything_runs():
    result = bench_step('--device', 'cpu', '--amp')
    assert result.returncode == 2
    assert '--amp needs --device cuda (got --device cpu)' in result.stderr
    assert '| phase |' not in result.stdout
