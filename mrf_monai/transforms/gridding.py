"""MONAI transforms: calibrated subspace gridding of raw MRF k-space (the model's condition).

Thin wrappers over the gridding front end :class:`mrf_monai.acquisition.gridding.SubspaceGridder`
(noise prewhitening, coil compression, density compensation, coil maps and their caches live
there). :class:`GridSubspaced` records what the front end did for each slice under
``data["acquisition_info"]`` (``NoisePrewhitening``, ``CoilCompression``, ``CoilMaps``), which
:func:`merge_acquisition_info` turns into one sidecar entry per subject.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from mrf_monai.acquisition.gridding import AUTO_COIL_ENERGY, SubspaceGridder, basis_tensor
from mrf_monai.acquisition.prewhitening import NoiseScan

__all__ = ["GridSubspace", "GridSubspaced", "merge_acquisition_info", "ACQUISITION_INFO_KEY"]

#: Key of the per-slice record of the front end (and of the B1 handling) in the data.
ACQUISITION_INFO_KEY = "acquisition_info"


def merge_acquisition_info(records: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """One record for a subject from the per-slice records (in slice order).

    For each section (``NoisePrewhitening``, ``CoilCompression``, ``CoilMaps``, ``B1``) and
    field, a value shared by every slice is kept as is; values that differ between slices
    become a list with one entry per slice. Slices without a record are skipped.
    """
    records = [r for r in records if r]
    out: dict[str, Any] = {}
    sections = list(dict.fromkeys(k for r in records for k in r))
    for section in sections:
        parts = [r.get(section) for r in records]
        if not all(isinstance(p, Mapping) for p in parts):
            values = [_jsonable(p) for p in parts]
            out[section] = values[0] if all(v == values[0] for v in values) else values
            continue
        fields = list(dict.fromkeys(f for p in parts for f in p))
        merged = {}
        for f in fields:
            values = [_jsonable(p.get(f)) for p in parts]
            merged[f] = values[0] if all(v == values[0] for v in values) else values
        out[section] = merged
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


class GridSubspace(Transform):
    """Grid raw MRF k-space of one slice into the temporal subspace: ``(R, Nx, Ny)`` complex.

    Calibrated density-compensated gridding (:meth:`SubspaceGridder.grid`): the front end
    (prewhitening with a given noise scan, coil compression), a Pipe-Menon density computed
    from the trajectory (cached for repeated trajectories) and, for several coils without given
    maps, coil maps estimated from the per-coil gridded subspace images.

    Args:
        basis: ``(T, R)`` temporal basis, or an ``MRFDictionary``-like object with ``.basis``.
        image_shape: ``(Nx, Ny)``; may also be given per call.
        dcf_iterations: Pipe-Menon iterations.
        walsh_kernel_size: neighbourhood of the coil-map estimate (either estimator).
        eps, backend: NUFFT accuracy and backend.
        coil_maps, prewhiten, noise_covariance, n_virtual_coils, coil_energy: the
            :class:`SubspaceGridder` options.

    ``__call__(kspace (C, T, S) | (T, S), traj (T, S, 2), image_shape=None, coil_maps=None,
    noise=None)`` runs on the device of ``kspace`` (the trajectory is taken in float32) and
    returns a tensor of shape ``(R, Nx, Ny)``; ``noise`` is the raw file's noise scan
    (a :class:`~mrf_monai.acquisition.prewhitening.NoiseScan` or its ``(C, M)`` samples).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        basis: Any,
        image_shape: Sequence[int] | None = None,
        dcf_iterations: int = 15,
        walsh_kernel_size: int = 7,
        eps: float = 1e-6,
        backend: str = "auto",
        coil_maps: str = "inati",
        prewhiten: bool | str = "auto",
        noise_covariance: Any = None,
        n_virtual_coils: int | str | None = "auto",
        coil_energy: float = AUTO_COIL_ENERGY,
    ) -> None:
        self.basis = basis_tensor(basis)
        self.image_shape = None if image_shape is None else (int(image_shape[0]), int(image_shape[1]))
        self.gridder = SubspaceGridder(
            dcf_iter=dcf_iterations,
            eps=eps,
            backend=backend,
            coil_maps=coil_maps,
            coil_kernel_size=walsh_kernel_size,
            prewhiten=prewhiten,
            noise_covariance=noise_covariance,
            n_virtual_coils=n_virtual_coils,
            coil_energy=coil_energy,
        )

    def __call__(
        self,
        kspace: torch.Tensor | np.ndarray,
        traj: torch.Tensor | np.ndarray,
        image_shape: Sequence[int] | None = None,
        coil_maps: torch.Tensor | np.ndarray | None = None,
        noise: Any = None,
    ) -> torch.Tensor:
        k = _as_tensor(kspace)
        shape = image_shape if image_shape is not None else self.image_shape
        if shape is None:
            raise ValueError("image_shape is unknown: pass it to GridSubspace(...) or to the call.")
        n_frames = int(k.shape[-2]) if k.ndim >= 2 else -1
        if k.ndim in (2, 3) and int(self.basis.shape[0]) != n_frames:
            raise ValueError(
                f"basis has {self.basis.shape[0]} frames but the k-space has {n_frames}; "
                "use the dictionary/basis of the acquired (truncated) sequence."
            )
        t = _as_tensor(traj).to(k.device, torch.float32)
        return self.gridder.grid(k, t, self.basis, shape, coil_maps=coil_maps, device=k.device, noise=noise)


class GridSubspaced(MapTransform):
    """Dictionary twin of :class:`GridSubspace`, optionally also building the slice's problem.

    Reads ``data[kspace_key]`` ``(C, T, S)`` and ``data[traj_key]`` ``(T, S, 2)`` (optionally
    ``data[coil_maps_key]`` ``(C, Nx, Ny)``, ``data[dcf_key]`` ``(T, S)`` and ``data[matrix_key]``
    ``(Nx, Ny)``) and writes ``data[output_key]``: a :class:`monai.data.MetaTensor` ``(R, Nx, Ny)``
    complex64 whose affine is ``data[affine_key]`` when present. With ``problem_key`` it also
    writes the slice's :class:`~mrf_monai.acquisition.problem.SliceProblem` (the normal operator
    of the data term, for LRTV and the diffusion model's k-space data consistency), computed
    with the same front end (whitened, compressed channels), density, coil maps and caches.

    The noise scan for prewhitening is ``data[noise_key]`` ``(C, M)`` (written by
    :class:`~mrf_monai.transforms.io.LoadRawSubjectd`) with the dwell times and the noise
    bandwidth of ``data[meta_key]`` (``noise_dwell_us``, ``dwell_us``,
    ``relative_noise_bandwidth``), else that of the ``RawSubject`` in ``data[raw_key]``. What
    the front end did is merged into ``data[info_key]`` (``NoisePrewhitening``,
    ``CoilCompression``, ``CoilMaps``; JSON-ready, for the sidecars).

    Args:
        basis: ``(T, R)`` basis or an ``MRFDictionary``-like object with ``.basis``; or ``None``
            with ``basis_key``.
        image_shape: ``(Nx, Ny)`` if the data do not carry ``matrix_key``.
        basis_key: read the basis from ``data[basis_key]`` instead (e.g. a network's training
            basis chosen by :class:`~mrf_monai.transforms.subspace.SubspaceBasisd`).
        problem_key: also write the :class:`SliceProblem` there (``None``: do not build it).
        density_compensated: the problem's data term (``A^H D A``; ``False``: ``A^H A``).
        device: where the NUFFTs run (``None``: CPU, which always works).
        dcf_iter, coil_maps, coil_kernel_size, eps, backend, prewhiten, noise_covariance,
            n_virtual_coils, coil_energy: :class:`SubspaceGridder` options.
        other arguments: key names.
    """

    backend = GridSubspace.backend

    def __init__(
        self,
        basis: Any = None,
        image_shape: Sequence[int] | None = None,
        kspace_key: str = "kspace",
        traj_key: str = "traj",
        output_key: str = "cond",
        affine_key: str = "affine",
        coil_maps_key: str = "coil_maps",
        matrix_key: str = "matrix",
        dcf_key: str = "dcf",
        basis_key: str | None = None,
        problem_key: str | None = None,
        density_compensated: bool = True,
        device: str | torch.device | None = None,
        dcf_iter: int = 15,
        coil_maps: str = "inati",
        coil_kernel_size: int = 7,
        eps: float = 1e-6,
        backend: str = "auto",
        allow_missing_keys: bool = False,
        prewhiten: bool | str = "auto",
        noise_covariance: Any = None,
        n_virtual_coils: int | str | None = "auto",
        coil_energy: float = AUTO_COIL_ENERGY,
        noise_key: str = "noise",
        meta_key: str = "meta",
        raw_key: str = "raw",
        info_key: str = ACQUISITION_INFO_KEY,
    ) -> None:
        super().__init__([kspace_key, traj_key], allow_missing_keys)
        if basis is None and basis_key is None:
            raise ValueError("GridSubspaced needs a basis or a basis_key")
        self.basis = None if basis is None else basis_tensor(basis)
        self.image_shape = None if image_shape is None else (int(image_shape[0]), int(image_shape[1]))
        self.gridder = SubspaceGridder(
            device=device,
            dcf_iter=dcf_iter,
            eps=eps,
            backend=backend,
            coil_maps=coil_maps,
            coil_kernel_size=coil_kernel_size,
            prewhiten=prewhiten,
            noise_covariance=noise_covariance,
            n_virtual_coils=n_virtual_coils,
            coil_energy=coil_energy,
        )
        self.kspace_key, self.traj_key, self.output_key = kspace_key, traj_key, output_key
        self.affine_key, self.coil_maps_key, self.matrix_key = affine_key, coil_maps_key, matrix_key
        self.dcf_key, self.basis_key, self.problem_key = dcf_key, basis_key, problem_key
        self.noise_key, self.meta_key, self.raw_key, self.info_key = noise_key, meta_key, raw_key, info_key
        self.density_compensated = bool(density_compensated)

    def noise_scan(self, data: Mapping[Hashable, Any]) -> NoiseScan | None:
        """The noise scan of the slice's raw file (see the class notes), or ``None``."""
        samples = data.get(self.noise_key)
        if samples is not None:
            meta = data.get(self.meta_key)
            meta = meta if isinstance(meta, Mapping) else {}
            return NoiseScan(
                samples,
                meta.get("noise_dwell_us"),
                meta.get("dwell_us"),
                meta.get("relative_noise_bandwidth"),
            )
        raw = data.get(self.raw_key)
        return NoiseScan.from_raw(raw) if hasattr(raw, "noise") else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.kspace_key not in d or self.traj_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(
                f"GridSubspaced needs keys {self.kspace_key!r} and {self.traj_key!r}; got {list(d)}."
            )
        basis = self.basis if self.basis_key is None else basis_tensor(d[self.basis_key])
        shape = d.get(self.matrix_key)
        if shape is None and isinstance(d.get("meta"), Mapping):
            shape = d["meta"].get("matrix")
        shape = self.image_shape if shape is None else tuple(int(v) for v in np.asarray(shape).ravel()[:2])
        if shape is None:
            raise ValueError(
                "GridSubspaced: the image shape is unknown (no matrix in the data, no image_shape)"
            )
        kspace, traj = d[self.kspace_key], _as_tensor(d[self.traj_key]).to(torch.float32)
        n_frames = int(_as_tensor(kspace).shape[-2])
        if int(basis.shape[0]) != n_frames:
            raise ValueError(
                f"the basis has {basis.shape[0]} frames but the k-space has {n_frames}; "
                "use the dictionary/basis of the acquired sequence"
            )
        coil_maps, dcf = d.get(self.coil_maps_key), d.get(self.dcf_key)
        noise = self.noise_scan(d)
        if self.problem_key is not None:
            problem = self.gridder.problem(
                kspace,
                traj,
                basis,
                shape,
                coil_maps=coil_maps,
                density_compensated=self.density_compensated,
                noise=noise,
            )
            cond = problem.grid
            d[self.problem_key] = problem
        else:
            cond = self.gridder.grid(kspace, traj, basis, shape, coil_maps=coil_maps, dcf=dcf, noise=noise)
        affine = d.get(self.affine_key)
        if affine is not None:
            affine = torch.as_tensor(np.asarray(affine) if not isinstance(affine, torch.Tensor) else affine)
        d[self.output_key] = MetaTensor(cond, affine=affine)
        info = dict(d.get(self.info_key) or {})
        info.update(self.gridder.last_info or {})
        d[self.info_key] = info
        return d
