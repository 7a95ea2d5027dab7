"""MONAI transforms for B1+: each slice's transmit-field map, or what to do without one.

:class:`LoadB1Mapd` puts the slice's relative B1+ map ``(Nx, Ny)`` into ``data["b1_map"]``: from
``sub-<label>/b1/sub-<label>_TB1map.nii.gz`` (data contract section 5, the BIDS name), from a
file given by path (one subject) or from a folder of per-subject maps, checked against the raw
data's matrix, slices and affine (a clear error naming the file otherwise); read once per file.
Without a map it writes ``None`` and the policy: ``"ignore"`` (assume B1 = 1, the default) or
``"free"`` (match B1 as a free dictionary parameter). Measured (``docs/scanner-data.md``): free
B1 pays on fully sampled data, but on accelerated reconstructions (SVD-MRF, LRTV, MRF-IDDPM, in
the subspace they share) it raises the T2 error more than it lowers the T1 error, at 3-4x the
matching time.
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
from mrf_monai.io.subjects import subject_label

from .gridding import ACQUISITION_INFO_KEY

__all__ = [
    "B1_POLICIES",
    "DEFAULT_B1_POLICY",
    "B1_HANDLING_KEY",
    "B1MapSettingError",
    "LoadB1Map",
    "LoadB1Mapd",
    "MatchedB1d",
]

#: What to do for a subject without a B1 map.
B1_POLICIES = ("free", "ignore")
#: The measured default without a map (module notes, ``docs/scanner-data.md``): B1 = 1.
DEFAULT_B1_POLICY = "ignore"
#: Key of the B1 handling of a slice (``"map"``, ``"free"``, ``"ignore"``).
B1_HANDLING_KEY = "b1_handling"


class B1MapSettingError(ValueError):
    """The B1 map file named by the run's settings (``b1_path``, ``mrf-monai reconstruct --b1``)
    does not fit the subject (grid, slices, values) or is used for a second subject: a wrong
    setting, not a bad subject. :class:`~mrf_monai.pipeline.runner.SubjectRunner` stops the run on
    it (``stops_run``) instead of going on with the next subject, so ``mrf-monai reconstruct``
    exits with status 2 (a wrong setting)."""

    stops_run = True


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
        b1_path: a B1 map file to use instead of the subject's ``b1/sub-<label>_TB1map.nii.gz``
            (one subject: a second subject label, or a map that does not fit the subject, raises
            :class:`B1MapSettingError`, which stops the run), or
            a folder holding each subject's map as ``sub-<label>_TB1map.nii.gz``, directly or in
            ``sub-<label>/`` or ``sub-<label>/b1/`` (a dataset folder, or the output folder of a
            run with ``policy="free"``); it must exist. A subject whose map is missing from the
            folder fails (the map was asked for).
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
        if self.b1_path is not None and not self.b1_path.exists():
            raise FileNotFoundError(
                f"B1 map {self.b1_path} not found (b1_path: a B1 map file, or a folder of "
                f"sub-<label>_{B1_SUFFIX}.nii.gz maps)"
            )
        self._file_label: str | None = None  # the subject a b1_path file was used for
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
        label = self._label(data)
        if self.b1_path is not None and self.b1_path.is_dir():
            return self._in_folder(self.b1_path, label), True
        if self.b1_path is not None:
            if label is not None and self._file_label not in (None, label):
                raise B1MapSettingError(
                    f"b1_path {self.b1_path} is one subject's B1 map but the run also reconstructs "
                    f"sub-{label} (it was used for sub-{self._file_label}); give a folder of "
                    f"sub-<label>_{B1_SUFFIX}.nii.gz maps, or leave b1_path null to read each subject's "
                    f"{B1_DIR}/ map"
                )
            self._file_label = label if label is not None else self._file_label
            return self.b1_path, True
        raw_path = self._raw_path(data)
        if raw_path is None:
            return None, False
        return b1_map_path(Path(raw_path).parent, label), False

    def _raw_path(self, data: Mapping[Hashable, Any]) -> Any:
        raw_path = data.get(self.raw_path_key)
        if raw_path is None:
            raw = data.get(self.raw_key)
            raw_path = getattr(raw, "path", None) if raw is not None else None
        return raw_path

    def _label(self, data: Mapping[Hashable, Any]) -> str | None:
        label = data.get(self.label_key)
        if label is not None:
            return str(label)
        raw_path = self._raw_path(data)
        if raw_path is None:
            return None
        try:
            return subject_label(raw_path)
        except ValueError:
            return None

    @staticmethod
    def _in_folder(folder: Path, label: str | None) -> Path:
        """The subject's map in a folder of maps (see ``b1_path``); raises when it is not there."""
        if label is None:
            raise ValueError(f"b1_path {folder} is a folder of maps but the subject's label is unknown")
        name = f"sub-{label}_{B1_SUFFIX}.nii.gz"
        candidates = (folder / name, folder / f"sub-{label}" / name, folder / f"sub-{label}" / B1_DIR / name)
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"no B1 map of sub-{label} in the folder {folder} (looked for {name} there, in sub-{label}/ "
            f"and in sub-{label}/{B1_DIR}/)"
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        path, given = self.map_path(d) if self.use_map else (None, False)
        info = dict(d.get(self.info_key) or {})
        if path is not None and (given or path.is_file()):
            raw = d.get(self.raw_key)
            raw = raw if hasattr(raw, "matrix") and hasattr(raw, "affine") else None
            try:
                volume = self.loader(path, raw)
                s = int(d.get(self.slice_key) or 0)
                if not -volume.shape[-1] <= s < volume.shape[-1]:
                    raise IndexError(
                        f"{path}: slice {s} requested but the B1 map has {volume.shape[-1]} slice(s)"
                    )
            except (ValueError, IndexError, OSError) as err:
                if (
                    self.b1_path is not None
                    and path == self.b1_path
                    and not isinstance(err, B1MapSettingError)
                ):
                    raise B1MapSettingError(f"b1_path: {err}") from err  # the setting, not the subject
                raise
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
