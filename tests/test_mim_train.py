"""`mim train mmsegmentation <stage-1 config>` finds our components by name and runs stage 1."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / (
    'mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py')
SHORT = ['train_cfg.max_iters=6', 'train_cfg.val_interval=6', 'param_scheduler.0.end=6',
         'model.loss_sal.warmup_iters=3', 'train_dataloader.batch_size=4']


@pytest.mark.slow
def test_mim_train_runs_stage1_scores_and_writes_pseudo_masks(tiny_dataset, tmp_path):
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'shapes_voc').symlink_to(tiny_dataset)  # the config's data_root
    mim = Path(sys.executable).with_name('mim')
    completed = subprocess.run(
        [str(mim), 'train', 'mmsegmentation', str(CONFIG), '--gpus', '0', '--launcher', 'none',
         '--work-dir', 'wd', '--cfg-options', *SHORT],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    work_dir = tmp_path / 'wd'
    masks = sorted((work_dir / 'pseudo_masks').glob('*.png'))
    assert len(masks) == len((tiny_dataset / 'ImageSets/Segmentation/train.txt').read_text().split())
    metrics = json.loads((work_dir / 'pseudo_masks_metrics.json').read_text())
    assert 0 <= metrics['pseudo/mIoU'] <= 100 and 'pseudo/IoU.disc' in metrics
    log = next(work_dir.glob('*/*.log')).read_text()
    assert 'Iter(val)' in log and 'mIoU' in log and 'IoU.ring' in log
