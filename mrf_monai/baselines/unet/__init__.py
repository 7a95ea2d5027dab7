"""U-Net baseline: a residual U-Net that de-aliases the gridded compressed TSMI in one pass.

``network`` (:class:`ResidualUNet`, its factory and weights files), ``training``
(:class:`UNetTrainer` on the shared engine :mod:`mrf_monai.engines`) and ``inferer``
(:class:`PaddedInferer`, the inferer of ``bundles/unet_baseline/configs/inference.json``, which is
the ``--method unet`` of the pipeline). It is trained on the same
simulated pairs and patches as MRF-IDDPM with an L1 (default) or MSE loss and applied to the
whole slice at once; intensities are normalised as for MRF-IDDPM (``docs/interfaces.md``).
"""

from .inferer import PaddedInferer
from .network import (
    UNET_CHECKPOINT_FORMAT,
    ResidualUNet,
    build_unet,
    load_model,
    load_unet_checkpoint,
    pad_to_multiple,
    predict_padded,
    save_unet_checkpoint,
    training_data_description,
    unet_hyper_parameters,
)
from .training import UNetTrainer

__all__ = [
    "UNET_CHECKPOINT_FORMAT",
    "ResidualUNet",
    "build_unet",
    "unet_hyper_parameters",
    "pad_to_multiple",
    "training_data_description",
    "save_unet_checkpoint",
    "load_unet_checkpoint",
    "load_model",
    "predict_padded",
    "UNetTrainer",
    "PaddedInferer",
]
