"""Calibrated subspace gridding of one slice of ISMRMRD raw data: ``A^H D y``.

``D`` is the Pipe-Menon density compensation computed from the slice's own trajectory (reused
while consecutive slices share it); with several coils, Walsh coil maps estimated from the
gridded coil images combine the coils (``operators.grid_subspace``). With one spiral interleaf
per frame the result is heavily aliased: the SVD-MRF baseline and the learned methods'
condition.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

__all__ = ["SubspaceGridder"]


class SubspaceGridder:
    """Density-compensated subspace gridding of one slice of raw data to a compressed TSMI.

    Callable as a :class:`mrf_monai.pipeline.Reconstructor` (``(raw, slice_index, dictionary)``
    -> ``{"tsmi": (R, Nx, Ny)}``): the SVD-MRF baseline, the diffusion model's and the U-Net's
    condition, and the condition of training pairs from dataset folders all come from here.

    Args:
        device: where the NUFFTs run (``"cpu"``, ``"cuda"``); default CPU.
        dcf_iter: Pipe-Menon iterations of the density compensation.
        eps: NUFFT accuracy.
        backend: NUFFT backend (see ``acquisition.nufft.make_nufft``).
        coil_maps: ``"walsh"`` (estimate from the data when there are several coils).
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        dcf_iter: int = 15,
        eps: float = 1e-6,
        backend: str = "auto",
        coil_maps: str = "walsh",
    ) -> None:
        if coil_maps != "walsh":
            raise ValueError(f"coil_maps must be 'walsh' (estimated from the data); got {coil_maps!r}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dcf_iter = int(dcf_iter)
        self.eps = float(eps)
        self.backend = backend
        self._dcf_key: str | None = None
        self._dcf: torch.Tensor | None = None

    def _density(self, traj: np.ndarray, image_shape: tuple[int, int]) -> torch.Tensor:
        """Density compensation of ``traj``, reused while consecutive slices share it."""
        from .density import pipe_menon_dcf

        key = hashlib.sha1(np.ascontiguousarray(traj).tobytes()).hexdigest() + str(image_shape)
        if key != self._dcf_key:
            t = torch.as_tensor(np.ascontiguousarray(traj), device=self.device)
            self._dcf = pipe_menon_dcf(t, image_shape, n_iter=self.dcf_iter, backend=self.backend)
            self._dcf_key = key
        return self._dcf

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Compressed TSMI ``(R, Nx, Ny)`` of slice ``slice_index`` of ``raw``."""
        from .operators import grid_subspace

        basis = torch.as_tensor(dictionary.basis)
        if basis.shape[0] != raw.n_frames:
            raise ValueError(
                f"the dictionary's basis has {basis.shape[0]} frames but the raw data has {raw.n_frames}; "
                "use a dictionary of the raw data's sequence"
            )
        traj = raw.traj[slice_index]
        dcf = self._density(traj, raw.matrix)
        kspace = torch.as_tensor(raw.kspace[slice_index], device=self.device)
        tsmi = grid_subspace(
            kspace,
            torch.as_tensor(traj, device=self.device),
            basis.to(self.device),
            raw.matrix,
            dcf=dcf,
            eps=self.eps,
            backend=self.backend,
            device=self.device,
        )
        return {"tsmi": tsmi}
