"""Coil compression: PCA of the receive channels to fewer virtual coils (Buehrer et al., MRM 2007;
Huang et al., MRI 2008).

The k-space samples of C channels, stacked as a ``(C, M)`` matrix ``Y``, are compressed with the
leading left singular vectors ``U_N`` of ``Y`` (the eigenvectors of the C x C Gram matrix
``Y Y^H``): the virtual coils are ``U_N^H Y`` (``N x M``). The rows of the compression matrix
``A = U_N^H`` are orthonormal, so compression keeps white noise white (compress after
prewhitening, :mod:`mrf_monai.acquisition.prewhitening`) and ``A^H A Y`` is the best rank-N
approximation of ``Y`` (Eckart-Young): data that span only N' channels are compressed to N'
virtual coils without loss. ``A`` acts on the channel axis only, so it commutes with gridding,
density compensation and the temporal subspace, and coil maps estimated from compressed data
are those of the virtual coils.

Which samples: all of them by default (the Gram matrix costs ``C^2 M``, a fraction of one
gridding), or only those near the k-space centre (``traj`` and ``k_radius``), which carry the
smooth coil sensitivities and most of the energy. Each virtual coil's energy fraction is the
eigenvalue of the Gram matrix over their sum; :func:`choose_n_virtual` picks the fewest virtual
coils keeping a given fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CoilCompression", "coil_compression", "choose_n_virtual", "compress"]


def _tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


@dataclass
class CoilCompression:
    """A PCA coil compression.

    Attributes:
        matrix: ``(N, C)`` complex64 compression matrix with orthonormal rows: virtual coil
            ``v = matrix @ channels``.
        energy_fraction: ``(C,)`` float64 fraction of the data's energy in each principal
            component, in decreasing order (sums to 1); the first N are the kept virtual coils.
    """

    matrix: torch.Tensor
    energy_fraction: torch.Tensor

    @property
    def n_virtual(self) -> int:
        """Number of virtual coils N."""
        return int(self.matrix.shape[0])

    @property
    def n_channels(self) -> int:
        """Number of physical (or whitened) channels C."""
        return int(self.matrix.shape[1])

    @property
    def kept_energy(self) -> float:
        """Fraction of the data's energy that the N virtual coils keep."""
        return float(self.energy_fraction[: self.n_virtual].sum())

    def cumulative_energy(self) -> torch.Tensor:
        """``(C,)``: energy kept by the first 1, 2, ..., C virtual coils (non-decreasing, ends at 1)."""
        return torch.cumsum(self.energy_fraction, 0)


def choose_n_virtual(
    energy_fraction: torch.Tensor | np.ndarray,
    energy_threshold: float = 0.99,
    n_min: int = 1,
    n_max: int | None = None,
) -> int:
    """Fewest virtual coils whose energy fractions sum to at least ``energy_threshold``.

    Args:
        energy_fraction: ``(C,)`` decreasing fractions (:attr:`CoilCompression.energy_fraction`).
        energy_threshold: in (0, 1].
        n_min, n_max: bounds on the result (``n_max`` default C).
    """
    frac = _tensor(energy_fraction).to(torch.float64).reshape(-1)
    c = int(frac.numel())
    if c == 0:
        raise ValueError("energy_fraction is empty")
    if not 0 < energy_threshold <= 1:
        raise ValueError(f"energy_threshold must lie in (0, 1], got {energy_threshold}")
    n_max = c if n_max is None else min(int(n_max), c)
    if not 1 <= n_min <= n_max:
        raise ValueError(f"need 1 <= n_min <= n_max <= {c} channels, got n_min={n_min}, n_max={n_max}")
    cum = torch.cumsum(frac, 0)
    # relative slack for float rounding of the sum (a threshold of 1 means "lossless")
    n = int(torch.searchsorted(cum, torch.tensor([energy_threshold * (1 - 1e-12)], dtype=cum.dtype))[0]) + 1
    return max(n_min, min(n, n_max))


def coil_compression(
    kspace: torch.Tensor | np.ndarray,
    n_virtual: int | None = None,
    energy_threshold: float = 0.99,
    traj: torch.Tensor | np.ndarray | None = None,
    k_radius: float | None = None,
) -> CoilCompression:
    """PCA compression matrix of ``kspace`` ``(C, ...)`` to ``n_virtual`` virtual coils.

    Args:
        kspace: ``(C, ...)`` complex samples (one slice ``(C, T, S)``, or all slices), any device.
        n_virtual: number of virtual coils; None chooses it with :func:`choose_n_virtual` and
            ``energy_threshold``.
        energy_threshold: energy fraction to keep when ``n_virtual`` is None.
        traj: ``(..., 2)`` cycles per pixel matching ``kspace.shape[1:]``; with ``k_radius``,
            only samples with ``|k| <= k_radius`` enter the Gram matrix.
        k_radius: radius of the central k-space region used (cycles per pixel, e.g. 0.1).

    Returns:
        :class:`CoilCompression` (its matrix on the device of ``kspace``).
    """
    k = _tensor(kspace)
    if k.ndim < 2:
        raise ValueError(f"kspace must be (C, ...) with samples after the channel axis, got {tuple(k.shape)}")
    c = int(k.shape[0])
    y = k.reshape(c, -1)
    if (traj is None) != (k_radius is None):
        raise ValueError("give traj and k_radius together (or neither to use every sample)")
    if traj is not None:
        t = _tensor(traj).to(k.device)
        if tuple(t.shape) != (*k.shape[1:], 2):
            raise ValueError(f"traj must have shape {(*k.shape[1:], 2)} (kspace without its channel axis, 2)")
        keep = torch.linalg.vector_norm(t.reshape(-1, 2).to(torch.float64), dim=1) <= float(k_radius)
        if int(keep.sum()) < c:
            raise ValueError(
                f"only {int(keep.sum())} samples lie within |k| <= {k_radius}; use a larger k_radius "
                f"(at least {c} samples are needed for {c} channels)"
            )
        y = y[:, keep]
    if not bool(torch.isfinite(y).all()):
        raise ValueError("the k-space holds NaN or Inf values; it cannot be compressed")
    gram = torch.zeros(c, c, dtype=torch.complex128, device=y.device)
    step = max(1, 2**22 // max(c, 1))
    for s in range(0, y.shape[1], step):  # chunks in the data's precision, summed in float64
        part = y[:, s : s + step].to(torch.complex64)
        gram += (part @ part.mH).to(torch.complex128)
    gram = 0.5 * (gram + gram.mH)
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    total = float(evals.sum())
    if total <= 0:
        raise ValueError("the k-space is all zeros; nothing to compress")
    frac = evals / total
    if n_virtual is None:
        n_virtual = choose_n_virtual(frac, energy_threshold)
    if not 1 <= int(n_virtual) <= c:
        raise ValueError(f"n_virtual must lie in [1, {c}] (the number of channels), got {n_virtual}")
    # fix each component's phase (largest entry real positive) for reproducible virtual coils
    u = evecs[:, : int(n_virtual)]
    idx = u.abs().argmax(dim=0)
    pivot = u.gather(0, idx[None, :])
    u = u * (pivot.conj() / pivot.abs().clamp_min(1e-300))
    return CoilCompression(matrix=u.mH.to(torch.complex64).contiguous(), energy_fraction=frac.cpu())


def compress(
    kspace: torch.Tensor | np.ndarray, matrix: torch.Tensor | np.ndarray | CoilCompression
) -> torch.Tensor:
    """Virtual-coil data ``matrix @ kspace`` over the channel axis: ``(C, ...)`` -> ``(N, ...)``.

    Also compresses coil images or coil maps (the matrix acts on the channel axis only).
    """
    m = matrix.matrix if isinstance(matrix, CoilCompression) else _tensor(matrix)
    k = _tensor(kspace)
    if m.ndim != 2:
        raise ValueError(f"the compression matrix must be (N, C), got shape {tuple(m.shape)}")
    if k.ndim < 1 or k.shape[0] != m.shape[1]:
        raise ValueError(
            f"k-space has {k.shape[0] if k.ndim else 0} channels on axis 0 but the compression matrix is "
            f"for {m.shape[1]}; compute it from the same (whitened) data"
        )
    k = k.to(torch.complex64)
    m = m.to(device=k.device, dtype=torch.complex64)
    return (m @ k.reshape(k.shape[0], -1)).reshape(m.shape[0], *k.shape[1:])
