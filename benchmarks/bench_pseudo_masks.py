"""Pseudo-mask mIoU and time per image of the inference settings WSSS papers use.

    python benchmarks/bench_pseudo_masks.py [--checkpoint CKPT] [--config CONFIG] [--work-dir DIR]
                                            [--repeats N]

From one stage-1 checkpoint (``--checkpoint``; without it, one trained here with ``--config``,
600 iterations at seed 0, a few minutes on 2 cores, kept under the work dir and reused), writes
the pseudo-masks of the train split (those stage 2 learns from) and of val with each setting of
:data:`SETTINGS` and prints their mIoU and the seconds per image of the whole pseudo-mask step
(the network's passes, the background rule, PAMR, the CRF, writing the PNG): wall seconds and
CPU seconds of this process (all its threads; what other processes on a shared machine take
does not count there), each the least of ``--repeats`` runs. The data is the config's
``data_root`` (the bundled dataset, generated when absent).
"""
import argparse
import copy
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, load_checkpoint

from harness.data import synthetic
from harness.eps.checkpoints import trusted_checkpoint_loading
from harness.eps.pseudo_masks import generate_pseudo_masks, load_weights, read_checkpoint
from harness.validation import InvalidSetting, check_folder_argument, stage1_config_file
from mmseg.registry import MODELS

EPS_SCALES = (0.5, 1.0, 1.5, 2.0)  # EPS's infer.py, with horizontal flips
SETTINGS = {
    'single-scale + PAMR': dict(scales=(1.0, ), flip=False, crf=None),
    'multi-scale + flip + PAMR': dict(scales=EPS_SCALES, flip=True, crf=None),
    'single-scale + PAMR + CRF': dict(scales=(1.0, ), flip=False, crf=dict(type='DenseCRF')),
    'multi-scale + flip + PAMR + CRF': dict(scales=EPS_SCALES, flip=True,
                                            crf=dict(type='DenseCRF')),
}


def trained_checkpoint(cfg: Config, work_dir: Path) -> Path:
    """The last checkpoint of ``cfg`` trained in ``work_dir`` (seed 0), training it if needed."""
    last = work_dir / 'last_checkpoint'
    final = work_dir / f'iter_{cfg.train_cfg.max_iters}.pth'
    if not final.is_file():
        cfg = copy.deepcopy(cfg)
        cfg.work_dir = str(work_dir)
        cfg.randomness = dict(seed=0)
        cfg.resume = last.is_file()
        cfg.custom_hooks = []  # the benchmark writes the pseudo-masks itself
        started = time.perf_counter()
        with trusted_checkpoint_loading():  # resumes only from this work dir's own checkpoints
            Runner.from_cfg(cfg).train()
        print(f'trained {cfg.train_cfg.max_iters} iterations in '
              f'{time.perf_counter() - started:.0f} s: {final}', flush=True)
    return final


def score(cfg: Config, checkpoint: Path, test_cfg: dict, out_dir: Path,
          repeats: int) -> Dict[str, float]:
    """mIoU of the train split's and val's pseudo-masks with ``test_cfg``, and wall and CPU
    seconds per image (each the least of ``repeats`` runs)."""
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.test_cfg.update(test_cfg)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(model_cfg)
        with trusted_checkpoint_loading():
            load_checkpoint(model, str(checkpoint), map_location='cpu', logger='silent')
        hook = next(hook for hook in cfg.custom_hooks if hook['type'] == 'PAMRHook')
        splits = {'train': hook['dataloader'], 'val': cfg.val_dataloader}
        loaders = {name: Runner.build_dataloader(copy.deepcopy(loader))
                   for name, loader in splits.items()}
    result, wall, cpu = {}, [], []
    for repeat in range(repeats):
        wall_started, cpu_started = time.perf_counter(), time.process_time()
        for name, loader in loaders.items():
            metrics = generate_pseudo_masks(model, loader, out_dir / str(repeat) / name)
            result[name] = metrics['pseudo/mIoU']
        wall.append(time.perf_counter() - wall_started)
        cpu.append(time.process_time() - cpu_started)
    images = sum(len(loader.dataset) for loader in loaders.values())
    result.update(wall=min(wall) / images, cpu=min(cpu) / images)
    return result


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', type=Path, help='stage-1 checkpoint of --config')
    parser.add_argument('--config', default='mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_'
                        'shapes-64x64.py', help='stage-1 config (its PAMRHook names the split)')
    parser.add_argument('--work-dir', type=Path, default=Path('outputs/bench_pseudo_masks'))
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per setting')
    args = parser.parse_args(argv)
    try:
        cfg = stage1_config_file(args.config, '--config')
        if not any(hook['type'] == 'PAMRHook' for hook in cfg.get('custom_hooks', [])):
            raise InvalidSetting(f'--config {args.config} has no PAMRHook in custom_hooks: '
                                 'nothing says which split to turn into pseudo-masks')
        check_folder_argument(args.work_dir, '--work-dir')
        if args.checkpoint is not None:
            if not args.checkpoint.is_file():
                raise InvalidSetting(f'--checkpoint {args.checkpoint} not found')
            with DefaultScope.overwrite_default_scope('mmseg'):
                load_weights(MODELS.build(cfg.model), read_checkpoint(str(args.checkpoint)),
                             str(args.checkpoint), args.config)
    except (InvalidSetting, ValueError) as error:
        parser.exit(2, f'error: {error}\n')

    if cfg.get('dataset_type') == 'SyntheticShapesDataset':
        synthetic.ensure_dataset(cfg.data_root)
    checkpoint = args.checkpoint or trained_checkpoint(cfg, args.work_dir / 'stage1')
    run_dir = args.work_dir / f'masks-{time.strftime("%Y%m%d-%H%M%S")}'
    print(f'checkpoint {checkpoint}; {torch.get_num_threads()} torch threads; masks in {run_dir}')
    print('\n| pseudo-mask setting | mIoU (train) | mIoU (val) | wall s / image | CPU s / image |')
    print('|---|---:|---:|---:|---:|')
    for index, (name, test_cfg) in enumerate(SETTINGS.items()):
        result = score(cfg, checkpoint, test_cfg, run_dir / str(index), args.repeats)
        print(f'| {name} | {result["train"]:.2f} | {result["val"]:.2f} | {result["wall"]:.4f} | '
              f'{result["cpu"]:.4f} |', flush=True)


if __name__ == '__main__':
    main()
