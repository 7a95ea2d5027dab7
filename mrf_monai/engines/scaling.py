"""Per-component scaling of the compressed TSMI inside the learned models.

After the per-slice normalisation (``docs/interfaces.md``), the subspace components have very
different sizes: component 0 (the mean fingerprint) has an RMS of about 0.3, components 3 and 4
of about 0.01. A diffusion model adds unit-variance noise, so such small components would be
drowned at almost every timestep, and an L1-trained U-Net would be dominated by component 0,
yet the ratios between components are what encode T1 and T2. As in MRF-DiPh's fixed global
scale factors, every component ``r`` is multiplied by one global factor ``w_r`` (the same for
its real and imaginary channel, so complex structure is kept) that brings its RMS over the
training data to ``target_rms``. The factors are measured once on the training set, stored with
the weights (``hyper_parameters["data"]["channel_scale"]``) and applied to reference and
condition in training and to condition and network output at inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["measure_channel_scale", "channel_scale_from_hyper_parameters"]


def measure_channel_scale(
    dataset: Any, n_items: int = 32, target_rms: float = 0.5, key: str = "image"
) -> torch.Tensor:
    """Factors ``(2R,)`` that give each complex component an RMS of ``target_rms``.

    Args:
        dataset: map-style dataset of dicts whose ``key`` is a ``(2R, H, W)`` real tensor in the
            ``[Re 0..R-1, Im 0..R-1]`` layout.
        n_items: items averaged (the first ``n_items``).
        target_rms: RMS of every complex component after scaling.
        key: which entry to measure (the reference).
    """
    n = min(int(n_items), len(dataset))
    if n < 1:
        raise ValueError("cannot measure channel scales on an empty dataset")
    power = None
    for i in range(n):
        x = torch.as_tensor(dataset[i][key]).float()
        r = x.shape[0] // 2
        p = (x[:r] ** 2 + x[r:] ** 2).mean(dim=(-2, -1))
        power = p if power is None else power + p
    rms = torch.sqrt(power / n).clamp(min=1e-12)
    w = target_rms / rms
    return torch.cat([w, w]).float()


def channel_scale_from_hyper_parameters(hyper_parameters: Mapping[str, Any]) -> torch.Tensor | None:
    """The stored factors ``(2R,)`` of a model, or ``None`` for models without them."""
    data = hyper_parameters.get("data") or {}
    scale: Sequence[float] | None = data.get("channel_scale")
    return None if scale is None else torch.as_tensor(list(scale), dtype=torch.float32)
