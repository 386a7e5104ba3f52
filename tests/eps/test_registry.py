"""Every component harness.eps registers builds from its registry by name (timm-style smoke test)."""
import pytest
import torch
from mmengine.registry import DefaultScope

import harness.eps  # noqa: F401
from mmseg.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS

REGISTRIES = dict(MODELS=MODELS, DATASETS=DATASETS, TRANSFORMS=TRANSFORMS, HOOKS=HOOKS,
                  METRICS=METRICS)
TINY_BACKBONE = dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8,
                     out_indices=(3, ), norm_cfg=dict(type='BN'))

# Minimal arguments of each registered component; a new component must be added here.
BUILD_ARGS = {
    'CAMHead': dict(in_channels=4, num_classes=2),
    'MultiLabelBCELoss': dict(),
    'EPSLoss': dict(),
    'IRDLoss': dict(),
    'PAMR': dict(),
    'DenseCRF': dict(),
    'EPSClassifier': dict(backbone=TINY_BACKBONE,
                          decode_head=dict(type='CAMHead', in_channels=64, num_classes=2)),
    'PAMRHook': dict(dataloader=dict()),
    'IRDDiagnosticsHook': dict(dataloader=dict(), interval=100),
    'CrashSafeCheckpointHook': dict(interval=1),
    'PerClassIoUMetric': dict(),
    'WSSSVOCDataset': 'dataset',
    'SyntheticShapesDataset': 'dataset',
    'WSSSCOCODataset': 'dataset',
    'LoadSaliencyMap': dict(),
    'LoadSaliencyErrors': dict(),
    'PackWSSSInputs': dict(),
}


def registered_by_harness():
    for registry_name, registry in REGISTRIES.items():
        for name, cls in registry.module_dict.items():
            if cls.__module__.startswith('harness.eps'):
                yield registry_name, name


@pytest.mark.parametrize('registry_name,name', sorted(registered_by_harness()))
def test_builds_by_name(registry_name, name, tiny_dataset):
    assert name in BUILD_ARGS, f'{name} is registered but has no smoke test arguments'
    args = BUILD_ARGS[name]
    if args == 'dataset':
        # the bundled layout is VOC's, so the VOC class reads it too (indices 0..5 are valid)
        args = dict(data_root=str(tiny_dataset), ann_file='ImageSets/Segmentation/val.txt',
                    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        component = REGISTRIES[registry_name].build(dict(type=name, **args))
    assert type(component).__name__ == name
    if isinstance(component, torch.nn.Module):
        assert isinstance(component.training, bool)


def test_every_component_is_exported():
    names = {name for _, name in registered_by_harness()}
    assert names == set(BUILD_ARGS)
    assert names <= set(harness.eps.__all__)


def test_unregistered_component_names_the_key():
    with pytest.raises(KeyError, match='NoSuchHead is not in the mmseg::model registry'):
        MODELS.build(dict(type='NoSuchHead'))
