"""Coil sensitivities: Walsh adaptive estimation and a simple simulation model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["estimate_coil_maps_walsh", "simulate_coil_maps", "combine_coils"]


def estimate_coil_maps_walsh(
    images: torch.Tensor | np.ndarray,
    kernel_size: int = 7,
    mask_threshold: float | None = None,
) -> torch.Tensor:
    """Walsh adaptive coil sensitivities (dominant eigenvector of the local coil covariance).

    Args:
        images: ``(C, Nx, Ny)`` complex coil images; extra axes ``(C, ..., Nx, Ny)`` (e.g. the
            subspace components of each coil) are pooled into the covariance.
        kernel_size: side of the square neighbourhood (odd) over which the ``C x C``
            covariance is averaged.
        mask_threshold: if given, maps are set to 0 where the dominant eigenvalue is below
            ``mask_threshold`` times its maximum (background).

    Returns:
        ``(C, Nx, Ny)`` complex64 maps with ``sum_c |S_c|^2 = 1`` at every unmasked pixel and
        phase relative to the strongest coil, so ``sum_c conj(S_c) images_c`` is the
        combined image with the (smooth) phase of that coil.
    """
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim < 3:
        raise ValueError(f"images must be (C, ..., Nx, Ny), got {tuple(x.shape)}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
    x = x.to(torch.complex64)
    n_coils = int(x.shape[0])
    nx, ny = int(x.shape[-2]), int(x.shape[-1])
    x = x.reshape(n_coils, -1, nx, ny)
    # covariance R[a, b] = sum over extra axes of x_a conj(x_b), then the local average
    cov = torch.einsum("aexy,bexy->abxy", x, x.conj()).reshape(n_coils * n_coils, nx, ny)
    parts = torch.cat([cov.real, cov.imag], 0)[None]
    parts = F.avg_pool2d(parts, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)[0]
    cov = torch.complex(parts[: n_coils * n_coils], parts[n_coils * n_coils :])
    cov = cov.reshape(n_coils, n_coils, nx * ny).permute(2, 0, 1)
    cov = 0.5 * (cov + cov.conj().transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(cov)
    v = evecs[..., -1]  # (Nx*Ny, C), unit norm
    ref = int(torch.argmax(x.abs().pow(2).sum(dim=(1, 2, 3))))
    phase = v[:, ref] / v[:, ref].abs().clamp_min(1e-30)
    v = v * phase.conj()[:, None]
    maps = v.T.reshape(n_coils, nx, ny)
    if mask_threshold is not None:
        top = evals[..., -1].reshape(nx, ny)
        maps = maps * (top >= mask_threshold * top.max())
    return maps.contiguous()


def combine_coils(images: torch.Tensor, coil_maps: torch.Tensor) -> torch.Tensor:
    """Sensitivity-weighted combination ``sum_c conj(S_c) images_c`` over axis 0.

    ``images`` ``(C, ..., Nx, Ny)``, ``coil_maps`` ``(C, Nx, Ny)``.
    """
    maps = coil_maps.to(images.device)
    maps = maps.reshape(maps.shape[0], *([1] * (images.ndim - 3)), *maps.shape[-2:])
    return (maps.conj() * images).sum(0)


def simulate_coil_maps(
    n_coils: int,
    image_shape: Sequence[int],
    coil_radius: float = 1.5,
    phase_offset_rad: float = 0.0,
    normalize: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Smooth receive sensitivities of ``n_coils`` long wires around the object (Biot-Savart).

    Coil ``c`` is a straight conductor along the slice normal at angle ``2 pi c / C`` on a
    circle of radius ``coil_radius`` (units of half the field of view). The in-plane field of
    a wire is perpendicular to the offset and falls off as ``1/r``; its receive sensitivity
    ``B_x - 1j B_y`` is ``1 / (dx + 1j dy)`` with ``(dx, dy)`` the offset from the wire in
    half-FOV units (``x`` along axis -2, ``y`` along axis -1). Each coil gets an extra
    constant phase ``phase_offset_rad * c``.

    Returns:
        ``(C, Nx, Ny)`` complex64; with ``normalize`` scaled so ``sum_c |S_c|^2 = 1``.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}.")
    if coil_radius <= 1.0:
        raise ValueError(
            f"coil_radius must exceed 1 (wires outside the inscribed circle of the FOV), got {coil_radius}."
        )
    nx, ny = int(image_shape[0]), int(image_shape[1])
    xs = (torch.arange(nx, dtype=torch.float64, device=device) - nx // 2) / (nx / 2)
    ys = (torch.arange(ny, dtype=torch.float64, device=device) - ny // 2) / (ny / 2)
    z = torch.complex(xs[:, None].expand(nx, ny), ys[None, :].expand(nx, ny))
    angles = 2 * math.pi * torch.arange(n_coils, dtype=torch.float64, device=device) / n_coils
    zc = coil_radius * torch.exp(1j * angles)
    maps = torch.exp(1j * phase_offset_rad * torch.arange(n_coils, device=device))[:, None, None] / (
        z[None] - zc[:, None, None]
    )
    if normalize:
        maps = maps / maps.abs().pow(2).sum(0, keepdim=True).sqrt()
    return maps.to(torch.complex64)
