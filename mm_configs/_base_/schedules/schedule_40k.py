# The stage-2 schedule of mmseg's DeepLabV3+ (and of WSSS papers' stage 2): SGD lr 0.01, momentum
# 0.9, weight decay 5e-4, poly decay to 1e-4 over 40k iterations, evaluated every 4k.
_base_ = './schedule_stage2_600i.py'
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000, by_epoch=False)]
train_cfg = dict(max_iters=40000, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000, max_keep_ckpts=2))
