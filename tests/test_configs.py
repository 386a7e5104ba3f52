"""The shipped configs as MMEngine resolves them (inheritance and ``{{_base_.x}}`` included)."""
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest
from mmengine.config import Config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LEAF_CONFIGS = sorted(str(path.relative_to(PROJECT_ROOT))
                      for folder in ('eps', 'stage2')
                      for path in (PROJECT_ROOT / 'mm_configs' / folder).glob('*.py'))


def data_roots(node: Any, where: str = '') -> Iterator[Tuple[str, Any]]:
    """Every ``data_root`` value in a config tree, with its dotted path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'data_root':
                yield f'{where}{key}', value
            yield from data_roots(value, f'{where}{key}.')
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from data_roots(value, f'{where}{index}.')


@pytest.mark.parametrize('config', LEAF_CONFIGS)
def test_every_data_root_is_the_configs_own(config):
    """A quoted ``'{{_base_.data_root}}'`` resolves to a placeholder name, not the folder: the
    stage-2 dataset templates of VOC and COCO once did."""
    cfg = Config.fromfile(PROJECT_ROOT / config).to_dict()
    found = dict(data_roots(cfg))
    assert len(found) >= 3
    assert {where: root for where, root in found.items() if root != cfg['data_root']} == {}


@pytest.mark.parametrize('config,classes', [
    ('mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py', 20),
    ('mm_configs/eps/epspp-ird_r101-d8_1xb16-256k_coco14-321x321.py', 80),
    ('mm_configs/eps/eps_r101-d8_1xb16-256k_coco14-321x321.py', 80),
])
def test_paper_stage1_configs(config, classes):
    cfg = Config.fromfile(PROJECT_ROOT / config)
    assert cfg.model.backbone.depth == 101 and cfg.model.decode_head.num_classes == classes
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.01, momentum=0.9,
                                               weight_decay=5e-4)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.decode_head.lr_mult == 10.0
    assert cfg.param_scheduler[0].end == cfg.train_cfg.max_iters == cfg.train_cfg.val_interval


@pytest.mark.parametrize('config,classes,iterations', [
    ('mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py', 21, 40000),
    ('mm_configs/stage2/deeplabv3plus_r101-d8_4xb4-80k_coco14-512x512.py', 81, 80000),
])
def test_paper_stage2_configs(config, classes, iterations):
    cfg = Config.fromfile(PROJECT_ROOT / config)
    assert (cfg.model.decode_head.num_classes, cfg.model.auxiliary_head.num_classes) == \
        (classes, classes)
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.01, momentum=0.9,
                                               weight_decay=5e-4)
    assert 'paramwise_cfg' not in cfg.optim_wrapper
    assert cfg.param_scheduler[0].end == cfg.train_cfg.max_iters == iterations
    assert cfg.train_cfg.val_interval == cfg.default_hooks.checkpoint.interval == iterations // 10
