# EPS stage 1 (CVPR 2021) on MS COCO 2014, exactly the EPS code's COCO run (script/coco_eps.sh):
# the EPS++ COCO setting with the overlap-ratio saliency loss, tau 0.4 and lambda 0.9, the
# saliency map resized to the maps' size with nearest (F.interpolate's default there).
_base_ = './epspp-ird_r101-d8_1xb16-256k_coco14-321x321.py'
model = dict(
    loss_sal=dict(_delete_=True, type='EPSLoss', tau=0.4, lam=0.9, resize='nearest'))
