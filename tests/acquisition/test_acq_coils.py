import pytest
import torch

from mrf_monai.acquisition.coils import (
    combine_coils,
    estimate_coil_maps,
    estimate_coil_maps_inati,
    estimate_coil_maps_walsh,
    simulate_coil_maps,
)


def phantom(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(n, dtype=torch.float32) - n // 2
    r2 = (i[:, None] / (0.4 * n)) ** 2 + (i[None, :] / (0.35 * n)) ** 2
    mask = r2 < 1
    img = mask * (1.0 + 0.5 * torch.cos(i[:, None] / 3.0)) * torch.exp(1j * 0.1 * i[None, :])
    return img.to(torch.complex64), mask


def test_simulated_maps_are_smooth_and_normalised():
    maps = simulate_coil_maps(8, (40, 36), phase_offset_rad=0.3)
    assert maps.shape == (8, 40, 36) and maps.dtype == torch.complex64
    torch.testing.assert_close(maps.abs().pow(2).sum(0), torch.ones(40, 36), rtol=1e-5, atol=1e-5)
    # each coil is strongest on its own side: coil 0 sits at +x (axis -2)
    assert maps[0, -1, 18].abs() > 3 * maps[0, 0, 18].abs()
    # smooth: neighbouring pixels differ little inside the object region (central 80 %)
    assert (maps[:, 5:35, 4:32] - maps[:, 4:34, 4:32]).abs().max() < 0.1
    with pytest.raises(ValueError, match="coil_radius"):
        simulate_coil_maps(4, (8, 8), coil_radius=0.9)


def test_walsh_reproduces_combined_image_up_to_phase():
    n = 48
    img, mask = phantom(n)
    true_maps = simulate_coil_maps(6, (n, n), phase_offset_rad=1.1)
    g = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(6, n, n, dtype=torch.complex64, generator=g)
    coil_imgs = true_maps * img + noise
    maps = estimate_coil_maps_walsh(coil_imgs, kernel_size=5)
    torch.testing.assert_close(maps.abs().pow(2).sum(0), torch.ones(n, n), rtol=1e-4, atol=1e-4)
    combined = combine_coils(coil_imgs, maps)
    err = (combined.abs() - img.abs())[mask].norm() / img[mask].norm()
    assert err.item() < 0.03
    # maps span the true sensitivities: |<S_est, S_true>| = 1 inside the object
    overlap = (maps.conj() * true_maps).sum(0).abs()
    assert overlap[mask].min().item() > 0.98
    # extra axes (e.g. subspace components) are pooled into the covariance
    stacked = torch.stack([coil_imgs, 0.5j * coil_imgs], 1)
    maps2 = estimate_coil_maps_walsh(stacked, kernel_size=5)
    assert (maps2.conj() * true_maps).sum(0).abs()[mask].min().item() > 0.98
    assert combine_coils(stacked, maps2).shape == (2, n, n)


@pytest.mark.parametrize("method", ["walsh", "inati"])
def test_estimators_share_one_interface_and_span_the_true_maps(method):
    n = 48
    img, mask = phantom(n)
    true_maps = simulate_coil_maps(8, (n, n), phase_offset_rad=0.7)
    g = torch.Generator().manual_seed(1)
    coil_imgs = true_maps * img + 0.01 * torch.randn(8, n, n, dtype=torch.complex64, generator=g)
    maps = estimate_coil_maps(coil_imgs, method=method, kernel_size=5)
    assert maps.shape == (8, n, n) and maps.dtype == torch.complex64
    torch.testing.assert_close(maps.abs().pow(2).sum(0), torch.ones(n, n), rtol=1e-4, atol=1e-4)
    overlap = (maps.conj() * true_maps).sum(0).abs()
    assert overlap[mask].min().item() > 0.98
    combined = combine_coils(coil_imgs, maps)
    reference = combine_coils(coil_imgs, true_maps)  # the true-map combination
    err = (combined.abs() - reference.abs())[mask].norm() / reference[mask].norm()
    assert err.item() < 0.03
    # the phase of the maps is smooth: no jumps between neighbouring object pixels
    phase_step = (maps[:, 1:, :] * maps[:, :-1, :].conj()).sum(0).angle().abs()
    assert phase_step[mask[1:] & mask[:-1]].max().item() < 0.3
    masked = estimate_coil_maps(coil_imgs, method=method, kernel_size=5, mask_threshold=0.05)
    assert (masked[:, ~mask].abs().sum(0) == 0).float().mean() > 0.5  # background removed
    assert (masked[:, mask].abs().sum(0) > 0).all()


def test_inati_converges_to_the_walsh_eigenvector_for_constant_maps():
    # with sensitivities constant over each neighbourhood both methods solve the same problem
    n, c = 24, 6
    g = torch.Generator().manual_seed(2)
    s = torch.randn(c, dtype=torch.complex64, generator=g)
    s = s / s.norm()
    img = (1.0 + torch.rand(n, n, generator=g)) * torch.exp(1j * torch.rand(n, n, generator=g))
    coil_imgs = s[:, None, None] * img.to(torch.complex64)
    walsh = estimate_coil_maps_walsh(coil_imgs, kernel_size=3)
    inati = estimate_coil_maps_inati(coil_imgs, kernel_size=3, n_iter=20, tol=0)
    overlap = (walsh.conj() * inati).sum(0).abs()
    torch.testing.assert_close(overlap, torch.ones(n, n), rtol=1e-5, atol=1e-5)
    # Inati's phase follows the virtual reference coil: one global phase for constant maps
    torch.testing.assert_close(inati, inati[:, :1, :1].expand(c, n, n), rtol=1e-5, atol=1e-5)
    # subspace components on extra axes are pooled
    stacked = torch.stack([coil_imgs, 0.3j * coil_imgs], 1)
    assert estimate_coil_maps_inati(stacked, kernel_size=3).shape == (c, n, n)
    with pytest.raises(ValueError, match="unknown coil map method"):
        estimate_coil_maps(coil_imgs, method="espirit")
    with pytest.raises(ValueError, match="odd"):
        estimate_coil_maps_inati(coil_imgs, kernel_size=4)
