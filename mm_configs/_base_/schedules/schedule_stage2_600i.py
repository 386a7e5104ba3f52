# schedule_40k.py for the bundled dataset: AdamW from scratch, poly decay to 1e-5 over 600
# iterations, evaluation at the end. lr 1e-2: at 2e-3 the segmentation network still predicted
# background everywhere after 200 iterations; at 1e-2 it learned the shapes.
_base_ = './schedule_40k.py'
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-2, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=600, by_epoch=False)]
train_cfg = dict(max_iters=600, val_interval=600)
default_hooks = dict(checkpoint=dict(interval=200, max_keep_ckpts=1))
