# The EPS / EPS++ stage-1 schedule on VOC (TPAMI 2023, Sec. 5.1): ~20 epochs of train_aug at
# batch 8 (26.5k iterations), schedule_40k's SGD (lr 0.01, momentum 0.9, weight decay 5e-4) with
# poly decay to 0; the classifier is new, so EPS trains it at 10x the backbone's learning rate.
# One evaluation, at the end.
_base_ = './schedule_40k.py'
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=10.0)}))
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=26500, by_epoch=False)]
train_cfg = dict(max_iters=26500, val_interval=26500)
default_hooks = dict(checkpoint=dict(interval=2000))
