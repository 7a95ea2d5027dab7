"""The gridding front end: raw k-space of one slice -> subspace images and normal operators.

:class:`SubspaceGridder` is the one place where a slice's k-space meets the subspace operator:

* :meth:`~SubspaceGridder.grid`: the calibrated gridding ``A^H D y`` (SVD-MRF, and the
  condition of every learned method at inference and in dataset-folder training pairs);
* :meth:`~SubspaceGridder.problem` / :meth:`~SubspaceGridder.slice_problem`: the
  :class:`~mrf_monai.acquisition.problem.SliceProblem` (gridding image, right-hand side and
  Toeplitz normal operator with the slice's coil maps) of iterative reconstructions (LRTV, the
  diffusion model's data consistency);
* calling it as a :class:`mrf_monai.pipeline.Reconstructor`: the SVD-MRF image of a raw slice.

Steps, in order: (1) k-space to a ``(C, T, S)`` tensor on the gridder's device
(:meth:`~SubspaceGridder.prepare_kspace`, the place of any pre-gridding k-space step);
(2) the Pipe-Menon density compensation ``D`` of the slice's trajectory; (3) the per-coil
density-compensated subspace images; (4) coil maps (given, or estimated from those images by
:meth:`~SubspaceGridder.estimate_coil_maps`) and their sensitivity-weighted combination;
(5) for problems, the Toeplitz kernels of ``A^H D A`` (or ``A^H A``). The density and the
operator with its kernels depend only on the trajectory, the basis and the matrix: they are
cached and reused while consecutive slices share them.

Nothing assumes one readout per frame: ``S`` is whatever the frame holds (one interleaf, or
several readouts of a frame laid end to end), and the density is made unbiased per frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .coils import COIL_MAP_METHODS, combine_coils, estimate_coil_maps
from .density import pipe_menon_dcf
from .operators import SubspaceNufftOperator, ToeplitzSubspaceNormal
from .problem import SliceProblem

__all__ = ["SubspaceGridder", "basis_tensor"]

ArrayLike = torch.Tensor | np.ndarray


def basis_tensor(basis: Any) -> torch.Tensor:
    """A ``(T, R)`` complex64 basis from a tensor, an array or an object with ``.basis``
    (an ``MRFDictionary``)."""
    b = getattr(basis, "basis", basis)
    b = b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
    if b.ndim != 2:
        raise ValueError(
            f"basis must be (T, R) (or an object with a .basis of that shape), got {tuple(b.shape)}."
        )
    return b.to(torch.complex64)


def _digest(*tensors: torch.Tensor, extra: object = None) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))


class SubspaceGridder:
    """Density-compensated subspace gridding of MRF k-space, and the problems built on it.

    Callable as a :class:`mrf_monai.pipeline.Reconstructor` (``(raw, slice_index, dictionary)``
    -> ``{"tsmi": (R, Nx, Ny)}``): the SVD-MRF baseline, the diffusion model's and the U-Net's
    condition, and the condition of training pairs from dataset folders all come from here.

    Args:
        device: where the NUFFTs, the density and the kernels are computed (``"cpu"``,
            ``"cuda"``); default CPU. The array-level methods take a ``device`` override.
        dcf_iter: Pipe-Menon iterations of the density compensation.
        eps: NUFFT accuracy.
        backend: NUFFT backend (see ``acquisition.nufft.make_nufft``).
        coil_maps: coil-map estimator used when several coils come without maps, one of
            ``acquisition.coils.COIL_MAP_METHODS`` (``"walsh"``, ``"inati"``:
            :func:`~mrf_monai.acquisition.coils.estimate_coil_maps` of the per-coil gridded
            subspace images).
        coil_kernel_size: neighbourhood (odd side, pixels) of the coil-map estimate.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        dcf_iter: int = 15,
        eps: float = 1e-6,
        backend: str = "auto",
        coil_maps: str = "walsh",
        coil_kernel_size: int = 7,
    ) -> None:
        if coil_maps not in COIL_MAP_METHODS:
            raise ValueError(
                f"coil_maps must be one of {list(COIL_MAP_METHODS)} (estimated from the data); "
                f"got {coil_maps!r}"
            )
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dcf_iter = int(dcf_iter)
        self.eps = float(eps)
        self.backend = backend
        self.coil_maps = coil_maps
        self.coil_kernel_size = int(coil_kernel_size)
        self._dcf_cache: tuple[str, torch.Tensor] | None = None
        self._op_cache: tuple[str, SubspaceNufftOperator] | None = None

    def __repr__(self) -> str:
        return (
            f"SubspaceGridder(device={str(self.device)!r}, dcf_iter={self.dcf_iter}, eps={self.eps}, "
            f"backend={self.backend!r}, coil_maps={self.coil_maps!r})"
        )

    # ------------------------------------------------------------------ building blocks
    def density(
        self, traj: ArrayLike, image_shape: Sequence[int], device: str | torch.device | None = None
    ) -> torch.Tensor:
        """Pipe-Menon density compensation ``(T, S)`` of ``traj`` on ``device`` (cached)."""
        device = self._device(device)
        t = _as_tensor(traj)
        shape = (int(image_shape[0]), int(image_shape[1]))
        key = _digest(t, extra=shape)
        if self._dcf_cache is None or self._dcf_cache[0] != key:
            dcf = pipe_menon_dcf(t.to(device), shape, n_iter=self.dcf_iter, backend=self.backend)
            self._dcf_cache = (key, dcf)
        return self._dcf_cache[1].to(device)

    def operator(
        self,
        traj: ArrayLike,
        basis: Any,
        image_shape: Sequence[int],
        device: str | torch.device | None = None,
        dcf: ArrayLike | None = None,
    ) -> SubspaceNufftOperator:
        """The slice's subspace operator without coil maps, with its density compensation.

        Cached (with its NUFFT plans and Toeplitz kernels) per trajectory, basis, matrix and
        device; a given ``dcf`` replaces the gridder's own and bypasses the cache.
        """
        device = self._device(device)
        t = _as_tensor(traj)
        b = basis_tensor(basis)
        shape = (int(image_shape[0]), int(image_shape[1]))
        if t.ndim != 3 or t.shape[-1] != 2:
            raise ValueError(
                f"traj must be (T, S, 2) for one slice, got {tuple(t.shape)}; select a slice first."
            )
        if b.shape[0] != t.shape[0]:
            raise ValueError(
                f"the basis has {b.shape[0]} frames but the trajectory {t.shape[0]}; "
                "use the dictionary/basis of the acquired (truncated) sequence."
            )
        if dcf is not None:
            return self._new_operator(t, b, shape, device, _as_tensor(dcf).to(device))
        key = _digest(t, b, extra=(shape, str(device)))
        if self._op_cache is None or self._op_cache[0] != key:
            self._op_cache = (key, self._new_operator(t, b, shape, device, self.density(t, shape, device)))
        return self._op_cache[1]

    def _new_operator(
        self, traj: torch.Tensor, basis: torch.Tensor, shape: tuple[int, int], device: torch.device, dcf
    ) -> SubspaceNufftOperator:
        return SubspaceNufftOperator(
            traj.to(device), basis, shape, None, dcf, eps=self.eps, backend=self.backend, device=device
        )

    def prepare_kspace(self, kspace: ArrayLike, device: str | torch.device | None = None) -> torch.Tensor:
        """k-space of one slice as a ``(C, T, S)`` tensor on ``device`` (``(T, S)``: one coil).

        Every pre-gridding k-space step of the front end happens here.
        """
        k = _as_tensor(kspace).to(self._device(device))
        if k.ndim == 2:
            k = k[None]
        if k.ndim != 3:
            raise ValueError(
                f"kspace must be (C, T, S) or (T, S) for one slice, got {tuple(k.shape)}; "
                "select a slice first."
            )
        return k

    def estimate_coil_maps(self, coil_images: torch.Tensor) -> torch.Tensor:
        """Coil maps ``(C, Nx, Ny)`` from per-coil subspace images ``(C, R, Nx, Ny)``
        with the gridder's estimator (``coil_maps``)."""
        return estimate_coil_maps(coil_images, method=self.coil_maps, kernel_size=self.coil_kernel_size)

    # ------------------------------------------------------------------ array level
    def grid(
        self,
        kspace: ArrayLike,
        traj: ArrayLike,
        basis: Any,
        image_shape: Sequence[int],
        coil_maps: ArrayLike | None = None,
        dcf: ArrayLike | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Calibrated gridding ``A^H D y`` of one slice: ``(R, Nx, Ny)`` complex64 on ``device``.

        Args:
            kspace: ``(C, T, S)`` or ``(T, S)`` (one coil) complex samples.
            traj: ``(T, S, 2)`` cycles per pixel.
            basis: ``(T, R)`` temporal basis (or an object with ``.basis``).
            image_shape: ``(Nx, Ny)``.
            coil_maps: ``(C, Nx, Ny)``; ``None``: estimated when there are several coils.
            dcf: ``(T, S)`` density compensation replacing the gridder's own (optional).
            device: override of the gridder's device.
        """
        device = self._device(device)
        op = self.operator(traj, basis, image_shape, device, dcf)
        coil_images = op.grid_coils(self.prepare_kspace(kspace, device))
        maps = self._coil_maps(coil_images, coil_maps)
        return coil_images[0] if maps is None else combine_coils(coil_images, maps)

    def problem(
        self,
        kspace: ArrayLike,
        traj: ArrayLike,
        basis: Any,
        image_shape: Sequence[int],
        coil_maps: ArrayLike | None = None,
        density_compensated: bool = True,
        device: str | torch.device | None = None,
    ) -> SliceProblem:
        """The :class:`SliceProblem` of one slice (arguments as :meth:`grid`).

        ``grid`` is :meth:`grid`'s image; ``rhs`` is ``grid`` when ``density_compensated``, else
        the exact adjoint ``A^H y`` combined with the same coil maps; ``normal`` is the Toeplitz
        ``A^H D A`` (or ``A^H A``) with those maps, its kernels cached with the operator.
        """
        device = self._device(device)
        op = self.operator(traj, basis, image_shape, device)
        k = self.prepare_kspace(kspace, device)
        coil_images = op.grid_coils(k)
        maps = self._coil_maps(coil_images, coil_maps)
        grid = coil_images[0] if maps is None else combine_coils(coil_images, maps)
        if density_compensated:
            rhs = grid
        else:
            adjoint = op.adjoint_coils(k)
            rhs = adjoint[0] if maps is None else combine_coils(adjoint, maps)
        kernel_hat = op.toeplitz(density_compensated).kernel_hat
        normal = ToeplitzSubspaceNormal(kernel_hat, op.image_shape, maps)
        return SliceProblem(grid, rhs, normal, maps, bool(density_compensated))

    # ------------------------------------------------------------------ raw level
    def slice_problem(
        self, raw: Any, slice_index: int, basis: Any, density_compensated: bool = True
    ) -> SliceProblem:
        """:meth:`problem` of slice ``slice_index`` of a ``RawSubject`` on the gridder's device."""
        b = self._raw_basis(raw, basis)
        return self.problem(
            raw.kspace[slice_index],
            raw.traj[slice_index],
            b,
            raw.matrix,
            density_compensated=density_compensated,
        )

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Compressed TSMI ``(R, Nx, Ny)`` of slice ``slice_index`` of ``raw`` (on the gridder's device)."""
        b = self._raw_basis(raw, dictionary)
        return {"tsmi": self.grid(raw.kspace[slice_index], raw.traj[slice_index], b, raw.matrix)}

    # ------------------------------------------------------------------ helpers
    def _device(self, device: str | torch.device | None) -> torch.device:
        return self.device if device is None else torch.device(device)

    @staticmethod
    def _raw_basis(raw: Any, basis: Any) -> torch.Tensor:
        b = basis_tensor(basis)
        if b.shape[0] != raw.n_frames:
            raise ValueError(
                f"the dictionary's basis has {b.shape[0]} frames but the raw data has {raw.n_frames}; "
                "use a dictionary of the raw data's sequence"
            )
        return b

    def _coil_maps(self, coil_images: torch.Tensor, coil_maps: ArrayLike | None) -> torch.Tensor | None:
        n_coils = int(coil_images.shape[0])
        if coil_maps is None:
            return self.estimate_coil_maps(coil_images) if n_coils > 1 else None
        maps = _as_tensor(coil_maps).to(coil_images.device, torch.complex64)
        if tuple(maps.shape) != (n_coils, *coil_images.shape[-2:]):
            raise ValueError(
                f"coil_maps must be (C, Nx, Ny) = {(n_coils, *coil_images.shape[-2:])} for this k-space, "
                f"got {tuple(maps.shape)}."
            )
        return maps
