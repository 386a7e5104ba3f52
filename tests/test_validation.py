"""Bad input never costs a run and never returns a wrong result.

Every case runs a real command line (``harness.trial``, ``harness.sweep``, ``harness.report``)
with one bad setting and checks that it stops with exit status 2 and one line naming the setting,
before any training, and that nothing was written for the refused run.
"""
import json
import socket
import time
from pathlib import Path
from typing import List

import pytest
import torch
import yaml

from harness import report as report_cli
from harness import sweep as sweep_cli
from harness import trial as trial_cli
from harness.spec import TrialSpec
from ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STAGE1 = PROJECT_ROOT / TrialSpec.stage1_config
STAGE2 = PROJECT_ROOT / TrialSpec.stage2_config
EPS_STAGE1 = PROJECT_ROOT / 'mm_configs/eps/eps_r18-tiny_1xb16-600i_shapes-64x64.py'


def refused(main, argv: List[str], capsys) -> str:
    """Runs a command line that must refuse: exit status 2, one line on stderr; returns it."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith('error: ') and '\n' not in error, error
    return error


# ------------------------------------------------------------------------------------------
# harness.trial


@pytest.fixture
def trial_args(tiny_dataset, tmp_path):
    def args(*assignments: str) -> List[str]:
        return ['--work-dir', str(tmp_path / 'trial'), f'--set=data_root={tiny_dataset}',
                *(f'--set={a}' for a in assignments)]
    return args


def split_file(tmp_path: Path, *ids: str) -> str:
    path = tmp_path / 'labeled.txt'
    path.write_text(''.join(f'{i}\n' for i in ids))
    return str(path)


def config_without(tmp_path: Path, base: Path, **replaced) -> str:
    """A config that inherits ``base`` and replaces top-level keys (e.g. custom_hooks=[])."""
    path = tmp_path / f'derived_{base.name}'
    lines = [f'_base_ = [{str(base)!r}]'] + [f'{key} = {value!r}' for key, value in
                                            replaced.items()]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


TRIAL_CASES = [
    # the spec's own values
    (['seed=-1'], 'seed -1 must be an integer in [0, 2**32)'),
    (['seed=1.5'], 'seed 1.5 must be an integer'),
    (['seed=true'], 'seed True must be an integer'),
    (['seed=4294967296'], 'seed 4294967296 must be an integer in [0, 2**32)'),
    (['fraction=abc'], "labelled_fraction 'abc' is not a number"),
    (['fraction=3/2'], 'must lie in [0, 1]'),
    (['threshold=1.0'], 'saliency_threshold 1.0 must be a number in (0, 1)'),
    (['threshold=high'], "saliency_threshold 'high' must be a number"),
    (['task=fully'], "task 'fully' is not one of ('wsss', 'ssss')"),
    (['fractoin=0.5'], "unknown key 'fractoin'"),
    (['amp=maybe'], "amp 'maybe' must be true or false"),
    (['stage1_config=nope.py'], 'stage1_config nope.py not found'),
    (['stage2=3'], 'stage2 3 must be a mapping'),
    # the stage configs
    (['stage2.optim_wrapper.optimizer.lrr=0.1'],
     "stage2 override: override key 'optim_wrapper.optimizer.lrr' does not exist"),
    (['stage1.train_cfg.max_iters=abc'], "train_cfg.max_iters='abc' does not fit"),
    (['stage1.train_cfg.max_iters=1.5'], 'so the value must be an integer'),
    (['stage2.optim_wrapper.optimizer.lr=fast'], 'so the value must be a number'),
    (['stage1.model.loss_sal.type=1'], 'so the value must be a string'),
    (['stage1.model.loss_sal.threshold=0.3'],
     'stage1.model.loss_sal.threshold is the trial\'s saliency_threshold'),
    # values out of range, refused before stage 1 trains
    (['stage1.train_cfg.max_iters=0'],
     'stage1.train_cfg.max_iters is 0, out of range: it must be an integer >= 1'),
    (['stage2.train_dataloader.batch_size=0'],
     'stage2.train_dataloader.batch_size is 0, out of range: it must be an integer >= 1'),
    (['stage2.optim_wrapper.optimizer.lr=-0.01'],
     'stage2.optim_wrapper.optimizer.lr is -0.01, out of range: it must be a number > 0'),
    (['stage1.optim_wrapper.optimizer.lr=0'],
     'stage1.optim_wrapper.optimizer.lr is 0, out of range: it must be a number > 0'),
    (['stage1.train_dataloader.num_workers=-1'],
     'stage1.train_dataloader.num_workers is -1, out of range: it must be an integer >= 0'),
    (['stage2.train_cfg.val_interval=0'],
     'stage2.train_cfg.val_interval is 0, out of range: it must be an integer >= 1'),
    (['stage1.default_hooks.checkpoint.interval=0'],
     'stage1.default_hooks.checkpoint.interval is 0, out of range: it must be an integer >= 1, '
     'or -1 (no checkpoints)'),
    (['stage2.default_hooks.logger.interval=-5'],
     'stage2.default_hooks.logger.interval is -5, out of range: it must be an integer >= 1'),
    (['stage2.param_scheduler.0.begin=700'],
     'stage2.param_scheduler.0.end is 600, out of range: it must be greater than '
     'param_scheduler.0.begin (700)'),
    (['stage1.optim_wrapper.optimizer.weight_decay=-0.1'],
     'stage1.optim_wrapper.optimizer.weight_decay is -0.1, out of range: it must be a number '
     '>= 0'),
    # settings the trial would ignore
    (['task=wsss', 'fraction=1/8'], 'labelled_fraction is set, but task is wsss'),
    ([f'stage1_config={EPS_STAGE1}', 'threshold=0.3'],
     'saliency_threshold is set, but'),
    # stage 2 from stage 1's backbone needs one backbone architecture (the VOC configs' differ)
    (['stage2_init_from_stage1=true',
      'stage1_config=mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py',
      'stage2_config=mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py'],
     "stage2_init_from_stage1 is set, but the backbones of"),
]


@pytest.mark.parametrize('assignments,expected', TRIAL_CASES,
                         ids=[' '.join(case[0]) for case in TRIAL_CASES])
def test_trial_refuses_a_bad_setting_before_anything_runs(assignments, expected, trial_args,
                                                          tmp_path, capsys):
    error = refused(trial_cli.main, trial_args(*assignments), capsys)
    assert expected in error
    assert not (tmp_path / 'trial').exists()


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='with CUDA, amp=true is valid: a whole default trial would train')
def test_trial_refuses_amp_without_cuda(trial_args, tmp_path, capsys):
    error = refused(trial_cli.main, trial_args('amp=true'), capsys)
    assert 'amp is true, but this machine has no CUDA GPU' in error
    assert not (tmp_path / 'trial').exists()


def test_trial_refuses_a_missing_or_foreign_split_file(trial_args, tmp_path, capsys):
    missing = refused(trial_cli.main, trial_args(f'split_file={tmp_path / "absent.txt"}'), capsys)
    assert 'absent.txt not found' in missing
    unknown = refused(trial_cli.main, trial_args(
        f'split_file={split_file(tmp_path, "shapes_000000", "not_an_id")}'), capsys)
    assert "names 1 ids that are not in the training set, e.g. ['not_an_id']" in unknown
    assert not (tmp_path / 'trial').exists()


def test_trial_refuses_an_empty_split_file(trial_args, tmp_path, capsys):
    empty = tmp_path / 'labeled.txt'
    empty.write_text('\n  \n')  # blank lines only: no id
    error = refused(trial_cli.main, trial_args(f'split_file={empty}'), capsys)
    assert f'split file {empty} lists no ids' in error
    assert not (tmp_path / 'trial').exists()


def test_trial_refuses_split_file_with_a_fraction_or_with_wsss(trial_args, tmp_path, capsys):
    labelled = split_file(tmp_path, 'shapes_000000')
    both = refused(trial_cli.main, trial_args(f'split_file={labelled}', 'fraction=1/2'), capsys)
    assert 'both split_file and labelled_fraction are set' in both
    wsss = refused(trial_cli.main, trial_args(f'split_file={labelled}', 'task=wsss'), capsys)
    assert 'split_file is set, but task is wsss' in wsss


def test_trial_refuses_a_mistyped_data_root_instead_of_generating_data_there(tmp_path, capsys):
    typo = tmp_path / 'shapes_vco'
    error = refused(trial_cli.main, ['--work-dir', str(tmp_path / 'trial'),
                                     f'--set=data_root={typo}'], capsys)
    assert f'dataset folder {typo} (data_root) not found' in error
    assert f'harness.data.synthetic --out {typo}' in error
    assert not typo.exists() and not (tmp_path / 'trial').exists()


def test_trial_refuses_a_stage1_config_that_writes_no_pseudo_masks(trial_args, tmp_path, capsys):
    no_hook = config_without(tmp_path, STAGE1, custom_hooks=[])
    error = refused(trial_cli.main, trial_args(f'stage1_config={no_hook}'), capsys)
    assert 'has no PAMRHook in custom_hooks' in error


def test_trial_refuses_a_stage2_config_without_its_two_parts(trial_args, tmp_path, capsys):
    from mmengine.config import Config
    cfg = Config.fromfile(str(STAGE2))
    plain = tmp_path / 'plain_stage2.py'
    values = {key: value for key, value in cfg.to_dict().items()
              if key not in ('labelled_dataset', 'pseudo_labelled_dataset')}
    Config(values).dump(str(plain))
    error = refused(trial_cli.main, trial_args(f'stage2_config={plain}'), capsys)
    assert "has no ['labelled_dataset', 'pseudo_labelled_dataset']" in error


def test_trial_refuses_bad_experiment_files_and_assignments(tmp_path, capsys):
    assert 'experiment file' in refused(trial_cli.main, [str(tmp_path / 'absent.yaml')], capsys)
    experiment = tmp_path / 'exp.yaml'
    experiment.write_text('task: ssss\nlabeled_fraction: 0.5\n')
    assert "unknown key 'labeled_fraction'" in refused(trial_cli.main, [str(experiment)], capsys)
    assert 'is not of the form key=value' in refused(trial_cli.main, ['--set', 'seed'], capsys)


def test_a_finished_trial_of_another_spec_is_refused_not_returned(trial_args, tiny_dataset,
                                                                  tmp_path, capsys):
    """The wrong-result case: a work dir that holds a finished trial of fraction 1/8, seed 0."""
    work_dir = tmp_path / 'trial'
    spec, _ = trial_cli.load_spec(None, [f'data_root={tiny_dataset}', 'fraction=1/8'])
    work_dir.mkdir()
    (work_dir / trial_cli.SPEC_FILE).write_text(json.dumps(spec.resolved().to_dict()))
    (work_dir / 'result.json').write_text(json.dumps({'val/mIoU': 12.3, 'seed': 0}))
    error = refused(trial_cli.main, trial_args('fraction=1/2', 'seed=3'), capsys)
    assert 'holds a trial of another spec' in error
    assert 'labelled_fraction: 0.125 there, 0.5 here' in error and 'seed: 0 there, 3 here' in error
    assert json.loads((work_dir / 'result.json').read_text()) == {'val/mIoU': 12.3, 'seed': 0}


def test_trial_output_without_a_recorded_spec_is_refused(trial_args, tmp_path, capsys):
    (tmp_path / 'trial').mkdir()
    (tmp_path / 'trial' / 'result.json').write_text('{}')
    assert 'no spec.json' in refused(trial_cli.main, trial_args(), capsys)


# ------------------------------------------------------------------------------------------
# harness.sweep (--check and real starts)


def write_sweep(tmp_path: Path, text: str = '', **values) -> Path:
    raw = {'name': 'bad', 'search_space': {'threshold': {'grid_search': [0.3, 0.5]}},
           'storage_path': str(tmp_path / 'sweeps')}
    raw.update(values)
    path = tmp_path / 'sweep.yaml'
    path.write_text(text or yaml.safe_dump(raw, sort_keys=False))
    return path


SWEEP_CASES = [
    ({'seeds': [-1]}, 'seeds: [-1] is not valid'),
    ({'seeds': [0.5]}, 'seeds: [0.5] is not valid'),
    ({'seeds': [0, 0]}, 'distinct seeds'),
    ({'num_samples': 2}, 'every repeat of a grid point would train the same trial'),
    ({'resources': {'gpus_per_worker': 64}},
     'resources.gpus_per_worker: 64 GPU(s) per worker'),
    ({'resources': {'gpus_per_worker': 1.5}}, 'a fraction of one GPU'),
    ({'resources': {'cpus_per_worker': 512}}, 'resources.cpus_per_worker: 512 CPU(s) per worker'),
    ({'resources': {'num_workers': 512, 'cpus_per_worker': 1}},
     'one trial needs resources.num_workers 512'),
    ({'amp': True}, 'amp is true, but resources.gpus_per_worker is 0'),
    ({'overrides': {'stage1.train_cfg.max_iters': 'abc'}}, "train_cfg.max_iters='abc' does not fit"),
    ({'overrides': {'stage2.model.decode_head.num_clases': 6}},
     "override key 'model.decode_head.num_clases' does not exist"),
    ({'overrides': {'stage1.model.loss_sal.threshold': 0.4}},
     "stage1.model.loss_sal.threshold is the trial's saliency_threshold"),
    ({'stage1_config': str(EPS_STAGE1)}, 'saliency_threshold is set, but'),
    ({'task': 'wsss', 'search_space': {'fraction': {'grid_search': ['1/8', '1/2']}}},
     'labelled_fraction is set, but task is wsss'),
    ({'search_space': {'threshold': {'grid_search': [0.5, 0.5]}}}, 'would train the same trial'),
    ({'search_space': {'fraction': {'grid_search': ['1/2', 0.5]}}}, 'would train the same trial'),
    ({'search_space': {'fraction': {'grid_search': [0, '1/2']}}, 'task': 'ssss',
      'saliency_threshold': 0.5}, None),  # fraction 0 is WSSS: a valid row
    ({'split_file': '/absent/labeled.txt', 'search_space': {}}, 'labeled.txt not found'),
    ({'mlflow': {'tracking_uri': 'sqlite:////absent_folder/mlflow.db'}},
     'folder /absent_folder does not exist'),
]


@pytest.mark.parametrize('values,expected', SWEEP_CASES,
                         ids=[str(case[0])[:60] for case in SWEEP_CASES])
def test_sweep_check_refuses_what_would_fail_or_hang_later(values, expected, tiny_dataset,
                                                            tmp_path, capsys):
    path = write_sweep(tmp_path, data_root=str(tiny_dataset), **values)
    argv = [str(path), '--check']
    if expected is None:
        assert sweep_cli.main(argv) == 0
        return
    assert expected in refused(sweep_cli.main, argv, capsys)
    assert not (tmp_path / 'sweeps').exists()


def test_sweep_check_refuses_a_mistyped_data_root(tmp_path, capsys):
    typo = tmp_path / 'shapes_vco'
    error = refused(sweep_cli.main, [str(write_sweep(tmp_path, data_root=str(typo))), '--check'],
                    capsys)
    assert f'dataset folder {typo} (data_root) not found' in error and not typo.exists()


def test_sweep_file_with_a_key_given_twice_is_refused(tiny_dataset, tmp_path, capsys):
    text = (f'name: twice\ndata_root: {tiny_dataset}\nstorage_path: {tmp_path / "sweeps"}\n'
            'search_space:\n  threshold: {grid_search: [0.3]}\n'
            'overrides:\n  stage2.train_cfg.max_iters: 10\n  stage2.train_cfg.max_iters: 20\n')
    error = refused(sweep_cli.main, [str(write_sweep(tmp_path, text)), '--check'], capsys)
    assert "(line 8, column 3): key 'stage2.train_cfg.max_iters' is given twice" in error


@pytest.mark.parametrize('storage,expected', [
    ('file', 'is a file, not a folder'),
    ('under_file', 'cannot be written'),
    ('/proc/1/sweeps', 'cannot be written'),
])
def test_sweep_storage_path_must_be_a_writable_folder(storage, expected, tiny_dataset, tmp_path,
                                                      capsys):
    (tmp_path / 'file').write_text('not a folder')
    paths = {'file': tmp_path / 'file', 'under_file': tmp_path / 'file' / 'sweeps'}
    path = write_sweep(tmp_path, data_root=str(tiny_dataset),
                       storage_path=str(paths.get(storage, storage)))
    assert expected in refused(sweep_cli.main, [str(path), '--check'], capsys)


def test_http_tracking_uri_that_nobody_answers_is_refused_quickly(tiny_dataset, tmp_path, capsys):
    uri = f'http://127.0.0.1:{free_port()}'
    path = write_sweep(tmp_path, data_root=str(tiny_dataset), mlflow={'tracking_uri': uri})
    started = time.monotonic()
    error = refused(sweep_cli.main, [str(path), '--check'], capsys)
    assert f'mlflow.tracking_uri {uri}: the MLflow server did not answer' in error
    assert time.monotonic() - started < 30


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / 'sweeps').exists(), sorted((tmp_path / 'sweeps').rglob('*'))


def test_busy_dashboard_port_is_refused_before_anything_is_written(tiny_dataset, tmp_path,
                                                                   capsys):
    with socket.socket() as holder:
        holder.bind(('127.0.0.1', 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = write_sweep(tmp_path, data_root=str(tiny_dataset),
                           ray={'dashboard_port': port})
        error = refused(sweep_cli.main, [str(path)], capsys)
    assert f'ray.dashboard_port {port}: 127.0.0.1:{port} is in use' in error
    assert_nothing_written(tmp_path)


def test_unreachable_cluster_is_refused_quickly_before_anything_is_written(tiny_dataset,
                                                                          tmp_path, capsys):
    address = f'127.0.0.1:{free_port()}'
    path = write_sweep(tmp_path, data_root=str(tiny_dataset))
    started = time.monotonic()
    error = refused(sweep_cli.main, [str(path), '--address', address], capsys)
    assert f"ray.address '{address}': no Ray cluster answered" in error
    assert time.monotonic() - started < 30
    assert_nothing_written(tmp_path)


def test_resume_of_a_sweep_that_never_started_says_so(tiny_dataset, tmp_path, capsys):
    path = write_sweep(tmp_path, data_root=str(tiny_dataset))
    assert 'nothing to resume' in refused(sweep_cli.main, [str(path), '--resume'], capsys)
    assert_nothing_written(tmp_path)


# ------------------------------------------------------------------------------------------
# harness.report


def test_report_does_not_create_a_store_for_a_mistyped_uri(tmp_path, capsys):
    uri = f'sqlite:///{tmp_path}/typo/mlflow.db'
    error = refused(report_cli.main, ['quickstart', '--tracking-uri', uri], capsys)
    assert f'--tracking-uri {uri}: no MLflow store at' in error
    assert not (tmp_path / 'typo').exists()


def test_report_refuses_a_server_nobody_answers(tmp_path, capsys):
    uri = f'http://127.0.0.1:{free_port()}'
    assert 'did not answer' in refused(report_cli.main, ['quickstart', '--tracking-uri', uri],
                                       capsys)


# ------------------------------------------------------------------------------------------
# harness.pseudo_masks


@pytest.fixture
def stage1_config_file(tiny_dataset, tmp_path) -> Path:
    """The bundled stage-1 config pointed at the tiny dataset, as a trial dumps it."""
    from mmengine.config import Config

    from harness.stage_configs import set_data_root
    cfg = Config.fromfile(str(STAGE1))
    set_data_root(cfg, str(tiny_dataset))
    path = tmp_path / 'stage1_config.py'
    cfg.dump(str(path))
    return path


def state_dict_file(config: Path, path: Path) -> Path:
    """A checkpoint (MMEngine's layout) of a freshly built model of ``config``."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import harness.eps  # noqa: F401
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(Config.fromfile(str(config)).model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def test_pseudo_masks_refuse_a_checkpoint_of_another_network(stage1_config_file, tmp_path,
                                                             capsys):
    from harness import pseudo_masks
    other = state_dict_file(STAGE2, tmp_path / 'stage2.pth')  # DeepLabV3+, not EPSClassifier
    out = tmp_path / 'masks'
    error = refused(pseudo_masks.main, [str(stage1_config_file), str(other), '--out', str(out),
                                        '--work-dir', str(tmp_path / 'work')], capsys)
    assert f'checkpoint {other} does not fit the model of {stage1_config_file}' in error
    assert 'weights missing' in error and 'unexpected' in error
    assert not out.exists()


def test_pseudo_masks_refuse_bad_arguments_before_writing(stage1_config_file, tmp_path, capsys):
    from harness import pseudo_masks
    own = state_dict_file(stage1_config_file, tmp_path / 'own.pth')
    work = ['--work-dir', str(tmp_path / 'work')]
    assert 'checkpoint absent.pth not found' in refused(
        pseudo_masks.main, [str(stage1_config_file), 'absent.pth', *work], capsys)
    (tmp_path / 'taken').mkdir()
    assert 'already exists' in refused(pseudo_masks.main, [
        str(stage1_config_file), str(own), '--out', str(tmp_path / 'taken'), *work], capsys)
    assert "'model.test_cfg.flipp' does not exist" in refused(pseudo_masks.main, [
        str(stage1_config_file), str(own), '--out', str(tmp_path / 'new'),
        '--cfg-options', 'model.test_cfg.flipp=True', *work], capsys)
    assert not (tmp_path / 'new').exists()


def test_pseudo_masks_accept_the_checkpoint_of_their_network(stage1_config_file, tmp_path,
                                                             capsys):
    from harness import pseudo_masks
    own = state_dict_file(stage1_config_file, tmp_path / 'own.pth')
    out = tmp_path / 'masks'
    try:
        metrics = pseudo_masks.main([str(stage1_config_file), str(own), '--out', str(out),
                                     '--work-dir', str(tmp_path / 'work')])
    except SystemExit as refusal:
        pytest.fail(f'refused (exit {refusal.code}): {capsys.readouterr().err.strip()}')
    assert len(list(out.glob('*.png'))) == 12  # the tiny dataset's train split
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert 'NaN' not in printed
    assert json.loads(printed) == json.loads(json.dumps(metrics))


@pytest.mark.parametrize('data_root_given', [True, False], ids=['named', 'the-configs-own'])
def test_trial_refuses_a_bundled_dataset_of_an_older_generator(data_root_given, tiny_dataset,
                                                               tmp_path, monkeypatch, capsys):
    """A data/shapes_voc that older code wrote (generator_version 1, no SaliencyErrors/) passed
    the checks, and stage 1 failed in IRDDiagnosticsHook.before_train."""
    import shutil
    old = tmp_path / 'data' / 'shapes_voc'
    shutil.copytree(tiny_dataset, old)
    shutil.rmtree(old / 'SaliencyErrors')
    info = json.loads((old / 'dataset_info.json').read_text())
    (old / 'dataset_info.json').write_text(json.dumps({**info, 'generator_version': 1}))
    experiment = tmp_path / 'experiment.yaml'
    experiment.write_text(yaml.safe_dump({'stage1_config': str(STAGE1),
                                          'stage2_config': str(STAGE2)}))
    monkeypatch.chdir(tmp_path)  # where the configs' own data_root, data/shapes_voc, is found
    before = sorted(tmp_path.rglob('*'))
    argv = [str(experiment), '--work-dir', str(tmp_path / 'trial')]
    error = refused(trial_cli.main, argv + [f'--set=data_root={old}'] * data_root_given, capsys)
    named = 'data_root' if data_root_given else f'data_root of {STAGE1}'
    assert f'dataset folder {old} ({named}): {old} holds a synthetic dataset of ' \
           'generator_version 1' in error
    assert 'remove that folder to regenerate it' in error
    assert sorted(tmp_path.rglob('*')) == before
