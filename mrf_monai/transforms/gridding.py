"""MONAI transforms: calibrated subspace gridding of raw MRF k-space (the model's condition).

Thin wrappers over the gridding front end :class:`mrf_monai.acquisition.gridding.SubspaceGridder`
(density compensation, coil maps and their caches live there).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from mrf_monai.acquisition.gridding import SubspaceGridder, basis_tensor

__all__ = ["GridSubspace", "GridSubspaced"]


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


class GridSubspace(Transform):
    """Grid raw MRF k-space of one slice into the temporal subspace: ``(R, Nx, Ny)`` complex.

    Calibrated density-compensated gridding (:meth:`SubspaceGridder.grid`): a Pipe-Menon
    density computed from the trajectory (cached for repeated trajectories) and, for several
    coils without given maps, Walsh coil maps estimated from the per-coil gridded subspace
    images.

    Args:
        basis: ``(T, R)`` temporal basis, or an ``MRFDictionary``-like object with ``.basis``.
        image_shape: ``(Nx, Ny)``; may also be given per call.
        dcf_iterations: Pipe-Menon iterations.
        walsh_kernel_size: neighbourhood of the Walsh coil-map estimate.
        eps, backend: NUFFT accuracy and backend.

    ``__call__(kspace (C, T, S) | (T, S), traj (T, S, 2), image_shape=None, coil_maps=None)``
    runs on the device of ``kspace`` (the trajectory is taken in float32) and returns a tensor
    of shape ``(R, Nx, Ny)``.
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
    ) -> None:
        self.basis = basis_tensor(basis)
        self.image_shape = None if image_shape is None else (int(image_shape[0]), int(image_shape[1]))
        self.gridder = SubspaceGridder(
            dcf_iter=dcf_iterations, eps=eps, backend=backend, coil_kernel_size=walsh_kernel_size
        )

    def __call__(
        self,
        kspace: torch.Tensor | np.ndarray,
        traj: torch.Tensor | np.ndarray,
        image_shape: Sequence[int] | None = None,
        coil_maps: torch.Tensor | np.ndarray | None = None,
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
        return self.gridder.grid(k, t, self.basis, shape, coil_maps=coil_maps, device=k.device)


class GridSubspaced(MapTransform):
    """Dictionary twin of :class:`GridSubspace`, optionally also building the slice's problem.

    Reads ``data[kspace_key]`` ``(C, T, S)`` and ``data[traj_key]`` ``(T, S, 2)`` (optionally
    ``data[coil_maps_key]`` ``(C, Nx, Ny)``, ``data[dcf_key]`` ``(T, S)`` and ``data[matrix_key]``
    ``(Nx, Ny)``) and writes ``data[output_key]``: a :class:`monai.data.MetaTensor` ``(R, Nx, Ny)``
    complex64 whose affine is ``data[affine_key]`` when present. With ``problem_key`` it also
    writes the slice's :class:`~mrf_monai.acquisition.problem.SliceProblem` (the normal operator
    of the data term, for LRTV and the diffusion model's k-space data consistency), computed
    with the same density, coil maps and caches.

    Args:
        basis: ``(T, R)`` basis or an ``MRFDictionary``-like object with ``.basis``; or ``None``
            with ``basis_key``.
        image_shape: ``(Nx, Ny)`` if the data do not carry ``matrix_key``.
        basis_key: read the basis from ``data[basis_key]`` instead (e.g. a network's training
            basis chosen by :class:`~mrf_monai.transforms.subspace.SubspaceBasisd`).
        problem_key: also write the :class:`SliceProblem` there (``None``: do not build it).
        density_compensated: the problem's data term (``A^H D A``; ``False``: ``A^H A``).
        device: where the NUFFTs run (``None``: CPU, which always works).
        dcf_iter, coil_maps, coil_kernel_size, eps, backend: :class:`SubspaceGridder` options.
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
        coil_maps: str = "walsh",
        coil_kernel_size: int = 7,
        eps: float = 1e-6,
        backend: str = "auto",
        allow_missing_keys: bool = False,
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
        )
        self.kspace_key, self.traj_key, self.output_key = kspace_key, traj_key, output_key
        self.affine_key, self.coil_maps_key, self.matrix_key = affine_key, coil_maps_key, matrix_key
        self.dcf_key, self.basis_key, self.problem_key = dcf_key, basis_key, problem_key
        self.density_compensated = bool(density_compensated)

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
        if self.problem_key is not None:
            problem = self.gridder.problem(
                kspace, traj, basis, shape, coil_maps=coil_maps, density_compensated=self.density_compensated
            )
            cond = problem.grid
            d[self.problem_key] = problem
        else:
            cond = self.gridder.grid(kspace, traj, basis, shape, coil_maps=coil_maps, dcf=dcf)
        affine = d.get(self.affine_key)
        if affine is not None:
            affine = torch.as_tensor(np.asarray(affine) if not isinstance(affine, torch.Tensor) else affine)
        d[self.output_key] = MetaTensor(cond, affine=affine)
        return d
