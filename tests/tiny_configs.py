"""The paper configs shrunk for CPU tests: templates and overrides (``TrialSpec`` syntax)."""

# The paper configs with a backbone small enough for CPU and no ImageNet weights (which cannot be
# downloaded here); data pipelines, crops and test-time settings are the configs' own.
TINY_STAGE1 = """
_base_ = '{config}'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(pretrained=None,
             backbone=dict(depth=18, stem_channels=8, base_channels=8, norm_cfg=norm_cfg),
             decode_head=dict(in_channels=64))
"""
TINY_STAGE2 = """
_base_ = '{config}'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(pretrained=None,
             backbone=dict(depth=18, stem_channels=8, base_channels=8, norm_cfg=norm_cfg),
             decode_head=dict(in_channels=64, channels=16, c1_in_channels=8, c1_channels=8,
                              norm_cfg=norm_cfg),
             auxiliary_head=dict(in_channels=32, channels=8, norm_cfg=norm_cfg))
"""
IN_PROCESS = {'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False,
              'val_dataloader.num_workers': 0, 'val_dataloader.persistent_workers': False}
SHORT = {'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2, 'param_scheduler.0.end': 2,
         'default_hooks.checkpoint.interval': 2, 'train_dataloader.batch_size': 2, **IN_PROCESS}

# Stage 2's 512-pixel crops would take most of the test's time: images resized to 128 pixels
# times 0.5..2 (so the crops are at most 256), same pipeline steps.
SMALL_STAGE2_CROPS = {'model.data_preprocessor.size': (256, 256),
                      'pseudo_labelled_dataset.pipeline.2.scale': (512, 128),
                      'val_dataloader.dataset.pipeline.1.scale': (512, 128)}
