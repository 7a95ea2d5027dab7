"""The scanner-data front end of SubspaceGridder: prewhitening, coil compression, records."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import mrf_monai.acquisition.prewhitening as prewhitening
from mrf_monai.acquisition.coil_compression import coil_compression
from mrf_monai.acquisition.coils import realistic_noise_covariance, simulate_coil_maps
from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.prewhitening import (
    NoiseCovarianceError,
    NoiseScan,
    estimate_noise_covariance,
    prewhiten,
    whitening_matrix,
)
from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
from mrf_monai.io.ismrmrd import RawSubject
from mrf_monai.physics.sequence import fisp_mrf_jiang2015
from mrf_monai.transforms.gridding import GridSubspaced, merge_acquisition_info

N, T, S, R = 16, 8, 64, 3


def correlated(n_coils: int, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    chol = torch.linalg.cholesky(realistic_noise_covariance(n_coils, seed=1)).to(torch.complex64)
    white = torch.randn(n_coils, int(np.prod(shape)), dtype=torch.complex64, generator=g)
    return (chol @ white).reshape(n_coils, *shape)


def make_data(n_coils: int, seed: int = 0, noise_level: float = 0.05, maps=None):
    g = torch.Generator().manual_seed(seed)
    traj, _ = mrf_spiral_trajectory(T, matrix=N, samples_per_readout=S)
    basis, _ = torch.linalg.qr(torch.randn(T, R, dtype=torch.complex64, generator=g))
    maps = simulate_coil_maps(n_coils, (N, N), phase_offset_rad=0.4) if maps is None else maps
    c = torch.randn(R, N, N, dtype=torch.complex64, generator=g)
    k = SubspaceNufftOperator(traj, basis, (N, N), maps).forward(c)
    sigma = noise_level * float(k.abs().mean())
    k = k + sigma * correlated(n_coils, (T, S), g)
    noise = sigma * correlated(n_coils, (4096,), g)
    return k, traj, basis, maps, noise


def plain(**kwargs) -> SubspaceGridder:
    return SubspaceGridder(prewhiten=False, n_virtual_coils=None, **kwargs)


@pytest.mark.parametrize("coil_maps", ["inati", "walsh"])
def test_whitening_inside_the_gridder_equals_whitening_by_hand(coil_maps):
    k, traj, basis, maps, noise = make_data(4)
    scan = NoiseScan(noise, dwell_us=4.0, data_dwell_us=2.0, relative_bandwidth=0.8)
    w = whitening_matrix(estimate_noise_covariance(noise), 4.0, 2.0, 0.8)
    kw = prewhiten(k, w)
    g = SubspaceGridder(coil_maps=coil_maps, prewhiten=True, n_virtual_coils=None)
    torch.testing.assert_close(g.prepare_kspace(k, noise=scan), kw)
    torch.testing.assert_close(
        g.grid(k, traj, basis, (N, N), noise=scan), plain(coil_maps=coil_maps).grid(kw, traj, basis, (N, N))
    )
    # the problem (LRTV, data consistency): the same channels for rhs, maps and normal operator
    for dc in (True, False):
        p = g.problem(k, traj, basis, (N, N), density_compensated=dc, noise=scan)
        q = plain(coil_maps=coil_maps).problem(kw, traj, basis, (N, N), density_compensated=dc)
        torch.testing.assert_close(p.rhs, q.rhs)
        torch.testing.assert_close(p.coil_maps, q.coil_maps)
        c = torch.randn(R, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(p.normal(c), q.normal(c))
    info = g.last_info["NoisePrewhitening"]
    assert info["Applied"] and info["Source"] == "noise scan" and info["NoiseSamplesPerChannel"] == 4096
    assert info["BandwidthScale"] == pytest.approx(0.4)
    assert g.last_info["CoilMaps"]["Method"] == coil_maps


def test_whitened_noise_is_white_with_the_bandwidth_scaling():
    g = torch.Generator().manual_seed(4)
    noise_scan = 0.3 * correlated(6, (20000,), g)
    imaging_noise = (
        0.3 * np.sqrt(0.5) * correlated(6, (20000,), g)
    )  # half the noise dwell: twice the bandwidth
    scan = NoiseScan(noise_scan, dwell_us=2.0, data_dwell_us=4.0)
    white = SubspaceGridder(prewhiten=True, n_virtual_coils=None).prepare_kspace(
        imaging_noise.reshape(6, 100, 200), noise=scan
    )
    cov = estimate_noise_covariance(white)
    assert torch.allclose(cov, torch.eye(6, dtype=cov.dtype), atol=0.05)


def test_given_covariance_and_given_maps_go_through_the_same_channels():
    k, traj, basis, maps, noise = make_data(4, seed=1)
    cov = estimate_noise_covariance(noise)
    w = whitening_matrix(cov)
    g = SubspaceGridder(prewhiten="auto", noise_covariance=cov, n_virtual_coils=None)
    est = g.grid(k, traj, basis, (N, N), coil_maps=maps)
    wmaps = prewhiten(maps, w)
    wmaps = wmaps / torch.linalg.vector_norm(wmaps, dim=0, keepdim=True)
    torch.testing.assert_close(est, plain().grid(prewhiten(k, w), traj, basis, (N, N), coil_maps=wmaps))
    assert g.last_info["NoisePrewhitening"]["Source"] == "given noise covariance"
    assert g.last_info["CoilMaps"]["Method"] == "given"
    with pytest.raises(ValueError, match="channels"):
        SubspaceGridder(noise_covariance=cov[:3, :3]).grid(k, traj, basis, (N, N))


def test_compression_of_data_spanning_fewer_channels_is_lossless():
    """Eight channels that are combinations of three coils: three virtual coils lose nothing."""
    three = simulate_coil_maps(3, (N, N), phase_offset_rad=0.4)
    mix = torch.randn(8, 3, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    maps8 = torch.einsum("ab,bxy->axy", mix, three)
    k, traj, basis, _, _ = make_data(8, seed=2, noise_level=0.0, maps=maps8)
    full = plain(coil_maps="inati")
    g = SubspaceGridder(coil_maps="inati", prewhiten=False, n_virtual_coils=3)
    ref, est = full.grid(k, traj, basis, (N, N)), g.grid(k, traj, basis, (N, N))
    torch.testing.assert_close(est, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    info = g.last_info["CoilCompression"]
    assert info["Applied"] and info["VirtualCoils"] == 3 and info["Channels"] == 8
    assert info["KeptEnergy"] == pytest.approx(1.0, abs=1e-6)
    p, q = g.problem(k, traj, basis, (N, N)), full.problem(k, traj, basis, (N, N))
    assert p.coil_maps.shape == (3, N, N)
    c = torch.randn(R, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(6))
    ref_n = q.normal(c)
    torch.testing.assert_close(p.normal(c), ref_n, rtol=1e-4, atol=1e-4 * float(ref_n.abs().max()))


def test_compressed_kspace_is_the_pca_of_the_whitened_slice():
    k, traj, basis, maps, noise = make_data(12, seed=3)
    scan = NoiseScan(noise)
    kw = prewhiten(k, scan.whitening())
    g = SubspaceGridder(prewhiten=True, n_virtual_coils=5)
    cc = coil_compression(kw, n_virtual=5)
    torch.testing.assert_close(
        g.prepare_kspace(k, noise=scan), (cc.matrix @ kw.reshape(12, -1)).reshape(5, T, S)
    )
    # "auto": more than 8 channels -> at least 8 virtual coils, more when the energy asks for them
    auto = SubspaceGridder(prewhiten=True)
    out = auto.prepare_kspace(k, noise=scan)
    info = auto.last_info["CoilCompression"]
    keep = int((torch.cumsum(cc.energy_fraction, 0) < 0.999 * (1 - 1e-12)).sum()) + 1
    assert out.shape[0] == info["VirtualCoils"] == max(8, keep)
    # at most 8 channels: "auto" does not compress
    small, _, _, _, small_noise = make_data(4, seed=4)
    few = SubspaceGridder(prewhiten=True)
    assert few.prepare_kspace(small, noise=small_noise).shape[0] == 4
    assert few.last_info["CoilCompression"]["Applied"] is False


def test_whitening_matrix_is_computed_once_per_raw_file(monkeypatch):
    calls = []
    real = prewhitening.NoiseScan.whitening

    def counting(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(prewhitening.NoiseScan, "whitening", counting)
    k, traj, basis, _, noise = make_data(3, seed=5)
    raw = RawSubject(
        kspace=np.stack([k.numpy(), 2 * k.numpy()]),
        traj=np.stack([traj] * 2),
        interleaf=np.zeros((2, T), dtype=np.int64),
        sequence=fisp_mrf_jiang2015(T),
        matrix=(N, N),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((2, 3)),
        noise=noise.numpy(),
    )
    g = SubspaceGridder(prewhiten=True)
    p0, p1 = g.slice_problem(raw, 0, basis), g.slice_problem(raw, 1, basis)
    torch.testing.assert_close(p1.grid, 2 * p0.grid)
    g(raw, 0, basis)
    assert len(calls) == 1
    # the transform: every slice brings a fresh copy of the noise scan (LoadRawSubjectd)
    t = GridSubspaced(basis=basis, prewhiten=True)
    for s in range(2):
        d = t(
            {
                "kspace": torch.from_numpy(raw.kspace[s]),
                "traj": traj,
                "matrix": (N, N),
                "noise": noise.clone(),
            }
        )
    assert len(calls) == 2
    info = d["acquisition_info"]
    assert set(info) == {"NoisePrewhitening", "CoilCompression", "CoilMaps"}
    torch.testing.assert_close(d["cond"].as_tensor(), g.grid(raw.kspace[1], traj, basis, (N, N), noise=noise))


def test_transform_reads_the_noise_scan_and_dwell_times_from_the_data_or_the_raw_subject():
    k, traj, basis, _, noise = make_data(4, seed=6)
    meta = {"noise_dwell_us": 4.0, "dwell_us": 2.0, "relative_noise_bandwidth": 0.79, "matrix": (N, N)}
    t = GridSubspaced(basis=basis, n_virtual_coils=None, problem_key="problem")
    d = t({"kspace": k, "traj": traj, "noise": noise, "meta": meta})
    scan = NoiseScan(noise, 4.0, 2.0, 0.79)
    torch.testing.assert_close(
        d["cond"].as_tensor(), SubspaceGridder(n_virtual_coils=None).grid(k, traj, basis, (N, N), noise=scan)
    )
    assert d["acquisition_info"]["NoisePrewhitening"]["BandwidthScale"] == pytest.approx(0.395)
    assert d["problem"].coil_maps.shape == (4, N, N)
    raw = RawSubject(
        kspace=k.numpy()[None],
        traj=traj[None],
        interleaf=np.zeros((1, T), dtype=np.int64),
        sequence=fisp_mrf_jiang2015(T),
        matrix=(N, N),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((1, 3)),
        noise=noise.numpy(),
        dwell_us=2.0,
        noise_dwell_us=4.0,
        relative_noise_bandwidth=0.79,
    )
    d2 = t({"kspace": k, "traj": traj, "raw": raw, "meta": {"matrix": (N, N)}})
    torch.testing.assert_close(d2["cond"].as_tensor(), d["cond"].as_tensor())


def test_prewhitening_policy_and_clear_notes():
    k, traj, basis, _, noise = make_data(3, seed=7)
    with pytest.raises(ValueError, match="no noise scan"):
        SubspaceGridder(prewhiten=True).grid(k, traj, basis, (N, N))
    g = SubspaceGridder()
    with pytest.warns(UserWarning, match="without a noise scan"):
        g.grid(k, traj, basis, (N, N))
    assert g.last_info["NoisePrewhitening"]["Applied"] is False
    assert "no noise scan" in g.last_info["NoisePrewhitening"]["Reason"]
    off = SubspaceGridder(prewhiten=False)
    torch.testing.assert_close(
        off.grid(k, traj, basis, (N, N), noise=noise), plain().grid(k, traj, basis, (N, N))
    )
    assert off.last_info["NoisePrewhitening"]["Applied"] is False
    one = SubspaceGridder()
    img = one.grid(k[0], traj, basis, (N, N), noise=noise[:1])
    assert one.last_info["NoisePrewhitening"]["Applied"] is False
    assert one.last_info["CoilMaps"] == {"Method": None, "Reason": "one coil"}
    torch.testing.assert_close(img, plain().grid(k[0], traj, basis, (N, N)))
    # a dead channel: "auto" reconstructs without prewhitening (and says why), True refuses
    dead = noise.clone()
    dead[1] = 0
    g = SubspaceGridder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g.grid(k, traj, basis, (N, N), noise=dead)
    assert any("dead" in str(w.message) for w in caught)
    assert g.last_info["NoisePrewhitening"]["Applied"] is False
    with pytest.raises(NoiseCovarianceError, match="dead"):
        SubspaceGridder(prewhiten=True).grid(k, traj, basis, (N, N), noise=dead)
    with pytest.raises(ValueError, match="channels"):
        SubspaceGridder(prewhiten=True).grid(k, traj, basis, (N, N), noise=noise[:2])
    for bad in (
        {"prewhiten": "yes"},
        {"n_virtual_coils": 0},
        {"n_virtual_coils": "many"},
        {"coil_energy": 0},
    ):
        with pytest.raises(ValueError):
            SubspaceGridder(**bad)


def test_records_merge_into_one_sidecar_entry_per_subject():
    a = {
        "NoisePrewhitening": {"Applied": True, "Channels": 16},
        "CoilCompression": {"VirtualCoils": 8, "KeptEnergy": 0.9991},
    }
    b = {
        "NoisePrewhitening": {"Applied": True, "Channels": 16},
        "CoilCompression": {"VirtualCoils": 9, "KeptEnergy": 0.9993},
    }
    merged = merge_acquisition_info([a, None, b])
    assert merged["NoisePrewhitening"] == {"Applied": True, "Channels": 16}
    assert merged["CoilCompression"] == {"VirtualCoils": [8, 9], "KeptEnergy": [0.9991, 0.9993]}
    assert merge_acquisition_info([]) == {}
