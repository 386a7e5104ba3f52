# EPS++ stage 1 (IRD saliency loss) on the bundled dataset; CPU, a few minutes on 2 cores.
_base_ = [
    '../_base_/models/eps_r18-tiny.py', '../_base_/datasets/shapes_voc_wsss.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_stage1_600i.py'
]
# Pseudo-masks of the train split, and how well IRD's dropped region finds the saliency errors
# (ird/precision, ird/recall, per error kind) every 100 iterations after the warm-up and at the end.
custom_hooks = [
    dict(type='PAMRHook', dataloader={{_base_.pseudo_mask_dataloader}}, out_dir='pseudo_masks'),
    dict(type='IRDDiagnosticsHook', dataloader={{_base_.ird_diagnostics_dataloader}},
         interval=100),
]
