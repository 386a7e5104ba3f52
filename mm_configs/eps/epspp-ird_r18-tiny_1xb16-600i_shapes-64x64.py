# EPS++ stage 1 (IRD saliency loss) on the bundled dataset; CPU, a few minutes on 2 cores.
_base_ = [
    '../_base_/models/eps_r18-tiny.py', '../_base_/datasets/shapes_voc_wsss.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_stage1_600i.py'
]
