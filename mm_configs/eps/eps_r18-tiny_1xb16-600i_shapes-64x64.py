# EPS stage 1 (overlap-ratio saliency loss, CVPR 2021) on the bundled dataset.
_base_ = './epspp-ird_r18-tiny_1xb16-600i_shapes-64x64.py'
# The saliency map is resized to the 8x8 maps bilinearly: the EPS code's nearest keeps the top-left
# pixel of every 8x8 cell, about half a cell off the maps' grid, and measured worse here
# (docs/eps_fidelity.md).
model = dict(
    loss_sal=dict(_delete_=True, type='EPSLoss', tau=0.4, lam=0.5, resize='bilinear'))
# No IRD, so no IRD diagnostics: pseudo-masks only.
custom_hooks = [
    dict(type='PAMRHook', dataloader={{_base_.pseudo_mask_dataloader}}, out_dir='pseudo_masks')
]
