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
    ``mask``, ``index``, and ``b1`` for a dictionary with a B1 axis) by dictionary matching.

    ``__call__(img, mask=None, b1_map=None)``: with a B1 map (relative B1 per voxel) each voxel
    is matched only against the atoms of its B1; without one, B1 is free (see
    :func:`match_dictionary`).

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

    def __call__(
        self,
        img: Any,
        mask: Any = None,
        b1_map: Any = None,
        dictionary: Any = None,
        coarse_to_fine: bool | AtomClusters | None = None,
    ) -> dict[str, torch.Tensor]:
        """Match ``img``; ``dictionary`` and ``coarse_to_fine`` override the transform's own for this call."""
        x = convert_to_tensor(img, track_meta=False)
        dictionary = self.dictionary if dictionary is None else dictionary
        if dictionary is None:
            raise ValueError("DictionaryMatch has no dictionary: give one to the transform or to the call")
        return match_dictionary(
            x,
            dictionary,
            chunk_size=self.chunk_size,
            mask=None if mask is None else convert_to_tensor(mask, track_meta=False),
            mask_threshold=self.mask_threshold,
            coarse_to_fine=self.coarse_to_fine if coarse_to_fine is None else coarse_to_fine,
            b1_map=None if b1_map is None else convert_to_tensor(b1_map, track_meta=False),
        )


class DictionaryMatchd(MapTransform):
    """Dictionary-based twin of :class:`DictionaryMatch`.

    For one key, writes ``"t1_s"``, ``"t2_s"``, ``"pd"``, ``"pd_phase"`` and ``"mask"`` (and
    ``"b1"`` when the dictionary has a B1 axis) into the data dictionary; for several keys
    the outputs are named ``"<key>_t1_s"`` and so on so that they do not overwrite each other.

    Args:
        keys: keys of compressed TSMIs ``(R, ...)``.
        dictionary: an ``MRFDictionary`` (``None`` with ``dictionary_key``).
        dictionary_key: read the dictionary from ``data[dictionary_key]`` instead (the dictionary
            of each slice's sequence, :class:`~mrf_monai.transforms.dictionary.AttachDictionaryd`).
        clusters_key: read the atom clusters of the exact clustered search from the data
            (a ``None`` value there means brute force); ``None``: the ``coarse_to_fine`` argument.
        mask_key: optional key of a bool mask to use instead of the thresholded ``|PD|``.
        b1_key: optional key of a relative B1 map (image shape) restricting each voxel to its B1.
        chunk_size, mask_threshold, coarse_to_fine: see :func:`match_dictionary`.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dictionary: Any = None,
        mask_key: Hashable | None = None,
        chunk_size: int | None = None,
        mask_threshold: float = 0.15,
        coarse_to_fine: bool | AtomClusters = False,
        allow_missing_keys: bool = False,
        b1_key: Hashable | None = None,
        dictionary_key: Hashable | None = None,
        clusters_key: Hashable | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if dictionary is None and dictionary_key is None:
            raise ValueError("DictionaryMatchd needs a dictionary or a dictionary_key")
        self.matcher = DictionaryMatch(dictionary, chunk_size, mask_threshold, coarse_to_fine)
        self.mask_key = mask_key
        self.b1_key = b1_key
        self.dictionary_key, self.clusters_key = dictionary_key, clusters_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        mask = d[self.mask_key] if self.mask_key is not None else None
        b1_map = d[self.b1_key] if self.b1_key is not None else None
        dictionary = d[self.dictionary_key] if self.dictionary_key is not None else None
        search = None
        if self.clusters_key is not None:
            clusters = d.get(self.clusters_key)
            search = False if clusters is None else clusters
        for key in keys:
            result = self.matcher(
                d[key], mask=mask, b1_map=b1_map, dictionary=dictionary, coarse_to_fine=search
            )
            for name in (*MATCH_OUTPUT_KEYS, "b1"):
                if name in result:
                    d[name if len(self.keys) == 1 else f"{key}_{name}"] = result[name]
        return d
