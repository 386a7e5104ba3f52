import pytest
import torch

from harness.eps import CAMHead


def test_maps_and_logits_shapes_and_values():
    head = CAMHead(in_channels=8, num_classes=3)
    feats = (torch.randn(2, 4, 5, 5), torch.randn(2, 8, 6, 7))
    maps, logits = head(feats)
    assert maps.shape == (2, 4, 6, 7)
    assert logits.shape == (2, 3)
    expected_maps = torch.einsum('oc,bchw->bohw', head.classifier.weight[:, :, 0, 0], feats[1])
    torch.testing.assert_close(maps, expected_maps)
    # logits are the spatial mean of the class maps (channels 1..C), not of the background map
    torch.testing.assert_close(logits, expected_maps[:, 1:].mean(dim=(2, 3)))


def test_reads_the_chosen_backbone_output():
    head = CAMHead(in_channels=4, num_classes=2, in_index=0)
    maps, _ = head((torch.randn(1, 4, 3, 3), torch.randn(1, 9, 2, 2)))
    assert maps.shape == (1, 3, 3, 3)


def test_exposes_what_encoder_decoder_reads():
    head = CAMHead(in_channels=4, num_classes=20)
    assert head.num_classes == head.out_channels == 21
    assert head.align_corners is False


def test_rejects_no_classes():
    with pytest.raises(ValueError, match='num_classes'):
        CAMHead(in_channels=4, num_classes=0)
