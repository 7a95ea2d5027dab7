"""MONAI transforms: calibrated subspace gridding of raw MRF k-space (the model's condition)."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from mrf_monai.acquisition.coils import estimate_coil_maps_walsh
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.operators import SubspaceNufftOperator

__all__ = ["GridSubspace", "GridSubspaced"]


def _basis_tensor(basis: Any) -> torch.Tensor:
    """A ``(T, R)`` basis tensor from a tensor, an array or an ``MRFDictionary``-like object."""
    b = getattr(basis, "basis", basis)
    b = b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
    if b.ndim != 2:
        raise ValueError(
            f"basis must be (T, R) (or an object with a .basis of that shape), got {tuple(b.shape)}."
        )
    return b.to(torch.complex64)


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


class GridSubspace(Transform):
    """Grid raw MRF k-space of one slice into the temporal subspace: ``(R, Nx, Ny)`` complex.

    Calibrated density-compensated gridding (:meth:`SubspaceNufftOperator.grid`) with a
    Pipe-Menon density computed from the trajectory (cached for repeated trajectories) and,
    for several coils without given maps, Walsh coil maps estimated from the per-coil gridded
    subspace images.

    Args:
        basis: ``(T, R)`` temporal basis, or an ``MRFDictionary``-like object with ``.basis``.
        image_shape: ``(Nx, Ny)``; may also be given per call.
        dcf_iterations: Pipe-Menon iterations.
        walsh_kernel_size: neighbourhood of the Walsh coil-map estimate.
        eps, backend: NUFFT accuracy and backend.

    ``__call__(kspace (C, T, S) | (T, S), traj (T, S, 2), image_shape=None, coil_maps=None)``
    runs on the device of ``kspace`` and returns a tensor of shape ``(R, Nx, Ny)``.
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
        self.basis = _basis_tensor(basis)
        self.image_shape = None if image_shape is None else (int(image_shape[0]), int(image_shape[1]))
        self.dcf_iterations = dcf_iterations
        self.walsh_kernel_size = walsh_kernel_size
        self.eps = eps
        self.nufft_backend = backend
        self._dcf_cache: tuple[str, torch.Tensor] | None = None

    def _dcf(self, traj: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
        digest = hashlib.sha1(traj.detach().cpu().numpy().tobytes() + repr(image_shape).encode()).hexdigest()
        if self._dcf_cache is not None and self._dcf_cache[0] == digest:
            return self._dcf_cache[1].to(traj.device)
        dcf = pipe_menon_dcf(traj, image_shape, n_iter=self.dcf_iterations, backend=self.nufft_backend)
        self._dcf_cache = (digest, dcf)
        return dcf

    def __call__(
        self,
        kspace: torch.Tensor | np.ndarray,
        traj: torch.Tensor | np.ndarray,
        image_shape: Sequence[int] | None = None,
        coil_maps: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        k = _as_tensor(kspace)
        if k.ndim == 2:
            k = k[None]
        if k.ndim != 3:
            raise ValueError(
                f"kspace must be (C, T, S) or (T, S) for one slice, got {tuple(k.shape)}; "
                "select a slice first."
            )
        shape = image_shape if image_shape is not None else self.image_shape
        if shape is None:
            raise ValueError("image_shape is unknown: pass it to GridSubspace(...) or to the call.")
        shape = (int(shape[0]), int(shape[1]))
        t = _as_tensor(traj).to(k.device, torch.float32)
        n_frames = int(k.shape[1])
        if int(self.basis.shape[0]) != n_frames:
            raise ValueError(
                f"basis has {self.basis.shape[0]} frames but the k-space has {n_frames}; "
                "use the dictionary/basis of the acquired (truncated) sequence."
            )
        dcf = self._dcf(t, shape)
        op = SubspaceNufftOperator(
            t, self.basis, shape, None, dcf, eps=self.eps, backend=self.nufft_backend, device=k.device
        )
        coil_imgs = op.grid_coils(k)  # (C, R, Nx, Ny)
        if coil_maps is None:
            if k.shape[0] == 1:
                return coil_imgs[0]
            coil_maps = estimate_coil_maps_walsh(coil_imgs, kernel_size=self.walsh_kernel_size)
        maps = _as_tensor(coil_maps).to(k.device, torch.complex64)
        return (maps.conj()[:, None] * coil_imgs).sum(0)


class GridSubspaced(MapTransform):
    """Dictionary twin of :class:`GridSubspace`.

    Reads ``data[kspace_key]`` ``(C, T, S)`` and ``data[traj_key]`` ``(T, S, 2)`` (optionally
    ``data[coil_maps_key]`` ``(C, Nx, Ny)`` and ``data[matrix_key]`` ``(Nx, Ny)``) and writes
    ``data[output_key]``: a :class:`monai.data.MetaTensor` ``(R, Nx, Ny)`` complex64 whose
    affine is ``data[affine_key]`` when present.

    Args:
        basis: ``(T, R)`` basis or an ``MRFDictionary``-like object with ``.basis``.
        image_shape: ``(Nx, Ny)`` if the data do not carry ``matrix_key``.
        other arguments: key names and :class:`GridSubspace` options.
    """

    backend = GridSubspace.backend

    def __init__(
        self,
        basis: Any,
        image_shape: Sequence[int] | None = None,
        kspace_key: str = "kspace",
        traj_key: str = "traj",
        output_key: str = "cond",
        affine_key: str = "affine",
        coil_maps_key: str = "coil_maps",
        matrix_key: str = "matrix",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__([kspace_key, traj_key], allow_missing_keys)
        self.gridder = GridSubspace(basis, image_shape, **kwargs)
        self.kspace_key, self.traj_key, self.output_key = kspace_key, traj_key, output_key
        self.affine_key, self.coil_maps_key, self.matrix_key = affine_key, coil_maps_key, matrix_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.kspace_key not in d or self.traj_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(
                f"GridSubspaced needs keys {self.kspace_key!r} and {self.traj_key!r}; got {list(d)}."
            )
        shape = d.get(self.matrix_key)
        shape = None if shape is None else tuple(int(v) for v in np.asarray(shape).ravel()[:2])
        cond = self.gridder(
            d[self.kspace_key], d[self.traj_key], image_shape=shape, coil_maps=d.get(self.coil_maps_key)
        )
        affine = d.get(self.affine_key)
        if affine is not None:
            affine = torch.as_tensor(np.asarray(affine) if not isinstance(affine, torch.Tensor) else affine)
        d[self.output_key] = MetaTensor(cond, affine=affine)
        return d
