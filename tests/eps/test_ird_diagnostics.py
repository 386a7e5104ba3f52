"""IRD's dropped region against the saliency errors: counts, ratios, and the region itself."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from harness.data.synthetic import ERROR_KIND_VALUES
from harness.eps import IRDLoss
from harness.eps.ird_diagnostics import IRDDiagnosticsHook, error_counts, summarise, total
from test_ird_loss import LITERAL, PIXEL_3_DROPPED, THREE_PIXELS

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# One 3x4 image. Ground truth: an object in the left half (1), background right (0), one
# ignored pixel (255). Saliency covers the top-left object pixels and one background pixel.
MASK = torch.tensor([[1, 1, 0, 0],
                     [1, 1, 0, 255],
                     [1, 0, 0, 0]])
SALIENT = torch.tensor([[1, 1, 1, 0],
                        [0, 0, 0, 1],
                        [0, 0, 0, 0]], dtype=torch.bool)
# E = salient xor foreground (valid pixels): (0,2) false coverage, (1,0) (1,1) (2,0) missed.
DROPPED = torch.tensor([[1, 0, 1, 1],
                        [1, 0, 0, 1],
                        [0, 0, 0, 0]], dtype=torch.bool)
KINDS = torch.tensor([[0, 0, 3, 0],
                      [2, 2, 0, 0],
                      [1, 0, 0, 0]], dtype=torch.uint8)


def test_counts_by_hand():
    counts = error_counts(DROPPED, SALIENT, MASK, KINDS)
    # dropped (valid): (0,0) (0,2) (0,3) (1,0); (1,3) is ignored -> 4
    # errors: (0,2) (1,0) (1,1) (2,0) -> 4; dropped & errors: (0,2) (1,0) -> 2
    assert counts['dropped'] == 4 and counts['errors'] == 4 and counts['dropped_errors'] == 2
    assert counts['kind.false_coverage'] == 1 and counts['dropped.false_coverage'] == 1
    assert counts['kind.missing_object'] == 2 and counts['dropped.missing_object'] == 1
    assert counts['kind.missing_class'] == 1 and counts['dropped.missing_class'] == 0


def test_precision_recall_and_shares_are_not_interchangeable():
    counts = error_counts(DROPPED, SALIENT, MASK, KINDS)
    counts['errors'] = 5  # make precision (2/4) and recall (2/5) differ
    summary = summarise(counts)
    assert summary['precision'] == 50.0 and summary['recall'] == 40.0
    assert summary['share.false_coverage'] == 25.0 and summary['recall.false_coverage'] == 100.0
    assert summary['share.missing_object'] == 25.0 and summary['recall.missing_object'] == 50.0
    assert summary['share.missing_class'] == 0.0 and summary['recall.missing_class'] == 0.0
    assert summary['share.other'] == 50.0  # (0,0) and (0,3): dropped, not an injected error


def test_empty_denominators_give_none_and_no_kinds_give_no_shares():
    nothing = torch.zeros_like(DROPPED)
    summary = summarise(error_counts(nothing, SALIENT, MASK))
    assert summary == {'precision': None, 'recall': 0.0}


def test_totals_pool_the_pixels_of_all_images():
    first = error_counts(DROPPED, SALIENT, MASK)
    second = error_counts(torch.ones_like(DROPPED), SALIENT, MASK)  # 11 valid, 4 errors
    pooled = summarise(total([first, second]))
    assert pooled['precision'] == pytest.approx(100 * (2 + 4) / (4 + 11), abs=0.01)
    assert pooled['recall'] == pytest.approx(100 * 6 / 8, abs=0.01)


def test_kind_values_are_the_generators():
    assert ERROR_KIND_VALUES == {'missing_class': 1, 'missing_object': 2, 'false_coverage': 3}


def test_inconsistent_region_is_what_the_loss_drops():
    # background + 1 class, 3 pixels: M_fg = [0.9, 0.2, 0.7]; saliency [1, 0, 0.1]
    loss = IRDLoss(threshold=0.5, **LITERAL)
    region = loss.inconsistent_region(*THREE_PIXELS)
    assert region.dtype == torch.bool
    assert region.flatten().tolist() == [False, False, True]
    # the loss keeps exactly the other two pixels
    assert loss(*THREE_PIXELS).item() == pytest.approx(PIXEL_3_DROPPED, rel=1e-5)


def fake_runner(rank: int) -> SimpleNamespace:
    """What ``before_train`` reads of an MMEngine runner: rank, seed, model and the builder."""
    return SimpleNamespace(rank=rank, seed=0, build_dataloader=Runner.build_dataloader,
                           model=SimpleNamespace(loss_sal=IRDLoss()))


@pytest.mark.parametrize('rank', [0, 1])
def test_rank_0_alone_builds_the_loader_with_the_configs_workers_never_persistent(rank,
                                                                                  tiny_dataset):
    from harness.stage_configs import set_data_root

    cfg = Config.fromfile(str(PROJECT_ROOT / 'mm_configs/_base_/datasets/shapes_voc_wsss.py'))
    set_data_root(cfg, str(tiny_dataset))
    loader_cfg = dict(cfg.ird_diagnostics_dataloader, num_workers=2, persistent_workers=True,
                      pin_memory=True)
    hook = IRDDiagnosticsHook(loader_cfg)
    with DefaultScope.overwrite_default_scope('mmseg'):
        hook.before_train(fake_runner(rank))
    if rank:
        assert hook.dataloader is loader_cfg
        return
    loader = hook.dataloader
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (2, True, False)
    assert isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    assert len(loader.dataset) == 12  # every image of the tiny dataset's train split
