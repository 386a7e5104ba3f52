import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Union

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from fault_injection import python_path, write_stage_config
from harness.trial import TrialSpec, load_spec, main, run_trial

PROJECT_ROOT = Path(__file__).resolve().parents[1]

SHORT = {f'{stage}.{key}': value
         for stage in ('stage1', 'stage2')
         for key, value in (('train_cfg.max_iters', 8), ('train_cfg.val_interval', 8),
                            ('param_scheduler.0.end', 8),
                            ('default_hooks.checkpoint.interval', 4),
                            ('train_dataloader.batch_size', 4))}


def short_spec(data_root: Path, **values) -> TrialSpec:
    return TrialSpec(data_root=str(data_root), **values).with_overrides(SHORT)


def test_defaults_are_the_bundled_ssss_quarter_with_ird():
    spec = TrialSpec()
    assert (spec.task, spec.labelled_fraction, spec.saliency_threshold) == ('ssss', 0.25, 0.5)
    assert 'epspp-ird' in spec.stage1_config


def test_overrides_accept_short_names_fractions_and_stage_keys():
    spec = TrialSpec().with_overrides({'fraction': '1/8', 'threshold': 0.3,
                                       'stage2.optim_wrapper.optimizer.lr': 0.01})
    assert spec.labelled_fraction == 0.125 and spec.saliency_threshold == 0.3
    assert spec.stage2 == {'optim_wrapper.optimizer.lr': 0.01}


@pytest.mark.parametrize('overrides,error,match', [
    ({'labelled_fraction': -0.5}, ValueError, r'must lie in \[0, 1\]'),
    ({'labelled_fraction': '3/2'}, ValueError, r'must lie in \[0, 1\]'),
    ({'task': 'fully'}, ValueError, r"task 'fully' is not one of \('wsss', 'ssss'\)"),
    ({'saliency_threshold': 1.0}, ValueError, 'saliency_threshold'),
    ({'fractoin': 0.5}, KeyError, "unknown key 'fractoin'.*labelled_fraction"),
    ({'stage1_config': 'nope.py'}, FileNotFoundError, 'nope.py'),
])
def test_bad_values_are_rejected_by_name(overrides, error, match):
    with pytest.raises(error, match=match):
        TrialSpec().with_overrides(overrides)


def test_experiment_file_and_assignments(tmp_path):
    experiment = tmp_path / 'wsss.yaml'
    experiment.write_text('task: wsss\nthreshold: 0.4\nstage1:\n  train_cfg.max_iters: 5\n')
    spec, explicit = load_spec(str(experiment), ['seed=3', 'stage2.train_cfg.max_iters=4'])
    assert (spec.task, spec.saliency_threshold, spec.seed) == ('wsss', 0.4, 3)
    assert spec.stage1 == {'train_cfg.max_iters': 5} and spec.stage2 == {'train_cfg.max_iters': 4}
    # the spec keys the user set (stage overrides are config keys, not spec keys)
    assert explicit == ['saliency_threshold', 'seed', 'stage1', 'task']
    with pytest.raises(FileNotFoundError, match='absent.yaml'):
        load_spec(str(tmp_path / 'absent.yaml'), [])


def test_unknown_config_key_is_an_error_before_training(tiny_dataset, tmp_path):
    spec = short_spec(tiny_dataset).with_overrides({'stage1.model.loss_sal.treshold': 0.3})
    with pytest.raises(KeyError, match="did you mean.*model.loss_sal.threshold"):
        run_trial(spec, tmp_path / 'trial')
    assert not (tmp_path / 'stage1').exists()


def test_missing_pseudo_mask_folder_is_named(tiny_dataset, tmp_path):
    from harness.trial import _stage2_training_config
    with pytest.raises(FileNotFoundError, match='pseudo-mask folder .*no_masks'):
        _stage2_training_config(short_spec(tiny_dataset).resolved(), tmp_path / 'trial',
                                tmp_path / 'no_masks')


@pytest.mark.parametrize('threshold', [0.3, 0.7])
def test_stage1_irdloss_threshold_is_the_trials_saliency_threshold(threshold, tiny_dataset):
    from harness.stage_configs import stage1_config

    spec = TrialSpec(data_root=str(tiny_dataset), saliency_threshold=threshold)
    assert Config.fromfile(spec.stage1_config).model.loss_sal.threshold == 0.5  # the file's own
    loss = stage1_config(spec).model.loss_sal
    assert (loss.type, loss.threshold) == ('IRDLoss', threshold)


def test_stage1_folder_per_threshold_seed_and_stage1_setting_shared_by_equal_ones(
        tiny_dataset, tmp_path):
    from harness.stage_configs import stage1_config
    from harness.trial import stage1_run_dir

    def folder(spec: TrialSpec) -> Path:
        return stage1_run_dir(stage1_config(spec.resolved()), tmp_path)

    base = short_spec(tiny_dataset)
    folders = [folder(base.with_overrides({'threshold': threshold, 'seed': seed}))
               for threshold in (0.3, 0.5) for seed in (0, 1)]
    folders.append(folder(base.with_overrides({'stage1.train_cfg.max_iters': 9})))
    assert len(set(folders)) == 5 and {path.parent for path in folders} == {tmp_path}
    # settings that only stage 2 sees keep stage 1's folder
    assert folder(base.with_overrides({
        'threshold': 0.5, 'seed': 1, 'fraction': '1/2', 'stage2_init_from_stage1': True,
        'stage2.optim_wrapper.optimizer.lr': 0.5})) == folders[3]
    assert folder(base.with_overrides({'task': 'wsss'})) == folder(base)


def test_stage1_folder_changes_with_the_data_at_the_same_path(tmp_path):
    """Data regenerated with another seed at the same data_root is another stage-1 run (the
    old network and pseudo-masks are of other images); regenerated as it was, the same."""
    import shutil

    from harness.data.synthetic import SyntheticConfig, generate_dataset
    from harness.stage_configs import stage1_config
    from harness.trial import stage1_run_dir

    root = tmp_path / 'shapes_voc'

    def folder_for_data_of_seed(seed: int) -> Path:
        shutil.rmtree(root, ignore_errors=True)
        generate_dataset(root, SyntheticConfig(num_train=4, num_val=2, image_size=32, seed=seed))
        return stage1_run_dir(stage1_config(short_spec(root).resolved()), tmp_path / 'cache')

    first = folder_for_data_of_seed(0)
    assert folder_for_data_of_seed(1) != first
    assert folder_for_data_of_seed(0) == first


def test_labelled_fraction_of_a_split_file_is_the_fraction_it_lists(tiny_dataset, tmp_path):
    from harness.trial import labelled_fraction_of

    listed = tmp_path / 'labeled.txt'
    train_ids = ids_in(tiny_dataset / 'ImageSets' / 'Segmentation' / 'train.txt')
    listed.write_text(''.join(f'{i}\n' for i in train_ids[:5]))
    assert labelled_fraction_of(short_spec(tiny_dataset, split_file=str(listed))) == 5 / 12
    assert labelled_fraction_of(short_spec(tiny_dataset, labelled_fraction='1/8')) == 0.125
    assert labelled_fraction_of(short_spec(tiny_dataset, task='wsss')) == 0.0


COCO_STAGES = dict(
    stage1_config='mm_configs/eps/epspp-ird_r101-d8_1xb16-256k_coco14-321x321.py',
    stage2_config='mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-80k_coco14-512x512.py')


def test_sync_bn_is_named_before_and_trained_as_bn_without_cuda(monkeypatch):
    """SyncBN runs on GPUs only: trials without them are warned about (before anything starts)
    and train with BN."""
    from harness.stage_configs import stage1_config, stage2_config
    from harness.trial import _for_this_machine
    from harness.validation import sync_bn_warning

    coco = TrialSpec(**COCO_STAGES)
    warning = sync_bn_warning([coco, coco.with_overrides({'seed': 1})], 'coco.yaml')
    assert warning.startswith('warning: coco.yaml: ') and '\n' not in warning
    assert COCO_STAGES['stage1_config'] in warning and COCO_STAGES['stage2_config'] in warning
    assert sync_bn_warning([TrialSpec()], 'bundled.yaml') is None  # BN configs

    def model_of(cfg: Config) -> str:
        return json.dumps(cfg.to_dict()['model'])

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for build in (stage1_config, stage2_config):
        assert '"SyncBN"' in model_of(build(coco))
        converted = model_of(_for_this_machine(build(coco)))
        assert '"SyncBN"' not in converted and '"type": "BN"' in converted
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert '"SyncBN"' in model_of(_for_this_machine(stage1_config(coco)))


def test_a_trial_folder_has_one_writer_at_a_time(tmp_path):
    from harness.trial import WorkDirLocked, _trial_lock

    with _trial_lock(tmp_path, 0.0):
        with pytest.raises(WorkDirLocked, match=f'{tmp_path} is in use by a running trial '
                           rf'\(process {os.getpid()} on '):
            with _trial_lock(tmp_path, 0.5):
                pass
    with _trial_lock(tmp_path, 0.0):  # released with the block
        pass


def test_a_refusal_names_a_holder_that_has_just_taken_the_lock(tmp_path):
    """The holder writes its line just after it takes the lock: a trial refused in between still
    names it (two trials started at once on one folder)."""
    import fcntl
    import threading

    from harness.trial import TRIAL_LOCK, WorkDirLocked, _trial_lock

    with open(tmp_path / TRIAL_LOCK, 'a+') as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        late_line = threading.Timer(0.3, lambda: (held.write('process 12345 on elsewhere\n'),
                                                  held.flush()))
        late_line.start()
        try:
            with pytest.raises(WorkDirLocked, match=r'\(process 12345 on elsewhere\)'):
                with _trial_lock(tmp_path, 0.0):
                    pass
        finally:
            late_line.join()


def test_a_killed_trial_leaves_no_lock_behind(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; from pathlib import Path; '
         'from harness.trial import _trial_lock\n'
         'with _trial_lock(Path(sys.argv[1]), 0.0):\n'
         '    print("held", flush=True); time.sleep(600)', str(tmp_path)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        from harness.trial import WorkDirLocked, _trial_lock
        with pytest.raises(WorkDirLocked, match=f'process {holder.pid} on '):
            with _trial_lock(tmp_path, 0.0):
                pass
    finally:
        holder.kill()
        holder.wait()
    with _trial_lock(tmp_path, 0.0):
        pass


def ids_in(path: Union[str, Path]) -> List[str]:
    return Path(path).read_text().split()


@pytest.mark.parametrize('no_labels', [{'task': 'wsss'}, {'labelled_fraction': 0}],
                         ids=['wsss', 'fraction-0'])
def test_stage2_without_labelled_ids_trains_on_pseudo_masks_of_every_id(no_labels, tiny_dataset,
                                                                        tmp_path):
    from harness.trial import _stage2_training_config

    stage1_dir = tmp_path / 'stage1'
    (stage1_dir / 'pseudo_masks').mkdir(parents=True)
    cfg = _stage2_training_config(short_spec(tiny_dataset, **no_labels).resolved(),
                                  tmp_path / 'trial', stage1_dir)
    every_id = ids_in(tiny_dataset / 'ImageSets' / 'Segmentation' / 'train.txt')
    part, = cfg.train_dataloader.dataset.datasets
    assert part.data_prefix.seg_map_path == str(stage1_dir / 'pseudo_masks')
    assert sorted(ids_in(part.ann_file)) == sorted(every_id) and len(every_id) == 12
    assert ids_in(tmp_path / 'trial' / 'splits' / 'labeled.txt') == []


def test_stage2_of_fraction_1_has_no_pseudo_labelled_part(tiny_dataset, tmp_path):
    """Every id has its ground truth, so no pseudo-mask folder is needed (none exists here)."""
    from harness.trial import _stage2_training_config

    cfg = _stage2_training_config(short_spec(tiny_dataset, labelled_fraction=1).resolved(),
                                  tmp_path / 'trial', tmp_path / 'no_stage1')
    every_id = ids_in(tiny_dataset / 'ImageSets' / 'Segmentation' / 'train.txt')
    part, = cfg.train_dataloader.dataset.datasets
    assert part.data_prefix.seg_map_path == 'SegmentationClass'
    assert sorted(ids_in(part.ann_file)) == sorted(every_id)
    assert ids_in(tmp_path / 'trial' / 'splits' / 'unlabeled.txt') == []


@pytest.mark.slow
def test_trial_end_to_end_then_reuse(tiny_dataset, tmp_path, capsys):
    from harness.stage_configs import stage1_config
    from harness.trial import stage1_run_dir

    # threshold 0.4: not the stage-1 config file's own (0.5)
    spec = short_spec(tiny_dataset, labelled_fraction='1/4', saliency_threshold=0.4)
    stage1_cache = tmp_path / 'stage1'
    result = run_trial(spec, tmp_path / 'a', stage1_cache)
    for key in ('val/mIoU', 'val/IoU.disc', 'pseudo/mIoU', 'pseudo/IoU.ring', 'stage1/mIoU',
                'time/stage1_s', 'time/stage2_s'):
        assert 0 <= result[key] <= 100 or key.startswith('time/')
    assert (result['task'], result['labelled_fraction'], result['saliency_threshold']) == \
        ('ssss', 0.25, 0.4)
    labelled = Path(result['split_file']).read_text().split()
    assert len(labelled) == 3  # 1/4 of the 12 training ids
    assert Path(result['stage1_config']).is_file() and Path(result['stage2_config']).is_file()
    # stage 1 trained with the trial's threshold, in the folder named by its resolved config
    stage1_dir = Path(result['stage1_config']).parent
    assert Config.fromfile(result['stage1_config']).model.loss_sal.threshold == 0.4
    assert stage1_dir == stage1_run_dir(stage1_config(spec.resolved()), stage1_cache)
    assert len(list((stage1_dir / 'pseudo_masks').glob('*.png'))) == 12

    # another fraction with the same stage-1 settings reuses stage 1
    other = run_trial(spec.with_overrides({'fraction': '1/2'}), tmp_path / 'b', stage1_cache)
    assert other['stage1_reused'] and other['time/stage1_s'] == 0
    assert other['pseudo/mIoU'] == result['pseudo/mIoU']
    assert other['stage1_config'] == result['stage1_config']

    # a split file's trial records the fraction of the ids it lists, and the file
    listed = tmp_path / 'five.txt'
    train_ids = ids_in(tiny_dataset / 'ImageSets' / 'Segmentation' / 'train.txt')
    listed.write_text(''.join(f'{i}\n' for i in train_ids[:5]))
    from_file = run_trial(short_spec(tiny_dataset, split_file=str(listed), saliency_threshold=0.4),
                          tmp_path / 'c', stage1_cache)
    assert from_file['stage1_reused'] and from_file['labelled_fraction'] == 5 / 12
    assert from_file['split_file_source'] == str(listed) and result['split_file_source'] is None
    assert sorted(Path(from_file['split_file']).read_text().split()) == sorted(train_ids[:5])

    # a finished trial is not run again: its result is read back
    mtime = (tmp_path / 'a' / 'result.json').stat().st_mtime
    assert run_trial(spec, tmp_path / 'a') == result
    assert (tmp_path / 'a' / 'result.json').stat().st_mtime == mtime

    # the CLI prints the same result as the JSON last line
    main([f'--work-dir={tmp_path / "a"}'] + [f'--set={k}={v}' for k, v in SHORT.items()] +
         [f'--set=data_root={tiny_dataset}', '--set=threshold=0.4'])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def killed_then_resumed(data_root: Path, folder: Path) -> Path:
    """Runs a WSSS trial (short stages) whose process is SIGKILLed right after stage 2's
    checkpoint of iteration 4 (of 8), then the same spec again; returns the trial's work dir."""
    killed_at_4 = write_stage_config(
        folder / 'stage2_killed_at_4.py', PROJECT_ROOT / TrialSpec.stage2_config,
        dict(type='KillAfterCheckpoint', iteration=4, record=str(folder / 'killed.json')))
    values = {'task': 'wsss', 'stage2_config': str(killed_at_4)}
    work_dir = folder / 'trial'
    first = subprocess.run(
        [sys.executable, '-m', 'harness.trial', f'--work-dir={work_dir}',
         f'--set=data_root={data_root}',
         *[f'--set={key}={value}' for key, value in {**SHORT, **values}.items()]],
        cwd=PROJECT_ROOT, env=dict(os.environ, PYTHONPATH=python_path()),
        capture_output=True, text=True, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert json.loads((folder / 'killed.json').read_text())['iteration'] == 4
    assert not (work_dir / 'result.json').exists()
    run_trial(short_spec(data_root, **values), work_dir)
    return work_dir


@pytest.mark.slow
def test_interrupted_trial_resumes_from_its_last_checkpoint(tiny_dataset, tmp_path):
    """A trial whose process is killed continues from its last checkpoint when it is run again,
    with the same spec."""
    work_dir = killed_then_resumed(tiny_dataset, tmp_path)
    logs = sorted((work_dir / 'stage2').glob('*/*.log'))
    assert len(logs) == 2
    assert 'resumed epoch: 0, iter: 4' in logs[-1].read_text()
    assert (work_dir / 'stage2' / 'iter_8.pth').is_file() and (work_dir / 'result.json').is_file()


@pytest.mark.parametrize('amp', [False, True])
def test_amp_turns_both_stages_optimizers_into_amp_wrappers(amp, tiny_dataset):
    from harness.amp import amp_optim_wrapper
    from harness.stage_configs import stage1_config, stage2_config

    # What harness.amp picks for this machine: bfloat16 unscaled on a GPU that supports it,
    # else float16 with dynamic loss scaling (so the test holds with and without CUDA).
    expected = amp_optim_wrapper({})
    spec = TrialSpec(data_root=str(tiny_dataset), amp=amp)
    for cfg, optimizer in ((stage1_config(spec), 'AdamW'), (stage2_config(spec), 'AdamW')):
        wrapper = cfg.optim_wrapper
        assert wrapper.optimizer.type == optimizer  # the stage's own optimizer is kept
        if amp:
            assert (wrapper.type, wrapper.dtype, wrapper.loss_scale) == (
                expected['type'], expected['dtype'], expected['loss_scale'])
        else:
            assert wrapper.type == 'OptimWrapper' and 'dtype' not in wrapper


def test_stage2_can_start_from_the_stage1_backbone(tiny_dataset, tmp_path):
    """With stage2_init_from_stage1, every backbone weight of the stage-2 network starts as the
    stage-1 checkpoint's (and the decode head does not)."""
    import torch
    from mmengine.registry import DefaultScope

    from harness.eps.checkpoints import trusted_checkpoint_loading
    from harness.stage_configs import stage1_config
    from harness.trial import _stage2_training_config
    from mmseg.registry import MODELS

    spec = short_spec(tiny_dataset, stage2_init_from_stage1=True).resolved()
    stage1_dir = tmp_path / 'stage1'
    (stage1_dir / 'pseudo_masks').mkdir(parents=True)
    with DefaultScope.overwrite_default_scope('mmseg'):
        torch.manual_seed(0)
        stage1 = MODELS.build(stage1_config(spec).model)
        torch.save({'state_dict': stage1.state_dict(), 'meta': {}}, stage1_dir / 'iter_8.pth')
        (stage1_dir / 'last_checkpoint').write_text(str(stage1_dir / 'iter_8.pth'))
        cfg = _stage2_training_config(spec, tmp_path / 'trial', stage1_dir)
        torch.manual_seed(1)
        stage2 = MODELS.build(cfg.model)
        with trusted_checkpoint_loading():
            stage2.init_weights()
    weights = stage2.backbone.state_dict()
    assert weights and all(torch.equal(value, stage1.state_dict()[f'backbone.{name}'])
                           for name, value in weights.items())
    without = _stage2_training_config(short_spec(tiny_dataset).resolved(), tmp_path / 'plain',
                                      stage1_dir)
    assert 'init_cfg' not in without.model.backbone


def test_a_finished_stage_leaves_no_dataloader_workers(tiny_dataset, tmp_path):
    """The runner of a finished stage still holds its dataloaders' worker processes (persistent
    ones, and the iter-based train loop's iterator); left to the garbage collector they cost the
    next stage's start 5 s each. With the collector off, none may outlive the stage."""
    import gc
    import multiprocessing

    from harness.stage_configs import stage1_config
    from harness.trial import _run_stage

    cfg = stage1_config(short_spec(tiny_dataset).resolved())
    cfg.custom_hooks = []
    cfg.work_dir = str(tmp_path / 'stage1')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(num_workers=2, persistent_workers=True)
    before = set(multiprocessing.active_children())
    gc.disable()
    try:
        metrics = _run_stage(cfg, 'stage1', None)
        left = set(multiprocessing.active_children()) - before
    finally:
        gc.enable()
    assert 'stage1/mIoU' in metrics
    assert not left, f'dataloader workers alive after the stage: {left}'


def test_the_trial_writer_sends_each_published_metric_once_with_its_stage_and_step():
    from harness.trial import TrialMetricsBackend

    sent = []
    writer = TrialMetricsBackend(save_dir='unused', stage='stage1')
    writer.sink = sent.append
    writer.add_scalars({'train/loss': 0.5, 'train/lr': 0.01}, step=4)  # training logs stay out
    writer.add_scalars({'val/mIoU': np.float64(61.25), 'val/IoU.ring': math.nan,
                        'val/time': 0.3, 'val/data_time': 0.1}, step=8)
    writer.add_scalars({'ird/precision': 40.0, 'ird/recall': math.nan}, step=8)
    writer.add_scalars({'val/mIoU': 70.5, 'val/IoU.ring': 12.0}, step=16)
    assert sent == [{'stage1/mIoU': 61.25, 'stage1/IoU.ring': None, 'stage1/iter': 8},
                    {'ird/precision': 40.0, 'ird/recall': None, 'stage1/iter': 8},
                    {'stage1/mIoU': 70.5, 'stage1/IoU.ring': 12.0, 'stage1/iter': 16}]
    assert writer.latest == {'stage1/mIoU': 70.5, 'stage1/IoU.ring': 12.0,
                             'ird/precision': 40.0, 'ird/recall': None}


@HOOKS.register_module()
class CountingHook(Hook):
    """Publishes how many training iterations it saw, every 4 (a metric no harness code knows)."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if (runner.iter + 1) % 4 == 0:
            runner.visualizer.add_scalars({'count/iterations': float(runner.iter + 1)},
                                          step=runner.iter + 1)


def test_a_metric_any_hook_publishes_reaches_the_report_and_the_stage_result(tiny_dataset,
                                                                             tmp_path):
    from harness.stage_configs import stage1_config
    from harness.trial import _run_stage

    cfg = stage1_config(short_spec(tiny_dataset).resolved())
    cfg.custom_hooks = [dict(type='CountingHook')]
    cfg.work_dir = str(tmp_path / 'stage1')
    reports = []
    metrics = _run_stage(cfg, 'stage1', reports.append)
    assert [report for report in reports if 'count/iterations' in report] == [
        {'count/iterations': 4.0, 'stage1/iter': 4}, {'count/iterations': 8.0, 'stage1/iter': 8}]
    [validation] = [report for report in reports if 'stage1/mIoU' in report]
    assert validation['stage1/iter'] == 8 and 'stage1/IoU.disc' in validation
    assert metrics['count/iterations'] == 8.0 and metrics['stage1/mIoU'] == validation[
        'stage1/mIoU']


def test_a_stage_stopped_after_its_last_checkpoint_still_ends_with_its_last_validation(
        tiny_dataset, tmp_path):
    """Stopped between its last checkpoint and the end of its last validation, a stage resumes
    with no iteration left to train: it validates once more, so its metrics are an uninterrupted
    run's, reported at the last iteration."""
    from harness.stage_configs import stage1_config
    from harness.trial import _run_stage

    def stage():
        cfg = stage1_config(short_spec(tiny_dataset).resolved())
        cfg.custom_hooks = []
        cfg.work_dir = str(tmp_path / 'stage1')
        return cfg

    uninterrupted = _run_stage(stage(), 'stage1', None)
    reports = []
    resumed = _run_stage(stage(), 'stage1', reports.append)
    assert 'stage1/mIoU' in uninterrupted and resumed == uninterrupted
    assert [report['stage1/iter'] for report in reports] == [8]


@pytest.mark.slow
def test_two_trials_started_on_one_folder_one_trains_the_other_is_refused(tiny_dataset,
                                                                          tmp_path):
    held_at_4 = write_stage_config(
        tmp_path / 'stage2_held_at_4.py', PROJECT_ROOT / TrialSpec.stage2_config,
        dict(type='WaitForFile', iteration=4, record=str(tmp_path / 'holding.json'),
             release=str(tmp_path / 'release')))
    work_dir = tmp_path / 'trial'
    values = {**SHORT, 'task': 'wsss', 'stage2_config': str(held_at_4)}
    command = [sys.executable, '-m', 'harness.trial', f'--work-dir={work_dir}',
               f'--set=data_root={tiny_dataset}', *[f'--set={k}={v}' for k, v in values.items()]]
    both = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=dict(os.environ,
                                                                 PYTHONPATH=python_path()),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    try:
        # One trains to stage-2 iteration 4 and waits there; the other must have ended by then
        # or soon after (without the lock both would train, and both wait at iteration 4).
        deadline = time.monotonic() + 600
        while not (tmp_path / 'holding.json').exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in both) and time.monotonic() < deadline:
            time.sleep(0.5)
        ended = [p for p in both if p.poll() is not None]
    finally:
        (tmp_path / 'release').touch()
        outputs = [p.communicate(timeout=600) for p in both]
    assert len(ended) == 1 and ended[0].returncode == 2
    refusal = outputs[both.index(ended[0])][1].strip().splitlines()[-1]
    assert refusal.startswith(f'error: {work_dir} is in use by a running trial (process '), refusal
    winner = both[1 - both.index(ended[0])]
    assert winner.returncode == 0, outputs[both.index(winner)][1][-3000:]
    assert len(list((work_dir / 'stage2').glob('*/*.log'))) == 1
    assert json.loads(outputs[both.index(winner)][0].strip().splitlines()[-1]) == \
        json.loads((work_dir / 'result.json').read_text())


@pytest.mark.slow
def test_resume_passes_over_a_damaged_checkpoint(tiny_dataset, tmp_path, request):
    """A stage whose newest checkpoint is damaged resumes from the one before, and says so."""
    from harness.trial import _run_stage, _stage2_training_config

    spec = short_spec(tiny_dataset, labelled_fraction=1).with_overrides(
        {'stage2.default_hooks.checkpoint.max_keep_ckpts': 2}).resolved()

    def stage2() -> Config:  # every id labelled: no stage 1 needed
        return _stage2_training_config(spec, tmp_path / 'trial', tmp_path / 'no_stage1')

    _run_stage(stage2(), 'val', None)
    stage_dir = tmp_path / 'trial' / 'stage2'
    damaged = stage_dir / 'iter_8.pth'
    assert (stage_dir / 'last_checkpoint').read_text() == str(damaged)
    damaged.write_bytes(damaged.read_bytes()[:4096])  # cut short
    messages = request.getfixturevalue('mmengine_messages')  # the first run's logger
    metrics = _run_stage(stage2(), 'val', None)
    assert any(f'damaged checkpoint(s) {damaged}' in message for message in messages)
    logs = sorted(stage_dir.glob('*/*.log'))
    assert len(logs) == 2 and 'resumed epoch: 0, iter: 4' in logs[-1].read_text()
    assert 'val/mIoU' in metrics
    assert torch.load(damaged, weights_only=False)['meta']['iter'] == 8  # whole again
