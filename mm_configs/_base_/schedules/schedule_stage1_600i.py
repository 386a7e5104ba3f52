# schedule_stage1_26k.py for the bundled dataset: AdamW from scratch (lr 2e-3), poly decay to 1e-5
# over 600 iterations, one evaluation at the end.
_base_ = './schedule_stage1_26k.py'
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=600, by_epoch=False)]
train_cfg = dict(max_iters=600, val_interval=600)
default_hooks = dict(checkpoint=dict(interval=200, max_keep_ckpts=1))
