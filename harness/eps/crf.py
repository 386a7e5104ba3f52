"""Fully-connected CRF refinement of pseudo-masks (Krähenbühl & Koltun, NeurIPS 2011).

As in PSA (Ahn & Kwak, CVPR 2018) and EPS's ``util/imutils.py``; inference by ``pydensecrf2``
(``import pydensecrf``).
"""
from typing import Optional

import numpy as np

from mmseg.registry import MODELS
from .arguments import is_integer, is_number


@MODELS.register_module()
class DenseCRF:
    """Mean-field inference of a fully-connected CRF over ``K`` class scores of one image.

    ``E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)`` with Potts compatibility and
    two Gaussian kernels (positions ``p`` in pixels, colours ``I`` in 0..255):

    - smoothness: ``gaussian_compat * exp(-|p_i - p_j|^2 / (2 gaussian_sxy^2))``;
    - appearance: ``bilateral_compat * exp(-|p_i - p_j|^2 / (2 bilateral_sxy^2)
      - |I_i - I_j|^2 / (2 bilateral_srgb^2))``.

    The unary is ``U_i(k) = -log(max(s_ik, min_score))`` of the class scores ``s``; only the
    ratios of a pixel's scores matter, so they need not sum to 1. A class whose score is 0 at
    every pixel takes no part and stays 0. Defaults are PSA's and EPS's ``crf_inference``
    (DeepLab's: ``gaussian_sxy=1, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3,
    bilateral_compat=4``).

    Args:
        num_iter (int): Mean-field iterations, >= 1. Default: 10.
        gaussian_sxy (float): Smoothness kernel width in pixels, > 0. Default: 3.0.
        gaussian_compat (float): Smoothness kernel weight, >= 0. Default: 3.0.
        bilateral_sxy (float): Appearance kernel spatial width in pixels, > 0. Default: 80.0.
        bilateral_srgb (float): Appearance kernel colour width in intensity levels (0..255),
            > 0. Default: 13.0.
        bilateral_compat (float): Appearance kernel weight, >= 0. Default: 10.0.
        min_score (float): Lower clip of the scores before the log, in (0, 1). Default: 1e-5.

    Raises:
        ValueError: If an argument is outside its range.
    """

    def __init__(self,
                 num_iter: int = 10,
                 gaussian_sxy: float = 3.0,
                 gaussian_compat: float = 3.0,
                 bilateral_sxy: float = 80.0,
                 bilateral_srgb: float = 13.0,
                 bilateral_compat: float = 10.0,
                 min_score: float = 1e-5) -> None:
        if not is_integer(num_iter) or num_iter < 1:
            raise ValueError(f'DenseCRF: num_iter must be an int >= 1, got {num_iter!r}')
        for name, value, minimum in (('gaussian_sxy', gaussian_sxy, None),
                                     ('gaussian_compat', gaussian_compat, 0.0),
                                     ('bilateral_sxy', bilateral_sxy, None),
                                     ('bilateral_srgb', bilateral_srgb, None),
                                     ('bilateral_compat', bilateral_compat, 0.0)):
            _check_number(name, value, minimum)
        if not _is_number(min_score) or not 0.0 < min_score < 1.0:
            raise ValueError(f'DenseCRF: min_score must be a number in (0, 1), got {min_score!r}')
        self.num_iter = int(num_iter)
        self.gaussian_sxy = float(gaussian_sxy)
        self.gaussian_compat = float(gaussian_compat)
        self.bilateral_sxy = float(bilateral_sxy)
        self.bilateral_srgb = float(bilateral_srgb)
        self.bilateral_compat = float(bilateral_compat)
        self.min_score = float(min_score)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_iter={self.num_iter}, '
                f'gaussian_sxy={self.gaussian_sxy}, gaussian_compat={self.gaussian_compat}, '
                f'bilateral_sxy={self.bilateral_sxy}, bilateral_srgb={self.bilateral_srgb}, '
                f'bilateral_compat={self.bilateral_compat}, min_score={self.min_score})')

    def __call__(self, image: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Refines the class scores of one image.

        Args:
            image (np.ndarray): Colour image, uint8 ``[H, W, 3]`` (RGB or BGR alike).
            scores (np.ndarray): Non-negative class scores ``[K, H, W]``; 0 everywhere for an
                absent class.

        Returns:
            np.ndarray: Marginals, float32 ``[K, H, W]``: a distribution over the present
            classes at each pixel, 0 for the absent ones.

        Raises:
            ValueError: If ``image`` or ``scores`` has the wrong dtype or shape, or ``scores``
                is not finite and non-negative.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'DenseCRF: image must be uint8 [H, W, 3], got {image.dtype} '
                             f'{list(image.shape)}')
        if scores.ndim != 3 or scores.shape[1:] != image.shape[:2]:
            raise ValueError(f'DenseCRF: scores must be [K, H, W] with the image\'s H, W = '
                             f'{list(image.shape[:2])}, got {list(scores.shape)}')
        if not np.all(np.isfinite(scores)) or scores.min() < 0:
            raise ValueError('DenseCRF: scores must be finite and non-negative')
        num_classes, height, width = scores.shape
        present = np.flatnonzero(scores.reshape(num_classes, -1).max(axis=1) > 0)
        marginals = np.zeros(scores.shape, dtype=np.float32)
        if len(present) < 2:  # one class (or none): nothing for the CRF to decide
            marginals[present] = 1.0
            return marginals
        unary = -np.log(np.maximum(scores[present], self.min_score)).astype(np.float32)
        # Imported here: importing harness.eps must not need the compiled CRF.
        import pydensecrf.densecrf as dcrf

        crf = dcrf.DenseCRF2D(width, height, len(present))
        crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(len(present), -1)))
        crf.addPairwiseGaussian(sxy=self.gaussian_sxy, compat=self.gaussian_compat)
        crf.addPairwiseBilateral(sxy=self.bilateral_sxy, srgb=self.bilateral_srgb,
                                 rgbim=np.ascontiguousarray(image), compat=self.bilateral_compat)
        refined = np.asarray(crf.inference(self.num_iter), dtype=np.float32)
        marginals[present] = refined.reshape(len(present), height, width)
        return marginals


def _is_number(value: object) -> bool:
    return is_number(value) and np.isfinite(value)


def _check_number(name: str, value: object, minimum: Optional[float] = None) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number ``> 0`` (or
    ``>= minimum`` when given)."""
    valid = _is_number(value) and (value > 0 if minimum is None else value >= minimum)
    if not valid:
        bound = '> 0' if minimum is None else f'>= {minimum:g}'
        raise ValueError(f'DenseCRF: {name} must be a number {bound}, got {value!r}')
