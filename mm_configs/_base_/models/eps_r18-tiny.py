# A small EPS / EPS++ stage-1 network for CPU runs, as a delta on the paper-size one:
# ResNetV1c-18 at a quarter of the width, still output stride 8 (dilated stages 3-4), trained
# from scratch, BN (not SyncBN: CPU runs), 64x64 crops, the bundled dataset's 5 classes.
_base_ = './eps_r101-d8.py'
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=(64, 64))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(depth=18, stem_channels=16, base_channels=16, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=128, num_classes=5),
    # From scratch the network would otherwise settle on background everywhere: nothing is
    # dropped for the first third of training (see IRDLoss).
    # resize: only for a saliency map of another size than the image, which training never
    # passes (docs/eps_fidelity.md).
    loss_sal=dict(warmup_iters=200, resize='bilinear'))
