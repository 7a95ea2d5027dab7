"""Noise prewhitening of multi-channel k-space (Roemer et al., MRM 1990; Hansen & Kellman, JMRI 2015).

The receive channels of a phased array have correlated noise: its covariance ``Psi`` (C x C)
is measured from noise-only samples (ISMRMRD acquisitions flagged ``ACQ_IS_NOISE_MEASUREMENT``,
data contract section 5). With the Cholesky factor ``Psi = L L^H``, the whitening matrix
``W = L^{-1}`` (lower triangular) turns the noise of ``W y`` into white noise of unit variance
per channel (``E[(W n)(W n)^H] = I``), as in ISMRMRD-python-tools, Gadgetron and mrpro.

Because ``W`` acts on the channel axis only, it commutes with everything that acts per channel
(density compensation, NUFFT gridding, the temporal subspace): whitening the k-space before
gridding equals whitening the gridded coil images. The signal model ``y = S m + n`` becomes
``W y = (W S) m + W n``: coil maps estimated from whitened data are the whitened maps ``W S``
(up to the per-pixel normalisation of the estimator), and the sensitivity-weighted combination
of whitened data is Roemer's SNR-optimal ``S^H Psi^{-1} y / (S^H Psi^{-1} S)``.

Receiver-bandwidth convention
-----------------------------
Thermal noise power per sample is proportional to the sampling bandwidth ``1 / dwell``. When the
noise scan and the imaging data were sampled with different dwell times, the covariance of the
data's noise is ``Psi * (noise_dwell / data_dwell)``; receivers that filter the noise scan also
report the ratio of their effective noise bandwidth to the sampling bandwidth (ISMRMRD header
``acquisitionSystemInformation.relativeReceiverNoiseBandwidth``, about 0.79 on many systems).
Following Gadgetron and mrpro, :func:`whitening_matrix` scales ``W`` by
``sqrt(scale)`` with ``scale = (data_dwell / noise_dwell) * relative_noise_bandwidth``. The
dwell times are the acquisitions' ``sample_time_us`` (noise scan and imaging readouts); when they
are not known both default to equal (``scale = relative_noise_bandwidth = 1``): the whitened
noise then has unit variance only if the noise scan used the imaging bandwidth, which is the
assumption to state wherever the dwell times are missing. The overall scale of ``W`` does not
change the maps (matching is scale invariant and the learned models normalise each slice); it
matters for noise levels and SNR figures.

Unlike ISMRMRD-python-tools (which multiplies ``W`` by ``sqrt(2)`` so that real and imaginary
parts have unit variance each), the whitened complex noise here has ``E|n|^2 = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "NoiseCovarianceError",
    "NoiseScan",
    "estimate_noise_covariance",
    "whitening_matrix",
    "prewhiten",
]

#: A channel whose noise variance is below this fraction of the median channel's is "dead".
_DEAD_FRACTION = 1e-6


class NoiseCovarianceError(ValueError):
    """The noise covariance cannot be whitened (not positive definite); the message says why."""


def _tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def estimate_noise_covariance(noise: torch.Tensor | np.ndarray, remove_mean: bool = False) -> torch.Tensor:
    """Sample covariance ``Psi = n n^H / (M - 1)`` of noise-only samples.

    Args:
        noise: ``(C, ...)`` complex noise samples per channel (``RawSubject.noise`` is ``(C, M)``;
            several noise acquisitions may be stacked on further axes, they are pooled).
        remove_mean: subtract each channel's mean first (a DC offset of the receiver); off by
            default, as ISMRMRD, Gadgetron and mrpro do, because thermal noise has zero mean.

    Returns:
        ``(C, C)`` complex128 Hermitian covariance on the device of ``noise``.

    Raises:
        ValueError: fewer than two samples, or non-finite values.
    """
    n = _tensor(noise)
    if n.ndim < 1:
        raise ValueError("noise must be (C, ...) with the channel axis first")
    n = n.reshape(n.shape[0], -1).to(torch.complex128)
    n_samples = int(n.shape[1])
    if n_samples < 2:
        raise ValueError(f"the noise scan holds {n_samples} sample(s) per channel; at least 2 are needed")
    if not bool(torch.isfinite(n).all()):
        raise ValueError("the noise samples hold NaN or Inf values; the noise scan is corrupt")
    if remove_mean:
        n = n - n.mean(dim=1, keepdim=True)
    cov = (n @ n.mH) / (n_samples - 1)
    return 0.5 * (cov + cov.mH)


def whitening_matrix(
    covariance: torch.Tensor | np.ndarray,
    noise_dwell_us: float | None = None,
    data_dwell_us: float | None = None,
    relative_noise_bandwidth: float = 1.0,
) -> torch.Tensor:
    """Whitening matrix ``W = sqrt(scale) L^{-1}`` with ``covariance = L L^H`` (Cholesky).

    Args:
        covariance: ``(C, C)`` Hermitian noise covariance (:func:`estimate_noise_covariance`).
        noise_dwell_us, data_dwell_us: sampling dwell times of the noise scan and the imaging
            data (ISMRMRD ``sample_time_us``); both or neither (then equal, see module docs).
        relative_noise_bandwidth: the receiver's effective noise bandwidth relative to the
            sampling bandwidth (ISMRMRD ``relativeReceiverNoiseBandwidth``), default 1.

    Returns:
        ``(C, C)`` lower-triangular complex64 ``W`` on the covariance's device: ``W y`` has white
        noise of unit variance per channel.

    Raises:
        NoiseCovarianceError: the covariance is not positive definite; the message names the
            dead (zero-variance) or linearly dependent channels and what to do.
    """
    cov = _tensor(covariance).to(torch.complex128)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"covariance must be a square (C, C) matrix, got shape {tuple(cov.shape)}")
    if (noise_dwell_us is None) != (data_dwell_us is None):
        raise ValueError("give both noise_dwell_us and data_dwell_us (or neither: equal dwell times)")
    scale = float(relative_noise_bandwidth)
    if noise_dwell_us is not None:
        if not (noise_dwell_us > 0 and data_dwell_us > 0):
            raise ValueError(
                f"dwell times must be positive, got noise {noise_dwell_us} us, data {data_dwell_us} us"
            )
        scale *= float(data_dwell_us) / float(noise_dwell_us)
    if not scale > 0:
        raise ValueError(f"relative_noise_bandwidth must be positive, got {relative_noise_bandwidth}")
    cov = 0.5 * (cov + cov.mH)
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0 or not bool(torch.isfinite(chol).all()):
        raise NoiseCovarianceError(_not_positive_definite(cov))
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    w = torch.linalg.solve_triangular(chol, eye, upper=False)
    return (w * scale**0.5).to(torch.complex64)


def _not_positive_definite(cov: torch.Tensor) -> str:
    var = cov.diagonal().real
    median = float(var.median()) if var.numel() else 0.0
    dead = torch.nonzero(var <= _DEAD_FRACTION * max(median, 0.0)).squeeze(1).tolist()
    if dead:
        return (
            f"the noise covariance is not positive definite: channel(s) {dead} have (almost) no noise "
            f"(variance <= {_DEAD_FRACTION:g} x the median channel's), i.e. dead or disconnected "
            "receive elements; drop these channels from the k-space and the noise scan before "
            "prewhitening (or reconstruct without prewhitening)"
        )
    evals = torch.linalg.eigvalsh(cov)
    return (
        "the noise covariance is not positive definite (smallest eigenvalue "
        f"{float(evals[0]):.3g}, largest {float(evals[-1]):.3g}): some channels are linear "
        "combinations of others (duplicated or combined channels), or the noise scan has fewer "
        "samples than channels; use a longer noise scan, drop the duplicated channels, or "
        "reconstruct without prewhitening"
    )


def prewhiten(kspace: torch.Tensor | np.ndarray, whitening: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Apply the whitening matrix to the channel axis: ``out[a, ...] = sum_b W[a, b] k[b, ...]``.

    Args:
        kspace: ``(C, ...)`` complex k-space (or coil images, or coil maps: ``W`` acts on the
            channel axis only), on any device.
        whitening: ``(C, C)`` from :func:`whitening_matrix` (moved to the k-space's device).

    Returns:
        ``(C, ...)`` complex64 whitened data on the device of ``kspace``.
    """
    k = _tensor(kspace)
    w = _tensor(whitening)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"whitening must be a (C, C) matrix, got shape {tuple(w.shape)}")
    if k.ndim < 1 or k.shape[0] != w.shape[1]:
        raise ValueError(
            f"k-space has {k.shape[0] if k.ndim else 0} channels on axis 0 but the whitening matrix is for "
            f"{w.shape[1]}; use the noise scan of the same raw file (same coils, same order)"
        )
    k = k.to(torch.complex64)
    w = w.to(device=k.device, dtype=torch.complex64)
    return (w @ k.reshape(k.shape[0], -1)).reshape(k.shape)


@dataclass(frozen=True)
class NoiseScan:
    """The noise-only samples of one raw file and the sampling facts that whitening needs.

    Attributes:
        samples: ``(C, M)`` complex noise samples per channel (``RawSubject.noise``).
        dwell_us: dwell time of the noise scan (its acquisitions' ``sample_time_us``), or ``None``.
        data_dwell_us: dwell time of the imaging readouts, or ``None``.
        relative_bandwidth: the header's ``relativeReceiverNoiseBandwidth``, or ``None`` (1).
    """

    samples: torch.Tensor | np.ndarray
    dwell_us: float | None = None
    data_dwell_us: float | None = None
    relative_bandwidth: float | None = None

    @classmethod
    def from_raw(cls, raw: Any) -> NoiseScan | None:
        """The noise scan of a ``RawSubject`` (``None`` when its file has none)."""
        noise = getattr(raw, "noise", None)
        if noise is None or int(np.shape(noise)[-1]) == 0:
            return None
        return cls(
            noise,
            getattr(raw, "noise_dwell_us", None),
            getattr(raw, "dwell_us", None),
            getattr(raw, "relative_noise_bandwidth", None),
        )

    @property
    def n_channels(self) -> int:
        return int(np.shape(self.samples)[0])

    @property
    def n_samples(self) -> int:
        """Noise samples per channel."""
        return int(np.prod(np.shape(self.samples)[1:]))

    @property
    def dwell_times_known(self) -> bool:
        """Both dwell times are known (else they are taken as equal, see the module docs)."""
        return self.dwell_us is not None and self.data_dwell_us is not None

    @property
    def bandwidth_scale(self) -> float:
        """``(data_dwell / noise_dwell) * relative_bandwidth``: the factor :func:`whitening_matrix`
        applies to ``W`` squared (1 when the dwell times are unknown and no bandwidth is given)."""
        scale = 1.0 if self.relative_bandwidth is None else float(self.relative_bandwidth)
        if self.dwell_times_known:
            scale *= float(self.data_dwell_us) / float(self.dwell_us)
        return scale

    def whitening(self) -> torch.Tensor:
        """``(C, C)`` whitening matrix of the imaging data's noise (:func:`whitening_matrix` of the
        scan's covariance, with the dwell-time and bandwidth scaling when the dwell times are known).

        Raises:
            NoiseCovarianceError: see :func:`whitening_matrix`.
        """
        known = self.dwell_times_known
        return whitening_matrix(
            estimate_noise_covariance(self.samples),
            noise_dwell_us=self.dwell_us if known else None,
            data_dwell_us=self.data_dwell_us if known else None,
            relative_noise_bandwidth=1.0
            if self.relative_bandwidth is None
            else float(self.relative_bandwidth),
        )
