"""Pseudo-masks of a trained stage-1 model, on demand: palette PNGs and their mIoU.

    python -m harness.pseudo_masks CONFIG CHECKPOINT [--out DIR] [--crf] \
        [--cfg-options model.test_cfg.flip=True "model.test_cfg.scales=(0.5,1.0,1.5,2.0)"]

uses the dataloader of the config's ``PAMRHook`` and writes to ``DIR`` (default: the hook's
folder under the config's work dir). The masks follow the model's ``test_cfg`` (scales, flip,
background rule, PAMR, dense CRF); ``--crf`` adds the CRF with its default parameters when the
config has none, ``--cfg-options`` changes any config key (MMEngine syntax). Prints the metrics
as JSON.
"""
import argparse
from pathlib import Path
from typing import Dict, Sequence

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from harness import strict_json
from harness.eps.pseudo_masks import (build_model, generate_pseudo_masks, load_weights,
                                      read_checkpoint)
from harness.overrides import apply_overrides
from harness.validation import check_folder_argument, message_of


def main(argv: Sequence[str] = None) -> Dict[str, float]:
    """The command line; a bad argument exits with status 2 and one line naming it, before any
    mask is written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='stage-1 config with a PAMRHook in custom_hooks')
    parser.add_argument('checkpoint', help='trained stage-1 checkpoint (.pth)')
    parser.add_argument('--out', help='folder to write the pseudo-masks to')
    parser.add_argument('--work-dir', help='work dir of the runner (default: the config\'s)')
    parser.add_argument('--crf', action='store_true',
                        help="refine the masks with harness.eps.DenseCRF (PSA's parameters) "
                        'when the config\'s model.test_cfg.crf is not set')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='config keys to change, key=value (MMEngine syntax), applied last')
    args = parser.parse_args(argv)

    try:
        for name, path in (('config', args.config), ('checkpoint', args.checkpoint)):
            if not Path(path).is_file():
                raise FileNotFoundError(f'{name} {path} not found')
        cfg = Config.fromfile(args.config)
        if args.crf and not cfg.model.test_cfg.get('crf'):
            cfg.model.test_cfg.crf = dict(type='DenseCRF')
        apply_overrides(cfg, args.cfg_options, source=args.config)
        hooks = [hook for hook in cfg.get('custom_hooks', []) if hook['type'] == 'PAMRHook']
        if not hooks:
            raise KeyError(f'{args.config} has no PAMRHook in custom_hooks: nothing says which '
                           'split to turn into pseudo-masks')
        cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(
            Path('work_dirs') / Path(args.config).stem)
        out_dir = Path(args.out or Path(cfg.work_dir) / hooks[0].get('out_dir', 'pseudo_masks'))
        if out_dir.exists():
            raise FileExistsError(f'pseudo-mask folder {out_dir} already exists; it is not '
                                  'overwritten: remove it or name another with --out')
        check_folder_argument(cfg.work_dir, '--work-dir')
        check_folder_argument(out_dir, '--out')
        content = read_checkpoint(args.checkpoint)
        # The weights are tried on the model alone: a refused checkpoint leaves no runner (its
        # work dir, logger and visualizer) behind.
        load_weights(build_model(cfg), content, args.checkpoint, args.config)
        runner = Runner.from_cfg(cfg)
        load_weights(runner.model, content, args.checkpoint, args.config)
    except (FileNotFoundError, FileExistsError, KeyError, TypeError, ValueError) as error:
        parser.exit(2, f'error: {message_of(error)}\n')
    try:
        metrics = generate_pseudo_masks(
            runner.model, Runner.build_dataloader(hooks[0]['dataloader']), out_dir)
    except ValueError as error:
        parser.exit(2, f'error: {error}\n')
    print(strict_json.dumps(metrics))
    return metrics


if __name__ == '__main__':
    main()
