"""Where a stage's start-up goes: from its config to the end of its first training iteration.

    python benchmarks/bench_startup.py                        # stage 2, VOC configs, CPU
    python benchmarks/bench_startup.py --stage 1
    python benchmarks/bench_startup.py --data-root data/VOCdevkit/VOC2012   # a real VOC

Without ``--data-root`` it builds a PASCAL VOC layout of VOC's sizes (10,582 train_aug and
1,449 val ids) whose files link to 100 generated 64x64 images: what start-up does per id (file
checks, labels, the dataset's lists) is VOC's, only the images are small. The stage runs on the
paper configs with ``model.pretrained=None`` (no download; ``--pretrained`` keeps the ImageNet
weights, which must then be in the torch hub cache) and WSSS pseudo-masks (stage 2), as a trial
builds it, in a fresh ``Runner`` on the device MMEngine picks (CUDA when there is one); the
first iteration is timed, then the run stops and its dataloader workers are shut down, as a
trial does at the end of a stage (left to the garbage collector, they cost the next start 20 s).

Prints the wall seconds of each phase, timed around MMEngine's ``Runner`` methods (a subclass
that times each call; nested phases are part of their caller's time):

- Runner init: the log of the environment, the model build, the rest (config dump, hooks);
- train(): the train loop (dataset and dataloader), the optimizer, the val loop, the model's
  weight initialisation, the resume check, then the first batch and the first iteration.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {1: 'mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py',
           2: 'mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py'}
VOC_SIZES = {'train_aug': 10582, 'train': 1464, 'val': 1449}
# (label, Runner method) of the timed phases, in the order they run.
PHASES: List[Tuple[str, str]] = [
    ('Runner init: log of the environment', '_log_env'),
    ('Runner init: model build', 'build_model'),
    ('train(): train loop (datasets, dataloader)', 'build_train_loop'),
    ('train(): optimizer', 'build_optim_wrapper'),
    ('train(): val loop (dataset, dataloader)', 'build_val_loop'),
    ('train(): model weight initialisation', '_init_model_weights'),
    ('train(): resume check', 'load_or_resume'),
]


def voc_layout(root: Path) -> Path:
    """A VOC layout of VOC's sizes under ``root``, its files linking to generated images."""
    from harness.data.synthetic import SyntheticConfig, generate_dataset

    source = generate_dataset(root / 'source', SyntheticConfig(num_train=100, num_val=1))
    voc = root / 'VOC2012'
    for folder in ('JPEGImages', 'SegmentationClass', 'SegmentationClassAug', 'SALImages',
                   'ImageSets/Segmentation'):
        (voc / folder).mkdir(parents=True)
    source_ids = (source / 'ImageSets/Segmentation/train.txt').read_text().split()
    source_labels = np.load(source / 'cls_labels.npy', allow_pickle=True).item()
    ids = [f'2007_{index:06d}' for index in range(VOC_SIZES['train_aug'] + VOC_SIZES['val'])]
    labels = {}
    for index, image_id in enumerate(ids):
        stem = source_ids[index % len(source_ids)]
        for folder, source_folder, suffix in (
                ('JPEGImages', 'JPEGImages', '.jpg'), ('SALImages', 'SALImages', '.png'),
                ('SegmentationClass', 'SegmentationClass', '.png'),
                ('SegmentationClassAug', 'SegmentationClass', '.png')):
            os.symlink(source / source_folder / f'{stem}{suffix}',
                       voc / folder / f'{image_id}{suffix}')
        labels[image_id] = np.concatenate([source_labels[stem], np.zeros(15, np.float32)])
    np.save(voc / 'cls_labels.npy', labels)
    splits = {'train_aug': ids[:VOC_SIZES['train_aug']], 'train': ids[:VOC_SIZES['train']],
              'val': ids[VOC_SIZES['train_aug']:]}
    for name, split_ids in splits.items():
        (voc / 'ImageSets/Segmentation' / f'{name}.txt').write_text('\n'.join(split_ids) + '\n')
    return voc


class FirstIterationDone(Exception):
    """Stops the run after its first iteration."""


def start_up(stage: int, data_root: Path, work: Path, pretrained: bool) -> Dict[str, float]:
    """Builds the stage as a trial does and runs one iteration; returns the phases' seconds."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from harness.eps.checkpoints import trusted_checkpoint_loading
    from harness.spec import TrialSpec
    from harness.stage_configs import stage1_config
    from harness.trial import _stage2_training_config, shut_down_dataloader_workers

    seconds: Dict[str, float] = {}

    def timed(method: str):
        def call(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return getattr(Runner, method)(self, *args, **kwargs)
            finally:
                seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - started
        return call

    TimedRunner = type('TimedRunner', (Runner, ), {m: timed(m) for _, m in PHASES})

    class FirstIteration(Hook):
        priority = 'VERY_HIGH'

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            seconds['first batch'] = time.perf_counter() - seconds.pop('epoch started')

        def before_train_epoch(self, runner) -> None:
            seconds['epoch started'] = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            raise FirstIterationDone

    overrides = {} if pretrained else {'model.pretrained': None}
    spec = TrialSpec(stage1_config=CONFIGS[1], stage2_config=CONFIGS[2], task='wsss',
                     data_root=str(data_root), stage1=overrides if stage == 1 else {},
                     stage2=overrides if stage == 2 else {}).resolved()
    started = time.perf_counter()
    if stage == 1:
        cfg = stage1_config(spec)
        cfg.custom_hooks = []
    else:
        (work / 'stage1').mkdir(parents=True)
        (work / 'stage1' / 'pseudo_masks').symlink_to(data_root / 'SegmentationClassAug')
        cfg = _stage2_training_config(spec, work / 'trial', work / 'stage1')
    cfg.work_dir = str(work / 'run')
    times = {'config build (harness)': time.perf_counter() - started}
    started = time.perf_counter()
    runner = TimedRunner.from_cfg(cfg)
    times['Runner init (all)'] = time.perf_counter() - started
    runner.register_hook(FirstIteration())
    started = time.perf_counter()
    try:
        with trusted_checkpoint_loading():
            runner.train()
    except FirstIterationDone:
        pass
    times['train() to the end of the first iteration (all)'] = time.perf_counter() - started
    times.update((label, seconds.get(method, 0.0)) for label, method in PHASES)
    times['first batch (dataloader workers start)'] = seconds['first batch']
    times['first iteration (train_step)'] = (
        times['train() to the end of the first iteration (all)'] - seconds['first batch']
        - sum(seconds.get(method, 0.0) for _, method in PHASES[2:]))
    started = time.perf_counter()
    shut_down_dataloader_workers(runner)  # as a trial does when a stage ends
    times['then: dataloader workers shut down'] = time.perf_counter() - started
    return times


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stage', type=int, choices=(1, 2), default=2)
    parser.add_argument('--data-root', type=Path, help='a real VOC2012 folder (default: a '
                        'generated layout of VOC sizes)')
    parser.add_argument('--pretrained', action='store_true',
                        help='keep the configs\' ImageNet backbone weights (cached offline)')
    parser.add_argument('--repeat', type=int, default=1,
                        help='start the stage this many times in one process: what only the '
                        'first start pays (CUDA kernels loaded or compiled, imports) shows')
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        data_root = args.data_root or voc_layout(Path(folder))
        for index in range(args.repeat):
            runs.append(start_up(args.stage, data_root.resolve(), Path(folder) / f'work{index}',
                                 args.pretrained))
    device = f'CUDA ({torch.cuda.get_device_name()})' if torch.cuda.is_available() else 'CPU'
    print(f'stage {args.stage} start-up, {CONFIGS[args.stage]}, {device}, data '
          f'{args.data_root or "generated VOC layout (VOC sizes)"}')
    print('| phase | ' + ' | '.join(f'start {index + 1} (s)' for index in range(len(runs)))
          + ' |\n|---|' + '---:|' * len(runs))
    for label in runs[0]:
        print(f'| {label} | ' + ' | '.join(f'{run[label]:.2f}' for run in runs) + ' |')


if __name__ == '__main__':
    sys.exit(main())
