# Stage 2 on the bundled dataset: DeepLabV3+ trained on pseudo-masks (WSSS) or on a labelled
# fraction plus pseudo-masks (SSSS); see _base_/datasets/shapes_voc_stage2.py.
_base_ = [
    '../_base_/models/deeplabv3plus_r18-tiny.py', '../_base_/datasets/shapes_voc_stage2.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_stage2_600i.py'
]
