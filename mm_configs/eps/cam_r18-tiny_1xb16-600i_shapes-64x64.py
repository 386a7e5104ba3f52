# CAM-only baseline on the bundled dataset: classification loss alone. The background map is never
# trained, so pseudo-masks use the usual CAM rule: max-normalised class maps vs a constant
# background score.
_base_ = './epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
model = dict(loss_sal=None, test_cfg=dict(bg_threshold=0.25))
# No IRD, so no IRD diagnostics: pseudo-masks only.
custom_hooks = [
    dict(type='PAMRHook', dataloader={{_base_.pseudo_mask_dataloader}}, out_dir='pseudo_masks')
]
