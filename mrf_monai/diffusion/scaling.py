"""Per-component scaling of the compressed TSMI inside the diffusion process.

The factors ``w_r`` (one per subspace component, RMS 0.5 on the training set) are shared with
the U-Net baseline, so they are measured and read by :mod:`mrf_monai.engines.scaling`, which
explains them; this module keeps the names where the diffusion code has always found them.
"""

from __future__ import annotations

from mrf_monai.engines.scaling import channel_scale_from_hyper_parameters, measure_channel_scale

__all__ = ["measure_channel_scale", "channel_scale_from_hyper_parameters"]
