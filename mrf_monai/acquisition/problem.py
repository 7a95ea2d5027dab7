"""The data term of one slice in the temporal subspace: what iterative reconstructions need.

:class:`SliceProblem` bundles, for one slice of raw data, the calibrated gridding image, the
right-hand side and the Toeplitz normal operator of the least-squares problem

    min_c 1/2 || W^{1/2} (A c - y) ||^2,

``W = D`` (the density compensation: the preconditioned problem, whose right-hand side is the
gridding image itself) or ``W = I`` (plain least squares). It is made by
:meth:`mrf_monai.acquisition.gridding.SubspaceGridder.problem` and used by LRTV and by the
diffusion model's k-space data consistency; ``.to(device)`` moves everything at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .operators import ToeplitzSubspaceNormal

__all__ = ["SliceProblem"]


@dataclass(frozen=True)
class SliceProblem:
    """Gridding image, right-hand side and normal operator of one slice.

    Attributes:
        grid: ``(R, Nx, Ny)`` complex64 ``A^H D y``: the calibrated gridding image (the SVD-MRF
            reconstruction and the learned methods' condition).
        rhs: ``(R, Nx, Ny)`` complex64: ``A^H D y`` (= ``grid``) when ``density_compensated``,
            else ``A^H y``.
        normal: Toeplitz ``A^H D A`` (or ``A^H A``) with the slice's coil maps, callable on
            ``(..., R, Nx, Ny)`` tensors on the device of its kernels.
        coil_maps: ``(C, Nx, Ny)`` complex64 coil maps of the slice, or ``None`` (one coil).
        density_compensated: which of the two problems this is.
    """

    grid: torch.Tensor
    rhs: torch.Tensor
    normal: ToeplitzSubspaceNormal
    coil_maps: torch.Tensor | None
    density_compensated: bool = True

    @property
    def device(self) -> torch.device:
        """Device of the kernels (where :attr:`normal` runs without copies)."""
        return self.normal.kernel_hat.device

    @property
    def rank(self) -> int:
        return int(self.grid.shape[-3])

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.normal.image_shape

    def to(self, device: torch.device | str) -> SliceProblem:
        """This problem with every tensor on ``device`` (the same object if already there)."""
        device = torch.device(device)
        tensors = [self.grid, self.rhs, self.normal.kernel_hat]
        if self.coil_maps is not None:
            tensors.append(self.coil_maps)
        if all(_same_device(t.device, device) for t in tensors):
            return self
        maps = None if self.coil_maps is None else self.coil_maps.to(device)
        normal = ToeplitzSubspaceNormal(self.normal.kernel_hat.to(device), self.normal.image_shape, maps)
        return SliceProblem(
            grid=self.grid.to(device),
            rhs=self.rhs.to(device),
            normal=normal,
            coil_maps=maps,
            density_compensated=self.density_compensated,
        )


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` (current device) and ``cuda:0`` count as the same when they resolve alike."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        if a.type != "cuda":
            return True
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index
