"""MONAI transforms for probabilistic reconstructions: the mean of K samples and the spread of
the maps matched from each sample (the uncertainty maps of the data contract)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform
from monai.utils import TransformBackends

__all__ = ["SampleMeand", "SampleStdMapsd"]


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
    ) -> None:
        super().__init__([samples_key], allow_missing_keys=True)
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
        zero = torch.zeros((), dtype=torch.float32, device=mask.device)
        d[self.t1_key] = torch.where(mask, torch.stack(t1).std(dim=0, correction=0), zero)
        d[self.t2_key] = torch.where(mask, torch.stack(t2).std(dim=0, correction=0), zero)
        return d
