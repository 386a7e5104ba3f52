import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from PIL import Image
from torch.utils.data import DataLoader

from harness.data import synthetic
from harness.eps.pseudo_masks import (generate_pseudo_masks, load_weights, read_checkpoint,
                                      write_palette_png)
from mmseg.structures import SegDataSample


class FixedModel(torch.nn.Module):
    """Predicts the ground truth, except ``[[1, 1], [0, 1]]`` in image 'a'."""

    def test_step(self, batch):
        outputs = []
        for sample in batch['data_samples']:
            prediction = sample.gt_sem_seg.data.clone()
            if sample.metainfo['img_id'] == 'a':
                prediction[:] = torch.tensor([[1, 1], [0, 1]])
            out = SegDataSample(metainfo=sample.metainfo)
            out.gt_sem_seg = sample.gt_sem_seg
            out.pred_sem_seg = PixelData(data=prediction)
            outputs.append(out)
        return outputs


class TinySplit(torch.utils.data.Dataset):
    metainfo = dict(classes=('background', 'x', 'y'), palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]])

    def __init__(self):
        self.items = []
        for image_id, values in (('a', [[0, 2], [0, 2]]), ('b', [[1, 1], [0, 2]])):
            sample = SegDataSample(metainfo=dict(img_id=image_id))
            sample.gt_sem_seg = PixelData(data=torch.tensor([values]))
            self.items.append(sample)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def loader():
    return DataLoader(TinySplit(), batch_size=2, collate_fn=lambda s: dict(data_samples=s))


def test_writes_palette_pngs_and_scores_them(tmp_path):
    metrics = generate_pseudo_masks(FixedModel(), loader(), tmp_path / 'masks')
    written = Image.open(tmp_path / 'masks' / 'a.png')
    assert written.mode == 'P'
    np.testing.assert_array_equal(np.asarray(written), [[1, 1], [0, 1]])
    assert written.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'masks' / 'b.png')),
                                  [[1, 1], [0, 2]])
    # gt a = [[0, 2], [0, 2]], b = [[1, 1], [0, 2]]; predicted a = [[1, 1], [0, 1]], b = gt
    # background: gt 3 pixels, predicted 2, both 2 -> 2 / 3; x: gt 2, predicted 5, both 2 ->
    # 2 / 5; y: gt 3, predicted 1, both 1 -> 1 / 3 (percent, rounded to 2 decimals); 5 of 8
    # pixels right; recall 2 / 3, 2 / 2, 1 / 3
    assert metrics == pytest.approx({'pseudo/aAcc': 62.5, 'pseudo/mIoU': 46.67,
                                     'pseudo/mAcc': 66.67, 'pseudo/IoU.background': 66.67,
                                     'pseudo/IoU.x': 40.0, 'pseudo/IoU.y': 33.33}, abs=1e-4)
    assert not (tmp_path / 'masks.partial').exists()


def test_never_overwrites_an_existing_folder(tmp_path):
    (tmp_path / 'masks').mkdir()
    (tmp_path / 'masks' / 'mine.png').write_bytes(b'user data')
    with pytest.raises(FileExistsError, match='masks already exists'):
        generate_pseudo_masks(FixedModel(), loader(), tmp_path / 'masks')
    assert (tmp_path / 'masks' / 'mine.png').read_bytes() == b'user data'


def test_palette_png_uses_the_dataset_palette(tmp_path):
    write_palette_png(tmp_path / 'm.png', np.array([[0, 3], [255, 1]]), synthetic.PALETTE)
    image = Image.open(tmp_path / 'm.png')
    np.testing.assert_array_equal(np.asarray(image), [[0, 3], [255, 1]])
    assert image.getpalette()[9:12] == list(synthetic.PALETTE[3])


def test_weights_load_strictly_also_from_a_ddp_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    trained = {key: value + 1 for key, value in model.state_dict().items()}
    torch.save({'state_dict': {f'module.{key}': value for key, value in trained.items()}},
               tmp_path / 'ddp.pth')
    ddp = str(tmp_path / 'ddp.pth')
    load_weights(model, read_checkpoint(ddp), ddp, 'stage1.py')
    assert torch.equal(model.weight, trained['weight'])

    torch.save({'state_dict': torch.nn.Linear(3, 4).state_dict()}, tmp_path / 'wide.pth')
    with pytest.raises(ValueError, match=r'checkpoint \S+wide.pth does not fit the model of '
                       r'stage1.py .*size mismatch for weight') as caught:
        wide = str(tmp_path / 'wide.pth')
        load_weights(model, read_checkpoint(wide), wide, 'stage1.py')
    assert '\n' not in str(caught.value)


def test_ground_truth_beyond_the_classes_is_refused_naming_the_mask(tmp_path):
    """A ground-truth id of no class (7 with 3 classes) would be left out of the IoU silently."""
    split = TinySplit()
    split.items[1].gt_sem_seg = PixelData(data=torch.tensor([[[1, 7], [0, 255]]]))
    split.items[1].set_metainfo(dict(seg_map_path='masks/b.png'))
    data = DataLoader(split, batch_size=2, collate_fn=lambda s: dict(data_samples=s))
    with pytest.raises(ValueError, match=r'masks/b\.png holds class indices \[7\]; valid are '
                       r'0\.\.2 and 255'):
        generate_pseudo_masks(FixedModel(), data, tmp_path / 'masks')
    assert not (tmp_path / 'masks').exists() and not (tmp_path / 'masks.partial').exists()
