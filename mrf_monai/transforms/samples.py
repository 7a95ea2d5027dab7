"""MONAI transforms for probabilistic reconstructions: the mean of K samples and the spread of
the maps matched from each sample (the uncertainty maps of the data contract).

The spread of K = 4-10 samples is a noisy estimate of each voxel's posterior standard deviation
(the sample variance of K values has a relative standard deviation of about ``sqrt(2 / (K - 1))``,
0.8 for K = 4), while the errors it should rank vary smoothly over a few voxels. Pooling the
sample variance over a small neighbourhood (:func:`pooled_std`, a Gaussian of ``smoothing_px``
pixels inside the mask) trades a little resolution of the uncertainty map for many more degrees
of freedom: on the validation and test sets of ``docs/results.md`` it raised the Spearman
correlation of |error| and std from 0.38 / 0.51 (T1 / T2) to 0.47 / 0.56 at 1 pixel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform
from monai.utils import TransformBackends

__all__ = ["SampleMeand", "SampleStdMapsd", "pooled_std"]


def pooled_std(std: torch.Tensor, mask: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Standard deviation from the variance ``std**2`` pooled over a Gaussian neighbourhood.

    ``sqrt(G * (mask std^2) / G * mask)`` with ``G`` a Gaussian of ``sigma_px`` pixels (truncated
    at 3 sigma), normalised by the pooled mask so that the background (0) does not pull the
    border down; 0 outside the mask. ``sigma_px = 0`` returns ``std`` inside the mask.

    Args:
        std: ``(H, W)`` per-voxel standard deviation (any unit, any device).
        mask: ``(H, W)`` bool mask of the voxels that carry one.
        sigma_px: Gaussian width in pixels (``>= 0``).
    """
    if sigma_px < 0:
        raise ValueError(f"the std smoothing width must be >= 0 pixels, got {sigma_px}")
    if std.shape != mask.shape or std.ndim != 2:
        raise ValueError(
            f"std and mask must be the same (H, W), got {tuple(std.shape)} and {tuple(mask.shape)}"
        )
    m = mask.to(std.dtype)
    if sigma_px == 0:
        return std * m
    radius = max(1, int(3.0 * float(sigma_px) + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=std.dtype, device=std.device)
    g = torch.exp(-0.5 * (x / float(sigma_px)) ** 2)
    g = g / g.sum()
    pair = torch.stack([std.square() * m, m])[:, None]  # (2, 1, H, W)
    pair = torch.nn.functional.conv2d(pair, g.view(1, 1, -1, 1), padding=(radius, 0))
    pair = torch.nn.functional.conv2d(pair, g.view(1, 1, 1, -1), padding=(0, radius))
    var = pair[0, 0] / pair[1, 0].clamp_min(torch.finfo(std.dtype).tiny)
    return torch.where(mask, var.clamp_min(0).sqrt(), torch.zeros((), dtype=std.dtype, device=std.device))


class SampleMeand(MapTransform):
    """Split samples ``(K, ...)`` into their mean (``mean_key``) and, for ``K > 1``, the samples.

    Args:
        keys: one key holding ``(K, R, H, W)`` samples (a deterministic method gives ``K = 1``).
        mean_key: where the mean ``(R, H, W)`` goes (the TSMI that is matched).
        samples_key: where the samples go when ``K > 1`` (``None``: not kept).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: str = "pred",
        mean_key: str = "tsmi",
        samples_key: str | None = "samples",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError("SampleMeand takes one key")
        self.mean_key, self.samples_key = mean_key, samples_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            d[self.mean_key] = x.mean(dim=0)
            if self.samples_key is not None and x.shape[0] > 1:
                d[self.samples_key] = x
        return d


class SampleStdMapsd(MapTransform):
    """Standard deviation (ddof 0) of T1 and T2 over the maps matched from each sample.

    Each sample is matched inside the mask of the mean's match (``data[mask_key]``) with the
    same dictionary and search (and, with ``b1_key``, the same B1 map: each voxel restricted to
    its B1, or B1 free when the map is ``None``); voxels outside the mask are 0. Does nothing when
    the data hold no samples (deterministic methods).

    Args:
        samples_key: ``(K, R, H, W)`` complex samples (:class:`SampleMeand`).
        dictionary_key: the ``MRFDictionary``.
        clusters_key: the atom clusters of the exact clustered search (``None`` value: brute force).
        mask_key: the mask of the mean's match.
        b1_key: the relative B1 map ``(H, W)`` the mean was matched with
            (:class:`~mrf_monai.transforms.b1.LoadB1Mapd`'s ``"b1_map"``), or ``None``: no map.
        t1_key, t2_key: where the ``(H, W)`` standard-deviation maps go (seconds).
        smoothing_px: pool each voxel's sample variance over a Gaussian neighbourhood of this
            many pixels inside the mask (:func:`pooled_std`; 0: the plain per-voxel spread).
    """

    def __init__(
        self,
        samples_key: str = "samples",
        dictionary_key: str = "dictionary",
        clusters_key: str = "clusters",
        mask_key: str = "mask",
        t1_key: str = "t1_std_s",
        t2_key: str = "t2_std_s",
        b1_key: str | None = None,
        smoothing_px: float = 0.0,
    ) -> None:
        super().__init__([samples_key], allow_missing_keys=True)
        if not isinstance(smoothing_px, int | float) or isinstance(smoothing_px, bool) or smoothing_px < 0:
            raise ValueError(f"std_smoothing_px must be a number >= 0 (pixels), got {smoothing_px!r}")
        self.smoothing_px = float(smoothing_px)
        self.samples_key, self.dictionary_key, self.clusters_key = samples_key, dictionary_key, clusters_key
        self.mask_key, self.t1_key, self.t2_key = mask_key, t1_key, t2_key
        self.b1_key = b1_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from mrf_monai.matching.match import match_dictionary

        d = dict(data)
        samples = d.get(self.samples_key)
        if samples is None:
            return d
        if self.mask_key not in d:
            raise KeyError(
                f"SampleStdMapsd needs the mask of the mean's match under {self.mask_key!r}; match first"
            )
        mask = torch.as_tensor(d[self.mask_key]).bool()
        clusters = d.get(self.clusters_key)
        b1_map = d.get(self.b1_key) if self.b1_key is not None else None
        t1, t2 = [], []
        for sample in torch.as_tensor(samples):
            r = match_dictionary(
                sample,
                d[self.dictionary_key],
                mask=mask,
                coarse_to_fine=False if clusters is None else clusters,
                b1_map=b1_map,
            )
            t1.append(r["t1_s"])
            t2.append(r["t2_s"])
        for key, maps in ((self.t1_key, t1), (self.t2_key, t2)):
            std = torch.stack(maps).std(dim=0, correction=0)
            d[key] = pooled_std(std, mask.to(std.device), self.smoothing_px)
        return d
