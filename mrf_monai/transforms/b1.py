"""MONAI transforms for B1+: each slice's transmit-field map, or what to do without one.

:class:`LoadB1Mapd` puts the slice's relative B1+ map ``(Nx, Ny)`` into ``data["b1_map"]``: from
``sub-<label>/b1/sub-<label>_TB1map.nii.gz`` (data contract section 5, the BIDS name) or from a
file given by path, checked against the raw data's matrix, slices and affine (a clear error
naming the file otherwise); read once per file. Without a map it writes ``None`` and the
policy: ``"ignore"`` (assume B1 = 1, the default) or ``"free"`` (match B1 as a free dictionary
parameter). Measured (``docs/scanner-data.md``): free B1 pays on fully sampled data, but on
accelerated reconstructions (SVD-MRF, LRTV, MRF-IDDPM, in the subspace they share) it raises the
T2 error more than it lowers the T1 error, at 3-4x the matching time.
The handling (``"map"``, ``"free"`` or ``"ignore"``) goes to ``data["b1_handling"]`` for
:class:`~mrf_monai.transforms.dictionary.AttachDictionaryd` (which picks the dictionary with or
without a B1 axis and the matching clusters) and, with the file, to ``data["acquisition_info"]
["B1"]`` for the sidecars. ``DictionaryMatchd(..., b1_key="b1_map")`` matches with it and writes
the matched B1 to ``data["b1"]`` (a separate key, so that later matches of the same slice,
e.g. per-sample maps, still see the input map); :class:`MatchedB1d` then keeps the matched B1 map
under ``data["b1_matched"]`` when B1 was free (an estimate worth writing), and only then.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from mrf_monai.io.b1 import B1_DIR, B1_SUFFIX, b1_map_path, read_b1_map

from .gridding import ACQUISITION_INFO_KEY

__all__ = ["B1_POLICIES", "DEFAULT_B1_POLICY", "B1_HANDLING_KEY", "LoadB1Map", "LoadB1Mapd", "MatchedB1d"]

#: What to do for a subject without a B1 map.
B1_POLICIES = ("free", "ignore")
#: The measured default without a map (module notes, ``docs/scanner-data.md``): B1 = 1.
DEFAULT_B1_POLICY = "ignore"
#: Key of the B1 handling of a slice (``"map"``, ``"free"``, ``"ignore"``).
B1_HANDLING_KEY = "b1_handling"


class LoadB1Map(Transform):
    """Read a relative B1+ map ``(Nx, Ny, S)`` float32 tensor, checked against the raw data.

    ``__call__(path, raw=None)``: ``raw`` (a ``RawSubject``) fixes the expected matrix, slices
    and affine (:func:`mrf_monai.io.b1.read_b1_map`). The last file read is kept in memory
    (keyed on its path, size and modification time), so the slices of one subject read it once.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self) -> None:
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def __call__(self, path: str | os.PathLike, raw: Any = None) -> torch.Tensor:
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"B1 map {path} not found (a subject's map is {B1_DIR}/sub-<label>_{B1_SUFFIX}.nii.gz)"
            ) from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, id(raw))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, torch.from_numpy(np.ascontiguousarray(read_b1_map(path, raw))))
        return self._cache[1]


class LoadB1Mapd(MapTransform):
    """Put the slice's B1+ map into ``data[output_key]`` (module notes), or ``None`` and the policy.

    Args:
        b1_path: a B1 map file to use (for a one-subject run; ``--b1 FILE``) instead of the
            subject's ``b1/sub-<label>_TB1map.nii.gz``; it must exist.
        policy: ``"free"`` or ``"ignore"``: the B1 handling of a subject without a map.
        use_map: ``False`` applies ``policy`` even when the subject has a map (comparisons).
        b1_path_key: a data key holding a per-subject map path (used when present and not None).
        raw_key: the ``RawSubject`` (the pipeline's ``data["raw"]``): the grid to check against.
        raw_path_key: the path of ``raw.h5``; its folder is the subject folder.
        label_key: the subject label (else taken from the subject folder's name).
        slice_key: the slice index.
        output_key: where the ``(Nx, Ny)`` float32 map (or ``None``) goes.
        handling_key: where ``"map"``, ``"free"`` or ``"ignore"`` goes.
        info_key: the record merged into (``B1``: ``Handling``, ``Map``).
    """

    backend = LoadB1Map.backend

    def __init__(
        self,
        b1_path: str | os.PathLike | None = None,
        policy: str = DEFAULT_B1_POLICY,
        use_map: bool = True,
        b1_path_key: str | None = None,
        raw_key: str = "raw",
        raw_path_key: str = "raw_path",
        label_key: str = "label",
        slice_key: str = "slice",
        output_key: str = "b1_map",
        handling_key: str = B1_HANDLING_KEY,
        info_key: str = ACQUISITION_INFO_KEY,
    ) -> None:
        super().__init__([raw_key], allow_missing_keys=True)
        if policy not in B1_POLICIES:
            raise ValueError(
                f"the B1 policy must be one of {list(B1_POLICIES)} (without a map); got {policy!r}"
            )
        self.b1_path = None if b1_path is None else Path(b1_path)
        self.policy = policy
        self.use_map = bool(use_map)
        self.b1_path_key = b1_path_key
        self.raw_key, self.raw_path_key, self.label_key = raw_key, raw_path_key, label_key
        self.slice_key, self.output_key = slice_key, output_key
        self.handling_key, self.info_key = handling_key, info_key
        self.loader = LoadB1Map()

    def map_path(self, data: Mapping[Hashable, Any]) -> tuple[Path | None, bool]:
        """``(path, given)``: the B1 map file of this subject and whether it was named explicitly."""
        if self.b1_path_key is not None and data.get(self.b1_path_key) is not None:
            return Path(data[self.b1_path_key]), True
        if self.b1_path is not None:
            return self.b1_path, True
        raw_path = data.get(self.raw_path_key)
        if raw_path is None:
            raw = data.get(self.raw_key)
            raw_path = getattr(raw, "path", None) if raw is not None else None
        if raw_path is None:
            return None, False
        label = data.get(self.label_key)
        return b1_map_path(Path(raw_path).parent, None if label is None else str(label)), False

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        path, given = self.map_path(d) if self.use_map else (None, False)
        info = dict(d.get(self.info_key) or {})
        if path is not None and (given or path.is_file()):
            raw = d.get(self.raw_key)
            raw = raw if hasattr(raw, "matrix") and hasattr(raw, "affine") else None
            volume = self.loader(path, raw)
            s = int(d.get(self.slice_key) or 0)
            if not -volume.shape[-1] <= s < volume.shape[-1]:
                raise IndexError(
                    f"{path}: slice {s} requested but the B1 map has {volume.shape[-1]} slice(s)"
                )
            d[self.output_key] = volume[..., s].clone()
            d[self.handling_key] = "map"
            info["B1"] = {"Handling": "map", "Map": str(path)}
        else:
            d[self.output_key] = None
            d[self.handling_key] = self.policy
            note = "B1 map not used (use_map=false)" if not self.use_map else "no B1 map"
            if self.use_map and path is not None:
                note = f"no B1 map ({path.parent.name}/{path.name})"
            info["B1"] = {"Handling": self.policy, "Map": None, "Note": note}
        d[self.info_key] = info
        return d


class MatchedB1d(MapTransform):
    """After matching: ``data[output_key]`` = the matched B1 map ``data[b1_key]`` when B1 was
    free (``data[handling_key] == "free"``); otherwise the key is removed (nothing was estimated)."""

    def __init__(
        self,
        b1_key: str = "b1",
        handling_key: str = B1_HANDLING_KEY,
        output_key: str = "b1_matched",
    ) -> None:
        super().__init__([b1_key], allow_missing_keys=True)
        self.b1_key, self.handling_key, self.output_key = b1_key, handling_key, output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if d.get(self.handling_key) == "free" and d.get(self.b1_key) is not None:
            d[self.output_key] = d[self.b1_key]
        else:
            d.pop(self.output_key, None)
        return d
