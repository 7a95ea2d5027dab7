"""Loading raw subjects as MONAI transforms."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from mrf_monai.io.ismrmrd import read_raw

__all__ = ["LoadRawSubject", "LoadRawSubjectd"]


class LoadRawSubject(Transform):
    """Read an ISMRMRD ``raw.h5`` into tensors.

    ``__call__(path, slice_index=None)`` returns a dict:

    - ``kspace``: complex64 ``(C, T, S)`` for one slice, ``(n_slices, C, T, S)`` for all;
    - ``traj``: float32 ``(T, S, 2)`` / ``(n_slices, T, S, 2)``, cycles per pixel;
    - ``interleaf``: int64 ``(T,)`` / ``(n_slices, T)``;
    - ``sequence``: :class:`MRFSequence`; ``affine``: float64 4x4 RAS+ (of the slice, or the stack);
    - ``meta``: ``path``, ``matrix``, ``fov_mm``, ``position_mm``, ``read_dir``, ``phase_dir``,
      ``slice_dir``, ``larmor_hz``, ``n_slices``, ``slice_index``.

    Args:
        slice_index: default slice to load (``None`` = all slices).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, slice_index: int | None = None) -> None:
        self.slice_index = slice_index

    def __call__(self, path: str | os.PathLike, slice_index: int | None = None) -> dict:
        s = self.slice_index if slice_index is None else slice_index
        raw = read_raw(path)
        if s is not None and not -raw.n_slices <= s < raw.n_slices:
            raise IndexError(f"{path}: slice {s} requested but the file has {raw.n_slices} slice(s)")
        sel = slice(None) if s is None else s
        return {
            "kspace": torch.from_numpy(raw.kspace[sel].copy()),
            "traj": torch.from_numpy(raw.traj[sel].copy()),
            "interleaf": torch.from_numpy(raw.interleaf[sel].copy()),
            "sequence": raw.sequence,
            "affine": torch.from_numpy(raw.affine(s)),
            "meta": {
                "path": str(Path(path)),
                "matrix": raw.matrix,
                "fov_mm": raw.fov_mm,
                "position_mm": raw.position_mm[sel].tolist(),
                "read_dir": raw.read_dir.tolist(),
                "phase_dir": raw.phase_dir.tolist(),
                "slice_dir": raw.slice_dir.tolist(),
                "larmor_hz": raw.larmor_hz,
                "n_slices": raw.n_slices,
                "slice_index": s,
            },
        }


class LoadRawSubjectd(MapTransform):
    """Dictionary twin of :class:`LoadRawSubject`: ``data[key]`` is the path of ``raw.h5``.

    The loaded entries (``kspace``, ``traj``, ``interleaf``, ``sequence``, ``affine``, ``meta``)
    are added to the data, prefixed by ``prefix`` (default none). The slice is
    ``data[slice_key]`` when ``slice_key`` is given and present, else ``slice_index``.
    """

    backend = LoadRawSubject.backend

    def __init__(
        self,
        keys: KeysCollection = "raw",
        slice_index: int | None = None,
        slice_key: str | None = None,
        prefix: str = "",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadRawSubject(slice_index)
        self.slice_key = slice_key
        self.prefix = prefix
        if len(self.keys) > 1 and not prefix:
            raise ValueError("LoadRawSubjectd with several keys needs a prefix (the outputs would collide)")

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        s = None
        if self.slice_key is not None and d.get(self.slice_key) is not None:
            s = int(d[self.slice_key])
        for key in self.key_iterator(d):
            prefix = self.prefix if len(self.keys) == 1 else f"{self.prefix}{key}_"
            for name, value in self.loader(d[key], s).items():
                d[f"{prefix}{name}"] = value
        return d
