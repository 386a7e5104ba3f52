"""The sweep's console: Tune's status table and one line per trial event; everything a worker
prints (MMEngine's config dump, per-iteration logs) goes to the trial's log file instead, and
``--verbose`` brings it back to the console.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[1]
STAGES = {f'{stage}.{key}': value
          for stage in ('stage1', 'stage2')
          for key, value in (('train_cfg.max_iters', 6), ('train_cfg.val_interval', 3),
                             ('param_scheduler.0.end', 6), ('train_dataloader.batch_size', 4))}


def sweep_output(folder: Path, data_root: Path, *args: str) -> str:
    path = folder / 'console.yaml'
    path.write_text(yaml.safe_dump({
        'name': 'console', 'data_root': str(data_root), 'overrides': STAGES,
        'search_space': {'threshold': {'grid_search': [0.4]}},
        'resources': {'num_workers': 1, 'cpus_per_worker': 1}, 'max_concurrent_trials': 1,
        'storage_path': str(folder / 'sweeps'), 'ray': {'include_dashboard': False}}))
    done = subprocess.run([sys.executable, '-m', 'harness.sweep', str(path), *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_console_shows_trial_events_and_the_logs_hold_the_rest(tiny_dataset, tmp_path):
    output = sweep_output(tmp_path, tiny_dataset)
    trials = sorted((tmp_path / 'sweeps' / 'console' / 'trials').iterdir())
    assert len(trials) == 1
    trial_id = trials[0].name
    lines = output.splitlines()
    assert f'[{trial_id}] started: threshold=0.4' in lines
    assert any(line.startswith(f'[{trial_id}] stage-2 validation at iteration 3: val/mIoU ')
               for line in lines)
    assert any(line.startswith(f'[{trial_id}] finished: val/mIoU ') for line in lines)
    assert '== Status ==' in output and '1 of 1 trial(s) finished, 0 failed.' in output
    # MMEngine's output is not on the console ...
    assert 'Iter(train)' not in output and 'mmengine - INFO' not in output
    assert 'custom_imports' not in output  # the config dump
    # ... but in the trial's log
    log = (trials[0] / 'worker-0.log').read_text()
    assert 'Iter(train)' in log and 'custom_imports' in log
    assert len(lines) < 120, f'{len(lines)} lines'


def test_verbose_brings_the_workers_output_back(tiny_dataset, tmp_path):
    output = sweep_output(tmp_path, tiny_dataset, '--verbose')
    assert 'Iter(train)' in output
