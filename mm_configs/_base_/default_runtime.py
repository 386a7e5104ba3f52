# Runtime shared by every eps-harness config (mmseg's default_runtime, plus our components).
default_scope = 'mmseg'
custom_imports = dict(imports=['harness.eps'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
# No fixed name: each Runner (a trial runs two) then gets a visualizer of its own.
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
