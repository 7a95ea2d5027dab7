"""MONAI transforms around :func:`mrf_monai.matching.match_dictionary`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

from ..matching.match import AtomClusters, match_dictionary

__all__ = ["MATCH_OUTPUT_KEYS", "DictionaryMatch", "DictionaryMatchd"]

#: Keys written by :class:`DictionaryMatchd` (plus ``"b1"`` when the dictionary has B1).
MATCH_OUTPUT_KEYS = ("t1_s", "t2_s", "pd", "pd_phase", "mask")


class DictionaryMatch(Transform):
    """Compressed TSMI ``(R, ...)`` -> dict of maps (``t1_s``, ``t2_s``, ``pd``, ``pd_phase``,
    ``mask``, ``index``) by dictionary matching.

    Args:
        dictionary: an ``MRFDictionary``; the search runs on its device.
        chunk_size, mask_threshold, coarse_to_fine: see :func:`match_dictionary`.
    """

    def __init__(
        self,
        dictionary: Any,
        chunk_size: int | None = None,
        mask_threshold: float = 0.15,
        coarse_to_fine: bool | AtomClusters = False,
    ) -> None:
        self.dictionary = dictionary
        self.chunk_size = chunk_size
        self.mask_threshold = mask_threshold
        self.coarse_to_fine = coarse_to_fine

    def __call__(self, img: Any, mask: Any = None) -> dict[str, torch.Tensor]:
        x = convert_to_tensor(img, track_meta=False)
        return match_dictionary(
            x,
            self.dictionary,
            chunk_size=self.chunk_size,
            mask=None if mask is None else convert_to_tensor(mask, track_meta=False),
            mask_threshold=self.mask_threshold,
            coarse_to_fine=self.coarse_to_fine,
        )


class DictionaryMatchd(MapTransform):
    """Dictionary-based twin of :class:`DictionaryMatch`.

    For one key, writes ``"t1_s"``, ``"t2_s"``, ``"pd"``, ``"pd_phase"`` and ``"mask"`` (and
    ``"b1"`` when the dictionary has a B1 axis) into the data dictionary; for several keys
    the outputs are named ``"<key>_t1_s"`` and so on so that they do not overwrite each other.

    Args:
        keys: keys of compressed TSMIs ``(R, ...)``.
        dictionary: an ``MRFDictionary``.
        mask_key: optional key of a bool mask to use instead of the thresholded ``|PD|``.
        chunk_size, mask_threshold, coarse_to_fine: see :func:`match_dictionary`.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dictionary: Any,
        mask_key: Hashable | None = None,
        chunk_size: int | None = None,
        mask_threshold: float = 0.15,
        coarse_to_fine: bool | AtomClusters = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.matcher = DictionaryMatch(dictionary, chunk_size, mask_threshold, coarse_to_fine)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        mask = d[self.mask_key] if self.mask_key is not None else None
        for key in keys:
            result = self.matcher(d[key], mask=mask)
            for name in (*MATCH_OUTPUT_KEYS, "b1"):
                if name in result:
                    d[name if len(self.keys) == 1 else f"{key}_{name}"] = result[name]
        return d
