"""Loading raw subjects as MONAI transforms."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from mrf_monai.io.ismrmrd import RawSubject, read_raw

__all__ = ["LoadRawSubject", "LoadRawSubjectd"]


class LoadRawSubject(Transform):
    """Read an ISMRMRD ``raw.h5`` into tensors.

    ``__call__(path, slice_index=None)`` returns a dict:

    - ``kspace``: complex64 ``(C, T, S)`` for one slice, ``(n_slices, C, T, S)`` for all, with
      ``S = readouts_per_frame * samples_per_readout`` (a frame's readouts one after the other);
    - ``traj``: float32 ``(T, S, 2)`` / ``(n_slices, T, S, 2)``, cycles per pixel;
    - ``interleaf``: int64 ``(T, R)`` / ``(n_slices, T, R)``, each readout's interleaf index;
    - ``readouts_per_frame``: ``R`` (int);
    - ``noise``: complex64 ``(C, N)`` noise-scan samples, or ``None`` (no noise scan);
    - ``dcf``: float32 ``(T, S)`` / ``(n_slices, T, S)`` density compensation given with the
      trajectory file, or ``None`` (compute it from the trajectory);
    - ``sequence``: :class:`MRFSequence`; ``affine``: float64 4x4 RAS+ (of the slice, or the stack);
    - ``meta``: ``path``, ``matrix``, ``fov_mm``, ``position_mm``, ``read_dir``, ``phase_dir``,
      ``slice_dir``, ``larmor_hz``, ``n_slices``, ``slice_index``, ``samples_per_readout``,
      ``trajectory_type``, ``dwell_us``, ``noise_dwell_us``, ``relative_noise_bandwidth``.

    Args:
        slice_index: default slice to load (``None`` = all slices).
        trajectory: trajectory file for raw files whose acquisitions carry none (data contract
            section 5; see :func:`mrf_monai.io.ismrmrd.read_raw`).
        trajectory_units: units of the trajectory (default cycles per pixel).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        slice_index: int | None = None,
        trajectory: str | os.PathLike | None = None,
        trajectory_units: str = "cycles_per_pixel",
    ) -> None:
        self.slice_index = slice_index
        self.trajectory = trajectory
        self.trajectory_units = trajectory_units

    def __call__(self, path: str | os.PathLike | RawSubject, slice_index: int | None = None) -> dict:
        s = self.slice_index if slice_index is None else slice_index
        # an already read subject (the pipeline reads each raw.h5 once for all its slices)
        if isinstance(path, RawSubject):
            raw = path
        else:
            raw = read_raw(path, self.trajectory, self.trajectory_units)
        path = raw.path if isinstance(path, RawSubject) else path
        if s is not None and not -raw.n_slices <= s < raw.n_slices:
            raise IndexError(f"{path}: slice {s} requested but the file has {raw.n_slices} slice(s)")
        sel = slice(None) if s is None else s
        return {
            "kspace": torch.from_numpy(raw.kspace[sel].copy()),
            "traj": torch.from_numpy(raw.traj[sel].copy()),
            "interleaf": torch.from_numpy(raw.interleaf[sel].copy()),
            "readouts_per_frame": int(raw.readouts_per_frame),
            "noise": None if raw.noise is None else torch.from_numpy(raw.noise.copy()),
            "dcf": None if raw.dcf is None else torch.from_numpy(raw.dcf[sel].copy()),
            "sequence": raw.sequence,
            "affine": torch.from_numpy(raw.affine(s)),
            "meta": {
                "path": None if path is None else str(Path(path)),
                "samples_per_readout": raw.samples_per_readout,
                "trajectory_type": raw.trajectory_type,
                "dwell_us": raw.dwell_us,
                "noise_dwell_us": raw.noise_dwell_us,
                "relative_noise_bandwidth": raw.relative_noise_bandwidth,
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

    The loaded entries (``kspace``, ``traj``, ``interleaf``, ``readouts_per_frame``, ``noise``,
    ``dcf``, ``sequence``, ``affine``, ``meta``) are added to the data, prefixed by ``prefix``
    (default none). The slice is ``data[slice_key]`` when ``slice_key`` is given and present,
    else ``slice_index``. The trajectory file is ``data[trajectory_key]`` when
    ``trajectory_key`` is given and present, else ``trajectory``.
    """

    backend = LoadRawSubject.backend

    def __init__(
        self,
        keys: KeysCollection = "raw",
        slice_index: int | None = None,
        slice_key: str | None = None,
        prefix: str = "",
        allow_missing_keys: bool = False,
        trajectory: str | os.PathLike | None = None,
        trajectory_units: str = "cycles_per_pixel",
        trajectory_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadRawSubject(slice_index, trajectory, trajectory_units)
        self.trajectory_key = trajectory_key
        self.slice_key = slice_key
        self.prefix = prefix
        if len(self.keys) > 1 and not prefix:
            raise ValueError("LoadRawSubjectd with several keys needs a prefix (the outputs would collide)")

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        s = None
        if self.slice_key is not None and d.get(self.slice_key) is not None:
            s = int(d[self.slice_key])
        loader = self.loader
        if self.trajectory_key is not None and d.get(self.trajectory_key) is not None:
            loader = LoadRawSubject(loader.slice_index, d[self.trajectory_key], loader.trajectory_units)
        for key in self.key_iterator(d):
            prefix = self.prefix if len(self.keys) == 1 else f"{self.prefix}{key}_"
            for name, value in loader(d[key], s).items():
                d[f"{prefix}{name}"] = value
        return d
