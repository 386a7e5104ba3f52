"""The figure of a stage-1 run's pseudo-masks (harness.pseudo_mask_grid)."""
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from harness.pseudo_mask_grid import foreground_cams, write_pseudo_mask_grid
from harness.trial import TrialSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_pseudo_mask_grid_from_a_trials_files(tiny_dataset, tmp_path):
    """The grid reads images and saliency from data_root, masks from <stage1>/pseudo_masks and
    runs the stage-1 network of <stage1>/last_checkpoint for the CAM column."""
    import torch
    from mmengine.config import Config
    from mmseg.apis import init_model

    stage1 = tmp_path / 'stage1' / 'abc'
    shutil.copytree(tiny_dataset / 'SegmentationClass', stage1 / 'pseudo_masks')
    cfg = Config.fromfile(str(PROJECT_ROOT / TrialSpec.stage1_config))
    cfg.data_root = str(tiny_dataset)
    cfg.train_dataloader.dataset.data_root = str(tiny_dataset)
    config = stage1 / 'stage1_config.py'
    cfg.dump(str(config))
    torch.manual_seed(0)
    torch.save({'state_dict': init_model(cfg, device='cpu').state_dict(), 'meta': {}},
               stage1 / 'iter_1.pth')
    (stage1 / 'last_checkpoint').write_text(str(stage1 / 'iter_1.pth'))

    out = write_pseudo_mask_grid(config, 0.5, tmp_path / 'grid.png', count=3)
    image = np.asarray(Image.open(out).convert('RGB'))
    # 3 rows x 5 panels of 2 inches: image, saliency, CAM, saliency errors, pseudo-mask
    assert image.shape[0] == 600 and image.shape[1] == 1000
    assert image.std() > 10

    # with IRD diagnostics, the dropped region is a sixth panel
    (stage1 / 'ird_diagnostics').mkdir()
    for mask in sorted((stage1 / 'pseudo_masks').glob('*.png')):
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(
            stage1 / 'ird_diagnostics' / mask.name)
    (stage1 / 'ird_diagnostics.json').write_text(json.dumps({'total': {}, 'images': {}}))
    out = write_pseudo_mask_grid(config, 0.5, tmp_path / 'grid6.png', count=3)
    assert np.asarray(Image.open(out)).shape[1] == 1200


def test_foreground_cams_are_maps_in_unit_range_at_image_size(tmp_path):
    import torch
    from mmengine.config import Config
    from mmseg.apis import init_model

    cfg = Config.fromfile(str(PROJECT_ROOT / TrialSpec.stage1_config))
    torch.manual_seed(0)
    model = init_model(cfg, device='cpu')
    # Backbone features are >= 0 (ReLU): positive class weights make every class predicted.
    torch.nn.init.constant_(model.decode_head.classifier.weight[1:], 0.1)
    checkpoint = tmp_path / 'iter_1.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    images = [np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)]
    cam, = foreground_cams(cfg, str(checkpoint), images)
    assert cam.shape == (48, 40) and 0 <= cam.min() and cam.max() <= 1
    assert cam.std() > 0
