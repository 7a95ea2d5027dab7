"""Baseline reconstructions: SVD-MRF gridding (``svdmrf``), LRTV (``lrtv``) and a U-Net (``unet``).

Each provides a :class:`mrf_monai.pipeline.Reconstructor` registered in
:mod:`mrf_monai.pipeline` under its module name.
"""

from .svdmrf import SVDMRFReconstructor

__all__ = ["SVDMRFReconstructor"]
