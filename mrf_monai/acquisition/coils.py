"""Coil sensitivities: Walsh and Inati adaptive estimation, combination, and a simple simulation model.

Two estimators from the coil images themselves (no calibration scan), with one interface
(``estimate_coil_maps(images, method="walsh" | "inati", kernel_size=7, mask_threshold=None)``):

* Walsh et al. (MRM 2000): at every pixel, the dominant eigenvector of the ``C x C`` coil
  covariance averaged over a square neighbourhood (``C^2`` products and one eigen-decomposition
  per pixel); phase relative to the strongest coil.
* Inati, Hansen & Kellman (ISMRM 2014, "A fast optimal method for coil sensitivity estimation
  and adaptive coil combination for complex images"): the same local signal model solved by
  a power iteration that never forms the covariance. With maps ``S`` and the combined image
  ``rho = sum_c conj(S_c) x_c``, one step is ``S_c <- smooth(x_c conj(rho))``, normalised per
  pixel: ``smooth(x_c conj(rho)) = smooth(sum_b x_c conj(x_b) S_b)`` is the locally averaged
  covariance applied to ``S``, so the iteration converges to Walsh's eigenvector where ``S``
  is locally constant, at ``O(C)`` instead of ``O(C^2)`` work per pixel and without
  eigen-decompositions. The phase is referenced to one virtual coil (the normalised sum of all
  coil images over the slice) rather than to one physical coil.

Both return maps with ``sum_c |S_c|^2 = 1`` so that :func:`combine_coils` (``sum_c conj(S_c)
x_c``) is the sensitivity-weighted (Roemer) combination for white noise: prewhiten first
(:mod:`mrf_monai.acquisition.prewhitening`) when the channels' noise is correlated. Their
accuracy and cost on simulated coils are measured by ``benchmarks/bench_coils.py``
(``docs/scanner-data.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "COIL_MAP_METHODS",
    "estimate_coil_maps",
    "estimate_coil_maps_walsh",
    "estimate_coil_maps_inati",
    "simulate_coil_maps",
    "realistic_noise_covariance",
    "combine_coils",
    "COIL_LAYOUTS",
]

#: Names accepted by :func:`estimate_coil_maps` (and by the gridder's ``coil_maps`` option).
COIL_MAP_METHODS = ("walsh", "inati")
#: Coil layouts of :func:`simulate_coil_maps`.
COIL_LAYOUTS = ("ring", "two-rings")


def _as_coil_images(images: torch.Tensor | np.ndarray, kernel_size: int) -> torch.Tensor:
    """``(C, E, Nx, Ny)`` complex64 view of ``(C, ..., Nx, Ny)`` images, with checks."""
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim < 3:
        raise ValueError(f"images must be (C, ..., Nx, Ny), got {tuple(x.shape)}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
    x = x.to(torch.complex64)
    return x.reshape(x.shape[0], -1, x.shape[-2], x.shape[-1])


def _box_smooth(z: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Mean of complex ``z (C, Nx, Ny)`` over a ``kernel_size`` square (shrinking at the edges)."""
    c = z.shape[0]
    parts = torch.cat([z.real, z.imag], 0)[None]
    parts = F.avg_pool2d(parts, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)[0]
    return torch.complex(parts[:c], parts[c:])


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
    x = _as_coil_images(images, kernel_size)
    n_coils = int(x.shape[0])
    nx, ny = int(x.shape[-2]), int(x.shape[-1])
    # covariance R[a, b] = sum over extra axes of x_a conj(x_b), then the local average
    cov = torch.einsum("aexy,bexy->abxy", x, x.conj()).reshape(n_coils * n_coils, nx, ny)
    cov = _box_smooth(cov, kernel_size)
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


def estimate_coil_maps_inati(
    images: torch.Tensor | np.ndarray,
    kernel_size: int = 7,
    mask_threshold: float | None = None,
    n_iter: int = 5,
    tol: float = 1e-3,
) -> torch.Tensor:
    """Inati's fast adaptive coil sensitivities (power iteration without covariance, module docs).

    Args:
        images: ``(C, Nx, Ny)`` complex coil images; extra axes ``(C, ..., Nx, Ny)`` (e.g. the
            subspace components of each coil) are pooled, as in Walsh's covariance.
        kernel_size: side of the square (odd) over which ``x_c conj(rho)`` is averaged.
        mask_threshold: if given, maps are set to 0 where the local signal power (the
            smoothed ``||sum_e x conj(rho)||``, Walsh's dominant eigenvalue at convergence) is
            below ``mask_threshold`` times its maximum (background).
        n_iter: largest number of iterations (on gridded MRF coil images the combined image
            stops changing after 3 to 5: ``benchmarks/bench_coils.py``).
        tol: stop once the relative change of the maps (over the slice) is below ``tol``.

    Returns:
        ``(C, Nx, Ny)`` complex64 maps with ``sum_c |S_c|^2 = 1`` at every unmasked pixel and
        phase relative to the virtual reference coil, on the device of ``images``.
    """
    x = _as_coil_images(images, kernel_size)
    n_coils = int(x.shape[0])
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}.")
    tiny = torch.finfo(torch.float32).tiny
    # virtual reference coil: the normalised sum of every coil image over the slice
    ref = x.sum(dim=(1, 2, 3))
    ref = ref / torch.linalg.vector_norm(ref).clamp_min(tiny)
    maps = ref[:, None, None].expand(n_coils, *x.shape[-2:]).contiguous()
    power = None
    for _ in range(int(n_iter)):
        rho = torch.einsum("cxy,cexy->exy", maps.conj(), x)  # combined images with the current maps
        d = _box_smooth(torch.einsum("cexy,exy->cxy", x, rho.conj()), kernel_size)
        power = torch.linalg.vector_norm(d, dim=0)
        new = d / power.clamp_min(tiny)
        phase = torch.einsum("c,cxy->xy", ref.conj(), new)
        new = new * (phase.conj() / phase.abs().clamp_min(tiny))
        change = float(torch.linalg.vector_norm(new - maps) / torch.linalg.vector_norm(maps).clamp_min(tiny))
        maps = new
        if change < tol:
            break
    if mask_threshold is not None:
        maps = maps * (power >= mask_threshold * power.max())
    return maps.contiguous()


def estimate_coil_maps(
    images: torch.Tensor | np.ndarray,
    method: str = "walsh",
    kernel_size: int = 7,
    mask_threshold: float | None = None,
) -> torch.Tensor:
    """Coil maps ``(C, Nx, Ny)`` from coil images ``(C, ..., Nx, Ny)``; ``method`` "walsh" or "inati"."""
    if method == "walsh":
        return estimate_coil_maps_walsh(images, kernel_size=kernel_size, mask_threshold=mask_threshold)
    if method == "inati":
        return estimate_coil_maps_inati(images, kernel_size=kernel_size, mask_threshold=mask_threshold)
    raise ValueError(f"unknown coil map method {method!r}; choose one of {', '.join(COIL_MAP_METHODS)}")


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
    layout: str = "ring",
) -> torch.Tensor:
    """Smooth receive sensitivities of ``n_coils`` long wires around the object (Biot-Savart).

    ``layout="ring"``: coil ``c`` is a straight conductor along the slice normal at angle
    ``2 pi c / C`` on a circle of radius ``coil_radius`` (units of half the field of view).
    ``layout="two-rings"``: a two-row head array seen from one slice: the even coils lie on
    that circle (the row of the slice), the odd coils, rotated by half a step, on a circle
    1.4 times larger (the neighbouring row: broader, weaker sensitivities, more overlap).
    The in-plane field of a wire is perpendicular to the offset and falls off as ``1/r``; its
    receive sensitivity ``B_x - 1j B_y`` is ``1 / (dx + 1j dy)`` with ``(dx, dy)`` the offset
    from the wire in half-FOV units (``x`` along axis -2, ``y`` along axis -1). Each coil gets
    an extra constant phase ``phase_offset_rad * c``.

    Returns:
        ``(C, Nx, Ny)`` complex64; with ``normalize`` scaled so ``sum_c |S_c|^2 = 1``.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}.")
    if coil_radius <= 1.0:
        raise ValueError(
            f"coil_radius must exceed 1 (wires outside the inscribed circle of the FOV), got {coil_radius}."
        )
    if layout not in COIL_LAYOUTS:
        raise ValueError(f"unknown coil layout {layout!r}; choose one of {', '.join(COIL_LAYOUTS)}")
    nx, ny = int(image_shape[0]), int(image_shape[1])
    xs = (torch.arange(nx, dtype=torch.float64, device=device) - nx // 2) / (nx / 2)
    ys = (torch.arange(ny, dtype=torch.float64, device=device) - ny // 2) / (ny / 2)
    z = torch.complex(xs[:, None].expand(nx, ny), ys[None, :].expand(nx, ny))
    index = torch.arange(n_coils, dtype=torch.float64, device=device)
    angles = 2 * math.pi * index / n_coils
    radius = torch.full_like(index, float(coil_radius))
    if layout == "two-rings":
        odd = (index % 2) == 1
        angles = torch.where(odd, angles + math.pi / n_coils, angles)
        radius = torch.where(odd, 1.4 * radius, radius)
    zc = radius * torch.exp(1j * angles)
    maps = torch.exp(1j * phase_offset_rad * torch.arange(n_coils, device=device))[:, None, None] / (
        z[None] - zc[:, None, None]
    )
    if normalize:
        maps = maps / maps.abs().pow(2).sum(0, keepdim=True).sqrt()
    return maps.to(torch.complex64)


def realistic_noise_covariance(
    n_coils: int,
    seed: int = 0,
    neighbour_correlation: float = 0.3,
    variance_range: tuple[float, float] = (0.7, 1.3),
) -> torch.Tensor:
    """A receive array's noise covariance ``(C, C)`` complex128 for simulations and benchmarks.

    A ring array: correlation ``neighbour_correlation`` between neighbouring channels, decaying
    as its power with the ring distance, plus a small random Hermitian component (mutual
    inductance and shared preamplifier noise do not follow the geometry exactly), renormalised
    to unit diagonal; channel variances drawn uniformly from ``variance_range``. Positive
    definite; reproducible from ``seed`` (a ``torch.Generator``). Typical of head arrays,
    whose measured neighbour correlations are 0.1-0.4 (Roemer et al., MRM 1990).
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}.")
    if not 0 <= neighbour_correlation < 1:
        raise ValueError(f"neighbour_correlation must lie in [0, 1), got {neighbour_correlation}")
    lo, hi = float(variance_range[0]), float(variance_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"variance_range must be two positive numbers (low, high), got {variance_range}")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.arange(n_coils, dtype=torch.float64)
    dist = (idx[:, None] - idx[None, :]).abs()
    dist = torch.minimum(dist, n_coils - dist)
    corr = (neighbour_correlation ** dist.clamp(min=0)).to(torch.complex128)
    a = torch.randn(n_coils, n_coils, dtype=torch.complex128, generator=g) * 0.1
    corr = corr + a @ a.mH
    d = torch.diagonal(corr).real.sqrt()
    corr = corr / (d[:, None] * d[None, :])
    var = lo + (hi - lo) * torch.rand(n_coils, dtype=torch.float64, generator=g)
    return corr * (var[:, None] * var[None, :]).sqrt()
