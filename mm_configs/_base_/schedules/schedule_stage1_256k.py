# schedule_stage1_26k.py at the EPS code's COCO length (script/coco_eps.sh): 50 epochs of
# train2014 at batch 16, 256.5k iterations.
_base_ = './schedule_stage1_26k.py'
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=256500, by_epoch=False)]
train_cfg = dict(max_iters=256500, val_interval=256500)
default_hooks = dict(checkpoint=dict(interval=10000))
