"""Noise prewhitening: covariance, Cholesky whitening, the signal model after whitening."""

import math

import numpy as np
import pytest
import torch

from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.prewhitening import (
    NoiseCovarianceError,
    estimate_noise_covariance,
    prewhiten,
    whitening_matrix,
)


def _covariance(n_coils: int, seed: int = 0) -> torch.Tensor:
    """A realistic Hermitian positive-definite coil noise covariance (correlation up to ~0.5)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_coils, n_coils, dtype=torch.complex128, generator=g)
    cov = 0.3 * (a @ a.mH) / n_coils + torch.diag(torch.linspace(0.5, 2.0, n_coils, dtype=torch.float64))
    return cov.to(torch.complex128)


def _noise(cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    white = torch.randn(cov.shape[0], n, dtype=torch.complex128, generator=g)  # E|w|^2 = 1
    return torch.linalg.cholesky(cov) @ white


def test_covariance_estimate_and_whitened_noise_is_white():
    c, m = 8, 40_000
    cov = _covariance(c)
    noise = _noise(cov, m, seed=1)
    est = estimate_noise_covariance(noise)
    assert est.shape == (c, c) and est.dtype == torch.complex128
    torch.testing.assert_close(est, est.mH)
    # sample covariance: each entry has standard error about sqrt(Psi_aa Psi_bb / M)
    tol = 5 * math.sqrt(float(cov.diagonal().real.max()) ** 2 / m)
    assert (est - cov).abs().max() < tol
    w = whitening_matrix(est)
    assert w.dtype == torch.complex64 and torch.equal(w, torch.tril(w))
    # fresh noise with the same covariance becomes white: sample covariance ~ identity
    fresh = _noise(cov, m, seed=2).to(torch.complex64).reshape(c, 100, m // 100)
    white = prewhiten(fresh, w)
    assert white.shape == fresh.shape and white.dtype == torch.complex64
    sample = estimate_noise_covariance(white)
    eye = torch.eye(c, dtype=torch.complex128)
    assert (sample - eye).abs().max() < 5 * math.sqrt(1 / m) * 2
    # the exact identity W Psi W^H = I for the estimated covariance
    torch.testing.assert_close(
        (w.to(torch.complex128) @ est @ w.to(torch.complex128).mH), eye, atol=1e-5, rtol=0
    )


def test_bandwidth_scaling_convention():
    cov = _covariance(4)
    w1 = whitening_matrix(cov)
    # data sampled twice as fast as the noise scan (half the dwell): its noise is twice as
    # strong in power, so W shrinks by sqrt(1/2)
    w2 = whitening_matrix(cov, noise_dwell_us=10.0, data_dwell_us=5.0)
    torch.testing.assert_close(w2, w1 * math.sqrt(0.5))
    w3 = whitening_matrix(cov, relative_noise_bandwidth=0.793)
    torch.testing.assert_close(w3, w1 * math.sqrt(0.793))
    with pytest.raises(ValueError, match="both"):
        whitening_matrix(cov, noise_dwell_us=5.0)
    with pytest.raises(ValueError, match="positive"):
        whitening_matrix(cov, noise_dwell_us=5.0, data_dwell_us=0.0)


def test_whitened_data_and_maps_give_the_same_combined_image_with_lower_noise():
    c, n = 8, 32
    cov = _covariance(c, seed=3)
    w = whitening_matrix(cov)
    maps = simulate_coil_maps(c, (n, n), phase_offset_rad=0.4).to(torch.complex128)
    i = torch.arange(n, dtype=torch.float64) - n // 2
    img = (1.0 + 0.3 * torch.cos(i[:, None] / 2.0)) * torch.exp(1j * 0.2 * i[None, :])
    coil_imgs = maps * img  # noise-free signal model y = S m

    def combine(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # least squares / Roemer
        return (s.conj() * y).sum(0) / s.abs().square().sum(0)

    w128 = w.to(torch.complex128)
    before = combine(coil_imgs, maps)
    after = combine(
        prewhiten(coil_imgs, w128).to(torch.complex128), prewhiten(maps, w128).to(torch.complex128)
    )
    torch.testing.assert_close(before, img)
    torch.testing.assert_close(after, img, rtol=1e-5, atol=1e-5)  # complex64 whitening
    # with correlated noise, the whitened combination is the SNR-optimal one (Roemer)
    reps = 400
    noise = _noise(cov, reps * n * n, seed=4).reshape(c, reps, n, n)
    plain = combine(maps[:, None] * img + noise, maps[:, None])
    wmaps = prewhiten(maps, w128).to(torch.complex128)
    whitened = combine(prewhiten(maps[:, None] * img + noise, w128).to(torch.complex128), wmaps[:, None])
    var_plain = (plain - img).abs().square().mean(0)
    var_white = (whitened - img).abs().square().mean(0)
    expected = 1.0 / wmaps.abs().square().sum(0)  # 1 / (S^H Psi^-1 S)
    assert float((var_white / expected).mean()) == pytest.approx(1.0, abs=0.03)
    assert float(var_white.mean()) < float(var_plain.mean())


def test_dead_channel_is_a_clear_error():
    cov = _covariance(6)
    noise = _noise(cov, 5000, seed=5)
    noise[2] = 0  # a disconnected element
    with pytest.raises(NoiseCovarianceError, match=r"channel\(s\) \[2\].*drop these channels"):
        whitening_matrix(estimate_noise_covariance(noise))
    with pytest.raises(NoiseCovarianceError, match="fewer samples than channels"):
        whitening_matrix(estimate_noise_covariance(_noise(cov, 4, seed=6)))
    with pytest.raises(ValueError, match="at least 2"):
        estimate_noise_covariance(torch.ones(3, 1, dtype=torch.complex64))
    with pytest.raises(ValueError, match="channels"):
        prewhiten(torch.ones(5, 10, dtype=torch.complex64), whitening_matrix(cov))


def test_numpy_input_and_mean_removal():
    cov = _covariance(3)
    noise = (_noise(cov, 20000, seed=7) + 0.5).numpy().astype(np.complex64)
    centred = estimate_noise_covariance(noise, remove_mean=True)
    raw = estimate_noise_covariance(noise)
    assert (centred - cov).abs().max() < 0.1
    assert (raw - cov).abs().max() > 0.2  # the DC offset adds 0.25 everywhere
