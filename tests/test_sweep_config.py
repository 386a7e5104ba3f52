"""Sweep files: parsing, the errors a user meets before anything starts, the grid, Tune's space."""
import json
from pathlib import Path

import pytest
import yaml

from harness.sweep_config import (SweepConfigError, check_grid, check_resources, grid_axes,
                                  grid_points, load_sweep, parse_sweep)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((PROJECT_ROOT / 'experiments').glob('*.yaml'))


def sweep_of(**values):
    """A small valid sweep mapping with ``values`` added or replaced."""
    raw = {'name': 'unit', 'search_space': {'threshold': {'grid_search': [0.3, 0.5]}}}
    raw.update(values)
    return raw


def error_of(raw, tmp_path=None, check=False) -> str:
    with pytest.raises(SweepConfigError) as caught:
        sweep = parse_sweep(raw, 'sweep.yaml', storage_path=str(tmp_path) if tmp_path else None)
        if check:
            check_grid(sweep)
    return str(caught.value)


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_sweep_files_parse(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem
    assert sweep.search_space
    assert Path(sweep.spec['stage1_config']).is_absolute()
    assert Path(sweep.spec['stage1_config']).is_file()


def test_quickstart_is_four_cpu_trials_that_check(tiny_dataset, tmp_path):
    raw = yaml.safe_load((PROJECT_ROOT / 'experiments' / 'quickstart.yaml').read_text())
    raw['data_root'] = str(tiny_dataset)
    sweep = parse_sweep(raw, 'quickstart.yaml', storage_path=str(tmp_path))
    assert check_grid(sweep) >= 4
    assert sweep.resources.gpus_per_worker == 0
    thresholds = {point['threshold'] for point in grid_points(sweep)}
    assert len(thresholds) == 2


@pytest.mark.parametrize('name', ['ssss_fractions', 'saliency_thresholds'])
def test_voc_sweeps_say_where_the_dataset_is_missing(name, tmp_path):
    if (PROJECT_ROOT / 'data' / 'VOCdevkit' / 'VOC2012').exists():
        pytest.skip('VOC is present here')
    sweep = load_sweep(PROJECT_ROOT / 'experiments' / f'{name}.yaml', storage_path=str(tmp_path))
    with pytest.raises(SweepConfigError) as caught:
        check_grid(sweep)
    message = str(caught.value)
    assert 'VOCdevkit/VOC2012' in message and 'not found' in message
    assert 'JPEGImages' in message and 'SALImages' in message  # the expected layout


def test_ssss_fractions_is_the_papers_grid():
    sweep = load_sweep(PROJECT_ROOT / 'experiments' / 'ssss_fractions.yaml')
    assert sweep.search_space['fraction'] == ('grid_search', ['1/16', '1/8', '1/4', '1/2'])
    assert sweep.resources.gpus_per_worker >= 1
    assert 'r101' in sweep.spec['stage2_config']


def test_unknown_top_level_key_names_valid_keys():
    message = error_of(sweep_of(searchspace={}))
    assert "'searchspace'" in message
    assert 'search_space' in message and 'stage1_config' in message


def test_missing_or_bad_name():
    assert 'name' in error_of({'search_space': {}})
    assert 'folder name' in error_of(sweep_of(name='a/b'))


def test_unknown_distribution_lists_the_valid_ones():
    message = error_of(sweep_of(search_space={'threshold': {'normal': [0.5, 0.1]}}))
    assert "search_space.threshold" in message and "'normal'" in message
    assert all(name in message for name in ('grid_search', 'choice', 'uniform', 'loguniform'))


@pytest.mark.parametrize('domain, expected', [
    ({'uniform': [0.7, 0.3]}, 'low < high'),
    ({'uniform': [0.3]}, 'low < high'),
    ({'loguniform': [0, 0.1]}, '> 0'),
    ({'grid_search': []}, 'non-empty list'),
    ({'grid_search': [0.3], 'choice': [0.5]}, 'one of'),
])
def test_impossible_domains(domain, expected):
    assert expected in error_of(sweep_of(search_space={'threshold': domain}))


@pytest.mark.parametrize('key, value, expected', [
    ('resources', {'num_workers': 'two'}, 'resources.num_workers'),
    ('resources', {'num_workers': 0}, 'resources.num_workers'),
    ('resources', {'gpus': 1}, 'gpus_per_worker'),
    ('num_samples', 0, 'num_samples'),
    ('max_concurrent_trials', 1.5, 'max_concurrent_trials'),
    ('failure', {'max_failures': -2}, 'failure.max_failures'),
    ('ray', {'dashboard_port': 70000}, 'ray.dashboard_port'),
    ('ray', {'include_dashboard': 'yes'}, 'true or false'),
    ('storage_path', 's3://bucket/sweeps', 'storage_path'),
    ('mlflow', {'uri': 'x'}, 'tracking_uri'),
    ('overrides', ['a=1'], 'overrides'),
])
def test_wrong_types_and_values_name_the_key(key, value, expected):
    assert expected in error_of(sweep_of(**{key: value}))


def test_scheduler_choices():
    assert 'fifo' in error_of(sweep_of(scheduler='hyperband'))
    assert 'scheduler.grace_period' in error_of(sweep_of(scheduler={'type': 'asha', 'max_t': 9}))
    assert 'only apply' in error_of(sweep_of(scheduler={'type': 'fifo', 'max_t': 9}))
    sweep = parse_sweep(sweep_of(scheduler={'type': 'asha', 'grace_period': 10, 'max_t': 100}),
                        'sweep.yaml')
    assert (sweep.scheduler.type, sweep.scheduler.reduction_factor) == ('asha', 4.0)


def test_a_key_is_either_fixed_or_searched():
    message = error_of(sweep_of(overrides={'threshold': 0.5}))
    assert "['threshold']" in message and 'both in overrides and in search_space' in message


def test_seeds_are_a_grid_axis_and_exclusive_with_seed(tmp_path):
    sweep = parse_sweep(sweep_of(seeds=[0, 1, 2], overrides={'stage2.train_cfg.max_iters': 5}),
                        'sweep.yaml', storage_path=str(tmp_path))
    points = list(grid_points(sweep))
    assert len(points) == 6
    assert {(p['threshold'], p['seed']) for p in points} == {
        (t, s) for t in (0.3, 0.5) for s in (0, 1, 2)}
    assert all(p['stage2.train_cfg.max_iters'] == 5 for p in points)
    assert grid_axes(sweep) == {'threshold': [0.3, 0.5], 'seed': [0, 1, 2]}
    assert 'seed is set both' in error_of(sweep_of(seeds=[0], seed=1))
    assert 'non-empty list of integers' in error_of(sweep_of(seeds=[0.5]))


def test_continuous_axes_are_checked_at_both_bounds(tiny_dataset, tmp_path):
    raw = sweep_of(data_root=str(tiny_dataset),
                   search_space={'threshold': {'uniform': [0.3, 1.5]}})
    message = error_of(raw, tmp_path, check=True)
    assert "'threshold': 1.5" in message and 'saliency_threshold' in message


def test_unknown_search_key_names_valid_keys(tiny_dataset, tmp_path):
    raw = sweep_of(data_root=str(tiny_dataset), search_space={'thresh': {'choice': [0.3]}})
    message = error_of(raw, tmp_path, check=True)
    assert "'thresh'" in message and 'saliency_threshold' in message


def test_impossible_fraction_is_named(tiny_dataset, tmp_path):
    raw = sweep_of(data_root=str(tiny_dataset),
                   search_space={'fraction': {'grid_search': ['1/8', '3/2']}})
    assert '3/2' in error_of(raw, tmp_path, check=True)


def test_missing_stage_key_suggests_near_matches(tiny_dataset, tmp_path):
    raw = sweep_of(data_root=str(tiny_dataset),
                   overrides={'stage2.optim_wrapper.optimizer.learning_rate': 0.1})
    message = error_of(raw, tmp_path, check=True)
    assert 'stage2' in message and 'optim_wrapper.optimizer.learning_rate' in message
    assert 'optim_wrapper.optimizer.lr' in message  # did you mean


def test_missing_dataset_names_folder_and_layout(tmp_path):
    raw = sweep_of(stage1_config='mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py',
                   stage2_config='mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-'
                                 '512x512.py', data_root=str(tmp_path / 'VOC2012'))
    message = error_of(raw, tmp_path, check=True)
    assert str(tmp_path / 'VOC2012') in message and 'ImageSets/Segmentation' in message


def test_paths_are_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    sweep = parse_sweep(sweep_of(data_root='data/x', search_space={
        'split_file': {'choice': ['splits/a.txt']}}), 'sweep.yaml', storage_path='out')
    assert sweep.spec['data_root'] == str(PROJECT_ROOT / 'data' / 'x')
    assert sweep.search_space['split_file'] == ('choice', [str(PROJECT_ROOT / 'splits/a.txt')])
    assert sweep.storage_path == str(PROJECT_ROOT / 'out')
    assert Path(sweep.spec['stage2_config']).is_absolute()  # TrialSpec's default, resolved


def test_tune_param_space_maps_each_distribution():
    from ray.tune.search.sample import Categorical, Float

    from harness.sweep import param_space

    sweep = parse_sweep(sweep_of(
        search_space={'threshold': {'grid_search': [0.3, 0.5]},
                      'fraction': {'choice': ['1/8', '1/4']},
                      'stage2.optim_wrapper.optimizer.lr': {'loguniform': [1e-4, 1e-2]},
                      'stage1.model.loss_sal.lam': {'uniform': [0.1, 0.9]}},
        overrides={'stage2.train_cfg.max_iters': 5}, seeds=[0, 1]), 'sweep.yaml')
    space = param_space(sweep)
    assert space['threshold'] == {'grid_search': [0.3, 0.5]}
    assert space['seed'] == {'grid_search': [0, 1]}
    assert isinstance(space['fraction'], Categorical)
    lr = space['stage2.optim_wrapper.optimizer.lr']
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert space['stage2.train_cfg.max_iters'] == 5


def test_command_line_check_reports_errors_without_traceback(tiny_dataset, tmp_path, capsys):
    from harness.sweep import main

    bad, good = tmp_path / 'bad.yaml', tmp_path / 'good.yaml'
    bad.write_text(yaml.safe_dump(sweep_of(resources={'num_workers': -1})))
    good.write_text(yaml.safe_dump(sweep_of(data_root=str(tiny_dataset))))
    with pytest.raises(SystemExit) as exited:
        main([str(bad), '--check'])
    assert exited.value.code == 2
    assert 'resources.num_workers' in capsys.readouterr().err
    assert main([str(good), '--check', '--storage-path', str(tmp_path)]) == 0
    assert '2 grid point(s)' in capsys.readouterr().out
    assert not (tmp_path / 'unit').exists()  # --check starts nothing


def test_command_line_check_writes_nothing_not_even_the_bundled_dataset(tmp_path, monkeypatch,
                                                                          capsys):
    from harness.sweep import main

    monkeypatch.chdir(tmp_path)  # the bundled configs' data_root, data/shapes_voc, is under it
    configs = PROJECT_ROOT / 'mm_configs'
    stage1 = configs / 'eps' / 'epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
    stage2 = configs / 'stage2' / 'deeplabv3plus_r18-tiny_1xb16-600i_shapes-64x64.py'
    (tmp_path / 'sweep.yaml').write_text(yaml.safe_dump(sweep_of(stage1_config=str(stage1),
                                                                 stage2_config=str(stage2))))
    assert main(['sweep.yaml', '--check', '--storage-path', 'sweeps']) == 0
    assert '2 grid point(s)' in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == ['sweep.yaml']


def test_an_existing_sweep_needs_resume_and_the_same_file(tmp_path):
    from harness.sweep import check_sweep_folder

    sweep = parse_sweep(sweep_of(), 'sweep.yaml', storage_path=str(tmp_path))
    with pytest.raises(SweepConfigError, match='nothing to resume'):
        check_sweep_folder(sweep, resume=True)
    check_sweep_folder(sweep, resume=False)
    sweep.experiment_dir.mkdir(parents=True)
    (sweep.experiment_dir / 'sweep.json').write_text(json.dumps(
        {'sweep': sweep_of(num_samples=2), 'tracking': {}}))
    with pytest.raises(SweepConfigError, match='add --resume'):
        check_sweep_folder(sweep, resume=False)
    with pytest.raises(SweepConfigError, match=r"changed since .* \['num_samples'\]"):
        check_sweep_folder(sweep, resume=True)
    (sweep.experiment_dir / 'sweep.json').write_text(json.dumps(
        {'sweep': sweep.raw, 'tracking': {}}))
    check_sweep_folder(sweep, resume=True)


def test_uniform_and_loguniform_axes_sample_their_own_distribution():
    """Half the draws of loguniform [1e-4, 1e-2] lie below its geometric mean 1e-3 (a uniform's:
    9 %); half the draws of uniform [0.1, 0.9] lie below 0.5 (a loguniform's: log 5 / log 9 =
    73 %)."""
    import numpy as np

    from harness.sweep import param_space

    lr, lam = 'stage2.optim_wrapper.optimizer.lr', 'stage1.model.loss_sal.lam'
    space = param_space(parse_sweep(sweep_of(search_space={
        lr: {'loguniform': [1e-4, 1e-2]}, lam: {'uniform': [0.1, 0.9]}}), 'sweep.yaml'))

    def share_below(key: str, value: float, low: float, high: float) -> float:
        draws = np.asarray(space[key].sample(size=4000, random_state=np.random.default_rng(0)))
        assert low <= draws.min() and draws.max() <= high
        return float(np.mean(draws < value))

    assert share_below(lr, 1e-3, 1e-4, 1e-2) == pytest.approx(0.5, abs=0.03)
    assert share_below(lam, 0.5, 0.1, 0.9) == pytest.approx(0.5, abs=0.03)


def test_asha_decides_on_val_miou_at_stage2_iteration_rungs():
    """grace_period 10, reduction_factor 2, max_t 40: nothing stops before val/iter 10; at a rung
    a trial below the median of the results recorded there stops; every trial stops at 40. The
    metric is Tune's (TuneConfig), not the scheduler's own."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    from harness.sweep import TUNE_METRIC, scheduler

    asha = scheduler(parse_sweep(sweep_of(scheduler={
        'type': 'asha', 'grace_period': 10, 'reduction_factor': 2, 'max_t': 40}), 'sweep.yaml'))
    assert isinstance(asha, ASHAScheduler)
    assert asha.set_search_properties(TUNE_METRIC, 'max')  # refused if it had a metric already
    trials = {name: Trial('tune_trial', stub=True, trial_id=name) for name in 'abcd'}
    for trial in trials.values():
        asha.on_trial_add(None, trial)

    def decision(name: str, iteration: int, miou: float) -> str:
        return asha.on_trial_result(None, trials[name], {'val/iter': iteration, TUNE_METRIC: miou})

    go_on, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    assert [decision('a', 5, 60.0), decision('b', 5, 10.0)] == [go_on, go_on]
    # rung 10: a is first; c is below 60; d is above the median 50 of (60, 40)
    assert [decision('a', 10, 60.0), decision('c', 10, 40.0), decision('d', 10, 52.0)] == \
        [go_on, stop, go_on]
    assert decision('a', 40, 60.0) == stop
    assert isinstance(scheduler(parse_sweep(sweep_of(), 'sweep.yaml')), FIFOScheduler)


@pytest.mark.parametrize('resources, limit, cluster, expected', [
    # a trial holds 3 x 1 CPU for its workers + 0.01 for itself: 9 CPUs hold 2, 9.03 hold 3
    ({'num_workers': 3, 'cpus_per_worker': 1}, None, {'CPU': 9.0}, 2),
    ({'num_workers': 3, 'cpus_per_worker': 1}, None, {'CPU': 9.03}, 3),
    # 2 x 0.5 GPU = 1 GPU a trial: 3 GPUs hold 3 (the CPUs: 64 / 4.01 -> 15)
    ({'num_workers': 2, 'cpus_per_worker': 2, 'gpus_per_worker': 0.5}, None,
     {'CPU': 64.0, 'GPU': 3.0}, 3),
    # 7 CPUs / 3.01 -> 2, fewer than the GPUs hold (2 / 0.5 -> 4)
    ({'num_workers': 2, 'cpus_per_worker': 1.5, 'gpus_per_worker': 0.25}, None,
     {'CPU': 7.0, 'GPU': 2.0}, 2),
    # nothing fits yet (Ray waits for nodes): one at a time
    ({'num_workers': 4, 'cpus_per_worker': 1}, None, {'CPU': 2.0}, 1),
    ({'num_workers': 1, 'cpus_per_worker': 1, 'gpus_per_worker': 1}, None, {'CPU': 8.0}, 1),
    # the sweep's own limit wins
    ({'num_workers': 1, 'cpus_per_worker': 1}, 3, {'CPU': 64.0}, 3),
], ids=['cpu-bound', 'cpu-exact', 'gpu-bound', 'cpu-bound-with-gpus', 'none-fits',
        'no-gpus', 'sweep-limit'])
def test_max_concurrent_trials_is_what_the_cluster_holds(resources, limit, cluster, expected):
    from harness.sweep import max_concurrent_trials

    sweep = parse_sweep(sweep_of(resources=resources, max_concurrent_trials=limit), 'sweep.yaml')
    assert max_concurrent_trials(sweep, cluster) == expected


@pytest.mark.parametrize('nodes, fit', [
    ([{'CPU': 17, 'GPU': 4}], 4),                               # one node: 4 workers
    ([{'CPU': 9, 'GPU': 2}, {'CPU': 8, 'GPU': 2}], 4),          # 2 + 2
    ([{'CPU': 13, 'GPU': 3}, {'CPU': 4, 'GPU': 1}], 4),         # 3 + 1
    # enough CPUs (17) and GPUs (4) in all, but not on the same nodes: 1 + 1 + 0
    ([{'CPU': 4, 'GPU': 2}, {'CPU': 4, 'GPU': 2}, {'CPU': 9, 'GPU': 0}], 2),
    ([{'CPU': 6, 'GPU': 2}, {'CPU': 11, 'GPU': 2}], 3),         # 1 (CPU-bound) + 2
])
def test_check_resources_packs_workers_per_node(nodes, fit):
    """A worker's CPUs and GPUs come from one node: totals that suffice may still not fit."""
    sweep = parse_sweep(sweep_of(resources={'num_workers': 4, 'cpus_per_worker': 4,
                                            'gpus_per_worker': 1}), 'sweep.yaml')
    if fit >= 4:
        check_resources(sweep, nodes, 'the cluster')
    else:
        with pytest.raises(SweepConfigError, match=r'num_workers 4 worker\(s\) of 4 CPU \+ 1 GPU '
                           rf'each on one node, but the nodes of the cluster .* hold {fit};'):
            check_resources(sweep, nodes, 'the cluster')
