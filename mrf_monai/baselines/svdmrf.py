"""SVD-MRF (McGivney et al. 2014): density-compensated gridding into the temporal subspace.

The compressed TSMI of a slice is the calibrated gridding ``A^H D y`` of its k-space
(``acquisition.operators.grid_subspace``) with Pipe-Menon density compensation computed
from the slice's own trajectory; with several coils, Walsh coil maps are estimated from
the gridded coil images and the coils are combined with them. It is fast and, with one
interleaf per frame, heavily aliased: the baseline that the other methods improve on, and
the diffusion model's condition.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

__all__ = ["SVDMRFReconstructor"]


class SVDMRFReconstructor:
    """Gridding reconstruction of a compressed TSMI (a :class:`mrf_monai.pipeline.Reconstructor`).

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
        from ..acquisition.density import pipe_menon_dcf

        key = hashlib.sha1(np.ascontiguousarray(traj).tobytes()).hexdigest() + str(image_shape)
        if key != self._dcf_key:
            t = torch.as_tensor(np.ascontiguousarray(traj), device=self.device)
            self._dcf = pipe_menon_dcf(t, image_shape, n_iter=self.dcf_iter, backend=self.backend)
            self._dcf_key = key
        return self._dcf

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Compressed TSMI ``(R, Nx, Ny)`` of slice ``slice_index`` of ``raw``."""
        from ..acquisition.operators import grid_subspace

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
