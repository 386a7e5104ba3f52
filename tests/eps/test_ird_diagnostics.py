"""IRD's dropped region against the saliency errors: counts, ratios, and the region itself."""
import pytest
import torch

from harness.data.synthetic import ERROR_KIND_VALUES
from harness.eps import IRDLoss
from harness.eps.ird_diagnostics import error_counts, summarise, total

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
    maps = torch.log(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]).T).view(1, 2, 1, 3)
    saliency = torch.tensor([1.0, 0.0, 0.1]).view(1, 1, 1, 3)
    loss = IRDLoss(threshold=0.5, pamr=dict(type='PAMR', num_iter=0, dilations=(1, )),
                   refine='softmax')
    region = loss.inconsistent_region(maps, saliency, torch.ones(1, 1), torch.zeros(1, 3, 1, 3))
    assert region.dtype == torch.bool
    assert region.flatten().tolist() == [False, False, True]
    # the loss keeps exactly the other two pixels
    kept = ((1.0 - 0.9) ** 2 + (0.0 - 0.2) ** 2) / 2
    value = loss(maps, saliency, torch.ones(1, 1), torch.zeros(1, 3, 1, 3))
    assert value.item() == pytest.approx(kept, rel=1e-5)
