"""PCA coil compression: lossless for low-rank channel data, energy fractions, noise stays white."""

import pytest
import torch

from mrf_monai.acquisition.coil_compression import (
    CoilCompression,
    choose_n_virtual,
    coil_compression,
    compress,
)
from mrf_monai.acquisition.prewhitening import estimate_noise_covariance


def _low_rank_kspace(c: int, n_true: int, shape=(20, 64), seed=0) -> torch.Tensor:
    """k-space of ``c`` channels that are mixtures of ``n_true`` independent virtual channels."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(c, n_true, dtype=torch.complex64, generator=g)
    scales = torch.logspace(0, -1.5, n_true).to(torch.complex64)  # unequal virtual-coil energies
    sources = torch.randn(n_true, *shape, dtype=torch.complex64, generator=g) * scales.reshape(-1, 1, 1)
    return torch.einsum("cn,nts->cts", mixing, sources)


def test_low_rank_data_are_compressed_losslessly():
    c, n_true = 12, 5
    k = _low_rank_kspace(c, n_true)
    cc = coil_compression(k, energy_threshold=1.0 - 1e-6)
    assert isinstance(cc, CoilCompression) and cc.n_virtual == n_true and cc.n_channels == c
    frac = cc.energy_fraction
    assert frac.shape == (c,)
    assert bool((frac[1:] <= frac[:-1] + 1e-15).all())  # monotone (decreasing)
    assert float(frac.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(frac[n_true:].sum()) < 1e-6  # nothing beyond the true rank (float32 data)
    cum = cc.cumulative_energy()
    assert bool((cum[1:] >= cum[:-1]).all()) and float(cum[-1]) == pytest.approx(1.0)
    assert cc.kept_energy == pytest.approx(1.0, abs=1e-6)
    v = compress(k, cc)
    assert v.shape == (n_true, *k.shape[1:]) and v.dtype == torch.complex64
    # orthonormal rows: A A^H = I, and A^H A k reconstructs k (lossless)
    torch.testing.assert_close(
        cc.matrix @ cc.matrix.mH, torch.eye(n_true, dtype=torch.complex64), atol=1e-5, rtol=0
    )
    back = torch.einsum("nc,nts->cts", cc.matrix.conj(), v)
    assert float((back - k).norm() / k.norm()) < 1e-5
    # energy is preserved exactly by lossless compression
    assert float(v.norm() / k.norm()) == pytest.approx(1.0, abs=1e-5)


def test_choose_n_virtual_thresholds_and_bounds():
    frac = torch.tensor([0.6, 0.3, 0.06, 0.03, 0.01], dtype=torch.float64)
    assert choose_n_virtual(frac, 0.5) == 1
    assert choose_n_virtual(frac, 0.9) == 2
    assert choose_n_virtual(frac, 0.95) == 3
    assert choose_n_virtual(frac, 0.99) == 4
    assert choose_n_virtual(frac, 1.0) == 5
    assert choose_n_virtual(frac, 0.5, n_min=3) == 3
    assert choose_n_virtual(frac, 1.0, n_max=2) == 2
    with pytest.raises(ValueError, match="energy_threshold"):
        choose_n_virtual(frac, 0.0)


def test_fixed_count_k_centre_selection_and_white_noise_stays_white():
    c = 8
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(c, 50, 400, dtype=torch.complex64, generator=g)  # white, unit variance
    traj = torch.rand(50, 400, 2, generator=g) - 0.5
    cc = coil_compression(noise, n_virtual=4, traj=traj, k_radius=0.2)
    assert cc.n_virtual == 4 and cc.kept_energy < 0.6  # white noise has no dominant component
    cov = estimate_noise_covariance(compress(noise, cc.matrix))
    assert (cov - torch.eye(4, dtype=cov.dtype)).abs().max() < 0.03
    # deterministic phase convention: same data, same matrix
    torch.testing.assert_close(
        coil_compression(noise, n_virtual=4, traj=traj, k_radius=0.2).matrix, cc.matrix
    )


def test_errors_are_clear():
    k = _low_rank_kspace(4, 2)
    with pytest.raises(ValueError, match="n_virtual"):
        coil_compression(k, n_virtual=5)
    with pytest.raises(ValueError, match="together"):
        coil_compression(k, k_radius=0.1)
    with pytest.raises(ValueError, match="k_radius"):
        coil_compression(k, traj=torch.full((20, 64, 2), 0.4), k_radius=0.1)
    with pytest.raises(ValueError, match="all zeros"):
        coil_compression(torch.zeros(3, 10, dtype=torch.complex64))
    with pytest.raises(ValueError, match="channels"):
        compress(torch.ones(3, 10, dtype=torch.complex64), coil_compression(k, n_virtual=2))
