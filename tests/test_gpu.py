"""The GPU code path: trials and sweeps on CUDA (NCCL process group, one GPU shared by trials,
resume on the GPU), and the worker-group settings that select it.

The tests that need CUDA are skipped where there is none (``pytest -ra`` lists them with the
reason); the settings are checked everywhere.
"""
import json
import re
from pathlib import Path
from typing import List

import pytest
import torch
import yaml

from harness.sweep_config import parse_sweep
from test_trial import SHORT, killed_then_resumed

PROJECT_ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='needs a CUDA GPU (none on this machine)')


@pytest.mark.parametrize('gpus,backend,resources', [
    (0, 'gloo', {'CPU': 2.0}),
    (0.25, 'nccl', {'CPU': 2.0, 'GPU': 0.25}),
    (1, 'nccl', {'CPU': 2.0, 'GPU': 1.0}),
])
def test_worker_group_selects_nccl_and_gpus(gpus, backend, resources):
    from harness.sweep import worker_group

    sweep = parse_sweep({'name': 'gpu', 'resources': {
        'num_workers': 2, 'cpus_per_worker': 2, 'gpus_per_worker': gpus}}, 'gpu.yaml')
    scaling, torch_config = worker_group(sweep)
    assert scaling.num_workers == 2 and scaling.use_gpu == (gpus > 0)
    assert scaling.resources_per_worker == resources
    assert torch_config.backend == backend


def test_quickstart_gpu_shares_one_gpu_between_four_trials():
    sweep = parse_sweep(yaml.safe_load(
        (PROJECT_ROOT / 'experiments' / 'quickstart_gpu.yaml').read_text()), 'quickstart_gpu.yaml')
    assert sweep.resources.gpus_per_worker == 0.25 and sweep.max_concurrent_trials == 4
    assert sweep.seeds == [0, 1]
    assert {'fraction', 'threshold'} <= set(sweep.search_space)
    assert not any(key.endswith('max_iters') for key in sweep.overrides)  # full schedules


def train_memory_mb(log: str) -> List[int]:
    """The ``memory`` field of each ``Iter(train)`` line of an MMEngine log: the peak CUDA
    memory (MB) the iterations since the previous line allocated, which stays 0 while the model
    trains on the CPU (MMEngine writes the field wherever CUDA exists)."""
    return [int(mb) for mb in re.findall(r'Iter\(train\).*\bmemory: (\d+)', log)]


@needs_cuda
def test_a_trial_trains_on_the_gpu_and_resumes_there(tiny_dataset, tmp_path):
    work_dir = killed_then_resumed(tiny_dataset, tmp_path)
    logs = sorted((work_dir / 'stage2').glob('*/*.log'))
    assert len(logs) == 2
    # The run killed at iteration 4 logs iteration 3 (the end of the 3-batch epoch); the resumed
    # run's iterations 5-8 log no Iter(train) line (LoggerHook interval 50).
    memory = [mb for log in logs for mb in train_memory_mb(log.read_text())]
    assert memory and all(mb > 0 for mb in memory), memory
    assert 'resumed epoch: 0, iter: 4' in logs[-1].read_text()
    assert (work_dir / 'result.json').is_file()


@needs_cuda
@pytest.mark.slow
def test_two_trials_share_one_gpu_over_nccl(tiny_dataset, tmp_path):
    import ray

    from harness.sweep import main

    path = tmp_path / 'gpu.yaml'
    path.write_text(yaml.safe_dump({
        'name': 'gpu', 'data_root': str(tiny_dataset), 'overrides': SHORT,
        'search_space': {'threshold': {'grid_search': [0.3, 0.5]}},
        'resources': {'num_workers': 1, 'cpus_per_worker': 1, 'gpus_per_worker': 0.5},
        'max_concurrent_trials': 2, 'storage_path': str(tmp_path / 'sweeps')}))
    try:
        assert main([str(path)]) == 0
    finally:
        ray.shutdown()
    records = [json.loads(line) for records in
               (tmp_path / 'sweeps' / 'gpu' / 'trials').glob('*/workers.jsonl')
               for line in records.read_text().splitlines()]
    assert len(records) == 2
    assert all(r['backend'] == 'nccl' and r['cuda_device'] == 0 for r in records)
