"""Where one stage-1 training step goes: data, forward, saliency loss, classification loss,
backward, optimizer step.

    python benchmarks/bench_step.py CONFIG [--amp] [--iters 10] [--warmup 3]
                                           [--device cpu|cuda] [--size small|paper]

CONFIG is a stage-1 (``EPSClassifier``) config, e.g.
``mm_configs/eps/epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py`` (``--size small``, CPU) or
``mm_configs/eps/epspp-ird_r101-d8_1xb8-26k_voc12aug-448x448.py`` (``--size paper``, GPU).

The training data is the bundled synthetic set, generated in a temporary folder with images of
64 (``small``) or 448 (``paper``) pixels and laid out as the config's training set expects: its
split file (``train_aug.txt`` for VOC) and a ``cls_labels.npy`` with one entry per foreground
class of the config's dataset (the 5 shape classes, zeros for the others). Only the training
dataloader is built. A ``model.pretrained`` checkpoint is not loaded (it cannot be downloaded
offline, and the timing does not depend on the weights).

The step is MMEngine's ``BaseModel.train_step`` taken apart into the model's own pieces, each
phase timed with ``time.perf_counter`` between ``torch.cuda.synchronize`` calls:

1. data: ``next`` on the dataloader, then ``model.data_preprocessor``;
2. forward: ``model.extract_feat`` and ``model.decode_head``;
3. saliency loss: stacking the saliency maps and ``model.loss_sal`` (PAMR included: outside a
   runner ``IRDLoss``'s warm-up is over, so the inconsistent region is computed every step);
4. classification loss: stacking the labels and ``model.loss_cls``;
5. backward: ``model.parse_losses`` and the optimizer wrapper's ``backward``;
6. optimizer step: the optimizer wrapper's ``step`` and ``zero_grad``.

Phases 1-4 run in the optimizer wrapper's ``optim_context`` (autocast with ``--amp``), as in
``train_step``. Before timing, the losses of the pieces are checked against ``model.loss`` on one
batch, so a change to ``EPSClassifier.loss`` that this benchmark does not follow is an error.
After ``--warmup`` steps, the table gives the median of each phase over ``--iters`` steps, their
sum, and the median of the whole step timed on its own.
"""
import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.runner import Runner
from mmengine.utils.dl_utils import set_multi_processing
from torch import Tensor

from harness.amp import amp_optim_wrapper
from harness.data.synthetic import SyntheticConfig, generate_dataset
from harness.eps.eps_classifier import EPSClassifier, _stack_class_labels, _stack_saliency
from harness.validation import InvalidSetting, stage1_config_file
from mmseg.registry import DATASETS, MODELS
from mmseg.utils import register_all_modules

IMAGE_SIZES = {'small': 64, 'paper': 448}
DATA = 'data (dataloader next + data_preprocessor)'
FORWARD = 'backbone + head forward'
SALIENCY_LOSS = 'saliency loss (PAMR included)'
CLASSIFICATION_LOSS = 'classification loss'
BACKWARD = 'backward'
OPTIMIZER_STEP = 'optimizer step'
PHASES = (DATA, FORWARD, SALIENCY_LOSS, CLASSIFICATION_LOSS, BACKWARD, OPTIMIZER_STEP)
SUM_ROW = 'sum of phases'
STEP_ROW = 'step (timed on its own)'
# Images generated per batch: the sampler cycles through them (augmentation differs each time).
IMAGES_PER_BATCH = 2


def prepare_training_data(cfg: Config, image_size: int, root: Path) -> Path:
    """Generates the bundled set at ``image_size`` under ``root`` and lays it out as
    ``cfg.train_dataloader.dataset`` reads it; returns the folder to use as its ``data_root``."""
    dataset_cfg = cfg.train_dataloader.dataset
    batch_size = cfg.train_dataloader.batch_size
    source = generate_dataset(root / 'generated', SyntheticConfig(
        num_train=IMAGES_PER_BATCH * batch_size, num_val=1, image_size=image_size))
    layout = root / 'layout'
    (layout / Path(dataset_cfg.ann_file).parent).mkdir(parents=True)
    for folder in ('JPEGImages', 'SALImages', 'SegmentationClass'):
        (layout / folder).symlink_to(source / folder)
    (layout / dataset_cfg.ann_file).write_text(
        (source / 'ImageSets' / 'Segmentation' / 'train.txt').read_text())
    num_classes = len(DATASETS.get(dataset_cfg.type).METAINFO['classes']) - 1
    labels = np.load(source / 'cls_labels.npy', allow_pickle=True).item()
    resized = {}
    for image_id, vector in labels.items():
        padded = np.zeros(num_classes, dtype=np.float32)
        padded[:min(num_classes, len(vector))] = vector[:num_classes]
        resized[image_id] = padded
    np.save(layout / dataset_cfg.labels_file, resized, allow_pickle=True)
    return layout


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class StepTimer:
    """Wall time of consecutive phases, each ended by a device synchronisation."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] = time.perf_counter() - start


def forward_losses(model: EPSClassifier, optim_wrapper: OptimWrapper, batches: Iterator[dict],
                   timer: StepTimer) -> Tuple[Dict[str, Tensor], Tensor, list]:
    """Phases 1-4 of a step, in ``EPSClassifier.loss``'s order; returns the losses, the network
    input and the data samples."""
    with timer.phase(DATA), optim_wrapper.optim_context(model):
        data = model.data_preprocessor(next(batches), True)
        inputs, data_samples = data['inputs'], data['data_samples']
    with timer.phase(FORWARD), optim_wrapper.optim_context(model):
        maps, logits = model.decode_head(model.extract_feat(inputs))
    with timer.phase(CLASSIFICATION_LOSS), optim_wrapper.optim_context(model):
        labels = _stack_class_labels([sample.metainfo for sample in data_samples], logits)
        losses = {model.loss_cls.loss_name: model.loss_cls(logits, labels)}
    with timer.phase(SALIENCY_LOSS), optim_wrapper.optim_context(model):
        saliency = _stack_saliency(data_samples, inputs.shape[-2:]).to(inputs.device)
        losses[model.loss_sal.loss_name] = model.loss_sal(maps, saliency, labels, inputs)
    return losses, inputs, data_samples


def update(model: EPSClassifier, optim_wrapper: OptimWrapper, losses: Dict[str, Tensor],
           timer: StepTimer) -> None:
    """Phases 5-6 of a step: what ``OptimWrapper.update_params`` does, in two parts."""
    with timer.phase(BACKWARD):
        loss, _ = model.parse_losses(losses)
        optim_wrapper.backward(optim_wrapper.scale_loss(loss))
    with timer.phase(OPTIMIZER_STEP):
        optim_wrapper.step()
        optim_wrapper.zero_grad()


def check_pieces_match_model_loss(model: EPSClassifier, optim_wrapper: OptimWrapper,
                                  batches: Iterator[dict], device: torch.device) -> None:
    """Raises if the phases' losses differ from ``model.loss`` on the same batch."""
    with torch.no_grad():
        pieces, inputs, data_samples = forward_losses(model, optim_wrapper, batches,
                                                      StepTimer(device))
        with optim_wrapper.optim_context(model):
            expected = model.loss(inputs, data_samples)
    if set(pieces) != set(expected) or any(
            not torch.allclose(pieces[key].float(), expected[key].float(), rtol=1e-3, atol=1e-5)
            for key in expected):
        raise RuntimeError(f'bench_step: the phases compute {pieces}, but EPSClassifier.loss '
                           f'gives {expected} on the same batch: update forward_losses to '
                           'follow EPSClassifier.loss')


def build(cfg: Config, device: torch.device) -> Tuple[EPSClassifier, OptimWrapper]:
    """The model (SyncBN reverted to BN, as MMEngine's runner does without distributed
    training) on ``device`` and its optimizer wrapper."""
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device)
    if not isinstance(model, EPSClassifier) or model.loss_sal is None:
        raise ValueError(f'bench_step: CONFIG must build an EPSClassifier with a saliency loss, '
                         f'got {type(model).__name__}')
    model.train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def run(args: argparse.Namespace, folder: Path) -> Dict[str, List[float]]:
    """Prints what is timed and times the steps, with the training data generated in ``folder``;
    returns the seconds of every timed step, per phase and for the whole step."""
    device = torch.device(args.device)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    notes = []
    if cfg.model.get('pretrained'):
        notes.append(f'model.pretrained=None (was {cfg.model.pretrained}: not downloaded; the '
                     'timing does not depend on the weights)')
        cfg.model.pretrained = None
    if args.amp:
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper)
    cfg.train_dataloader.dataset.data_root = str(
        prepare_training_data(cfg, IMAGE_SIZES[args.size], folder))
    # As MMEngine's runner does: multiprocessing start method and OpenCV threads of env_cfg.
    set_multi_processing(**cfg.get('env_cfg', {}).get('mp_cfg', {}), distributed=False)
    model, optim_wrapper = build(cfg, device)
    pamr = getattr(model.loss_sal, 'pamr', None)
    backbone = f'{type(model.backbone).__name__}-{getattr(model.backbone, "depth", "?")}'
    print(f'{args.config}\n{backbone}, batch '
          f'{cfg.train_dataloader.batch_size}, crop {tuple(cfg.model.data_preprocessor.size)}, '
          f'{IMAGE_SIZES[args.size]}-pixel generated images ({args.size}), {_describe(device)}, '
          f'{getattr(optim_wrapper, "cast_dtype", None) or torch.float32}, '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    print(f'saliency loss {type(model.loss_sal).__name__}{_pamr_path(pamr, device)}; median of '
          f'{args.iters} steps after {args.warmup} warm-up steps')
    for note in notes:
        print(note)

    optim_wrapper.initialize_count_status(model, 0, 1 + args.warmup + args.iters)
    batches = iter(Runner.build_dataloader(cfg.train_dataloader, seed=0))
    check_pieces_match_model_loss(model, optim_wrapper, batches, device)
    seconds: Dict[str, List[float]] = {name: [] for name in PHASES + (STEP_ROW, )}
    for step in range(args.warmup + args.iters):
        timer = StepTimer(device)
        with timer.phase(STEP_ROW):
            losses, _, _ = forward_losses(model, optim_wrapper, batches, timer)
            update(model, optim_wrapper, losses, timer)
        if step >= args.warmup:
            for name, value in timer.seconds.items():
                seconds[name].append(value)
    return seconds


def _pamr_path(pamr: Optional[torch.nn.Module], device: torch.device) -> str:
    """Which path the saliency loss's PAMR takes for its input: one foreground map, float32
    (the loss computes in float32), no gradient."""
    if pamr is None:
        return ''
    with torch.no_grad():
        path = pamr.select_path(torch.zeros(1, 3, 1, 1, device=device),
                                torch.zeros(1, 1, 1, 1, device=device))
    return f' with PAMR path {pamr.path!r} (-> {path!r})'


def _describe(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'cuda ({torch.cuda.get_device_name(device)})'
    return 'cpu'


def print_table(seconds: Dict[str, List[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    step = medians[STEP_ROW]
    print('\n| phase | median (ms) | % of step |')
    print('|---|---:|---:|')
    for name in PHASES + (SUM_ROW, STEP_ROW):
        value = sum(medians[phase] for phase in PHASES) if name == SUM_ROW else medians[name]
        print(f'| {name} | {value * 1e3:.2f} | {100 * value / step:.1f} |')


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='stage-1 (EPSClassifier) config')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (harness.amp: bfloat16 where supported); needs '
                             '--device cuda')
    parser.add_argument('--iters', type=int, default=10, help='timed steps')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps before them')
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--size', choices=tuple(IMAGE_SIZES), default='small',
                        help='side of the generated training images: small 64, paper 448')
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        parser.error('--iters must be >= 1 and --warmup >= 0')
    if args.amp and args.device != 'cuda':
        # AmpOptimWrapper autocasts CUDA operations only: a CPU model would train in float32
        # under an amp label.
        parser.error(f'--amp needs --device cuda (got --device {args.device}): mixed precision '
                     'runs on CUDA only')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    try:
        stage1_config_file(args.config, 'config')
    except InvalidSetting as error:
        parser.exit(2, f'error: {error}\n')
    # The dataloader's workers read the folder until run() returns and drops them.
    with tempfile.TemporaryDirectory(prefix='bench_step-') as folder:
        seconds = run(args, Path(folder))
    print_table(seconds)


if __name__ == '__main__':
    main(sys.argv[1:])
