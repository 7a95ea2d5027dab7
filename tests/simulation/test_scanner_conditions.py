"""Scanner conditions of simulated subjects: correlated noise, noise scans, coil layouts, B1+ fields."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mrf_monai.acquisition.coils import realistic_noise_covariance, simulate_coil_maps
from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.acquisition.prewhitening import NoiseScan, estimate_noise_covariance
from mrf_monai.io.b1 import b1_map_path, read_b1_map, reference_b1_path
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.io.nifti import load_nifti
from mrf_monai.phantoms.augment import subject_generator
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import fisp_mrf_jiang2015
from mrf_monai.simulation.scanner import b1_field, draw_b1_field
from mrf_monai.simulation.subjects import simulate_subject, simulate_time_series

SMALL = dict(n_frames=8, matrix=32, samples_per_readout=128, split="test")


def test_default_subjects_keep_the_white_noise_draw(tmp_path):
    """Defaults: the imaging noise is exactly the simulator's white draw; nothing else is written."""
    noisy = simulate_subject(tmp_path / "a", "1", seed=4, n_coils=3, noise=0.01, **SMALL)
    clean = simulate_subject(tmp_path / "b", "1", seed=4, n_coils=3, noise=0.0, **SMALL)
    raw = read_raw(noisy / "raw.h5")
    sigma = json.loads((noisy / "sim.json").read_text())["noise"]["sigma_per_slice"][0]
    rng = subject_generator(4, "test", 3)
    n = rng.standard_normal((2, *raw.kspace.shape[1:]), dtype=np.float32) * np.float32(sigma / math.sqrt(2.0))
    assert np.array_equal(raw.kspace[0], read_raw(clean / "raw.h5").kspace[0] + (n[0] + 1j * n[1]))
    assert raw.noise is None and raw.dwell_us is None and raw.noise_dwell_us is None
    card = json.loads((noisy / "sim.json").read_text())
    assert not {"noise_covariance", "noise_scan", "b1", "coil_layout"} & set(card)
    assert not (noisy / "b1").exists() and not reference_b1_path(noisy).exists()
    white = simulate_subject(
        tmp_path / "c", "1", seed=4, n_coils=3, noise=0.01, noise_covariance="white", **SMALL
    )
    assert np.array_equal(read_raw(white / "raw.h5").kspace, raw.kspace)


def test_noise_scans_and_imaging_noise_have_the_requested_covariance(tmp_path):
    psi = realistic_noise_covariance(4, seed=9).numpy()
    args = dict(seed=2, n_coils=4, n_slices=2, noise_covariance=psi, **SMALL)
    scan_args = dict(noise_scan_samples=40000, dwell_us=2.0, noise_dwell_us=4.0, relative_noise_bandwidth=0.8)
    noisy = simulate_subject(tmp_path / "a", "1", noise=0.05, **args, **scan_args)
    clean = simulate_subject(tmp_path / "b", "1", noise=0.0, **args)
    raw = read_raw(noisy / "raw.h5")
    card = json.loads((noisy / "sim.json").read_text())
    sigma = card["noise_scan"]["subject_sigma"]
    assert sigma == pytest.approx(np.mean(card["noise"]["sigma_per_slice"]))
    assert (raw.dwell_us, raw.noise_dwell_us, raw.relative_noise_bandwidth) == (2.0, 4.0, 0.8)
    assert raw.noise.shape == (4, 40000)
    # the noise scan: sigma^2 Psi at its bandwidth, (2 / 4) x 0.8 of the imaging noise power
    cov_scan = estimate_noise_covariance(raw.noise).numpy()
    expected = sigma**2 * psi * (2.0 / 4.0) * 0.8
    assert np.abs(cov_scan - expected).max() < 0.03 * np.abs(expected).max()
    # the imaging noise: sigma^2 Psi, one sigma for both slices
    n = raw.kspace - read_raw(clean / "raw.h5").kspace
    cov_img = estimate_noise_covariance(np.moveaxis(n, 1, 0)).numpy()
    assert np.abs(cov_img - sigma**2 * psi).max() < 0.05 * sigma**2 * np.abs(psi).max()
    # whitening with the raw file's noise scan (dwell times, bandwidth) makes it white, unit variance
    white = SubspaceGridder(prewhiten=True, n_virtual_coils=None).prepare_kspace(
        torch.from_numpy(n[0]), noise=NoiseScan.from_raw(raw)
    )
    cov_white = estimate_noise_covariance(white).numpy()
    assert np.abs(cov_white - np.eye(4)).max() < 0.1


def test_coil_layouts_and_the_realistic_covariance():
    ring = simulate_coil_maps(8, (24, 24))
    assert torch.equal(ring, simulate_coil_maps(8, (24, 24), layout="ring"))
    two = simulate_coil_maps(8, (24, 24), layout="two-rings", normalize=False)
    # odd coils are farther away: weaker at the centre
    assert float(two[1::2, 12, 12].abs().mean()) < float(two[0::2, 12, 12].abs().mean())
    with pytest.raises(ValueError, match="layout"):
        simulate_coil_maps(4, (8, 8), layout="helmet")
    psi = realistic_noise_covariance(12, seed=3)
    assert torch.allclose(psi, psi.mH) and float(torch.linalg.eigvalsh(psi).min()) > 0
    var = psi.diagonal().real
    assert float(var.min()) >= 0.7 - 1e-9 and float(var.max()) <= 1.3 + 1e-9
    corr = psi / torch.sqrt(var[:, None] * var[None, :])
    assert float(corr.diagonal(1).real.mean()) == pytest.approx(0.3, abs=0.1)
    assert torch.equal(psi, realistic_noise_covariance(12, seed=3))


def test_b1_fields_change_the_signal_exactly_as_scaled_flip_angles():
    seq = fisp_mrf_jiang2015(1000).truncate(30)
    t1 = np.array([[0.8, 1.4], [2.0, 0.0]], np.float32)
    t2 = np.array([[0.07, 0.1], [0.3, 0.0]], np.float32)
    pd = np.array([[1.0, 0.5j], [0.8, 0.0]], np.complex64)
    b1 = np.array([[0.85, 1.0], [1.2, 1.0]], np.float32)
    x = simulate_time_series(t1, t2, pd, seq, b1=b1)
    for i, j in ((0, 0), (0, 1), (1, 0)):
        scaled = dataclasses.replace(seq, flip_angle_deg=seq.flip_angle_deg * float(b1[i, j]))
        ref = simulate_fisp(torch.tensor([t1[i, j]]), torch.tensor([t2[i, j]]), scaled)[0] * complex(pd[i, j])
        torch.testing.assert_close(x[:, i, j], ref.to(torch.complex64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        simulate_time_series(t1, t2, pd, seq, b1=np.ones_like(b1)), simulate_time_series(t1, t2, pd, seq)
    )
    assert not torch.allclose(x, simulate_time_series(t1, t2, pd, seq))
    with pytest.raises(ValueError, match="B1"):
        simulate_time_series(t1, t2, pd, seq, b1=np.zeros_like(b1))


def test_b1_field_shape_and_subject_maps(tmp_path):
    mask = np.zeros((40, 40), bool)
    mask[8:32, 10:30] = True
    params = draw_b1_field(0, "test", 0.15)
    f = b1_field(mask, 10.0, dataclasses.replace(params, centre_shift=(0.0, 0.0), radius_scale=(1.0, 1.0)))
    assert f[mask].max() == pytest.approx(1.15, abs=0.01) and f.min() == pytest.approx(0.85, abs=1e-6)
    assert np.unravel_index(np.argmax(f), f.shape) in {
        (19, 19),
        (19, 20),
        (20, 19),
        (20, 20),
    }  # centre-bright
    random = [draw_b1_field(s, "test", "random").amplitude for s in range(20)]
    assert min(random) >= 0.10 and max(random) <= 0.25 and len(set(random)) == 20
    d = simulate_subject(tmp_path, "3", seed=1, n_slices=2, noise=0.0, b1=0.15, write_b1_map=True, **SMALL)
    raw = read_raw(d / "raw.h5")
    ref = read_b1_map(reference_b1_path(d), raw)  # on the grid of the raw data
    assert np.array_equal(ref, read_b1_map(b1_map_path(d), raw))
    mask_ref, _ = load_nifti(d / "ref" / "sub-3_mask.nii.gz")
    brain = ref[mask_ref.astype(bool)]
    assert brain.min() >= 0.85 - 1e-6 and brain.max() <= 1.15 + 1e-6 and brain.max() - brain.min() > 0.1
    card = json.loads((d / "sim.json").read_text())
    assert card["b1"]["amplitude"] == 0.15 and card["b1"]["b1_map"] == "b1/sub-<label>_TB1map.nii.gz"
    # the k-space is that of the B1-scaled EPG: it differs from the nominal subject
    nominal = simulate_subject(tmp_path / "n", "3", seed=1, n_slices=2, noise=0.0, **SMALL)
    assert not np.allclose(raw.kspace, read_raw(nominal / "raw.h5").kspace)
    without = simulate_subject(tmp_path / "w", "3", seed=1, n_slices=2, noise=0.0, b1=0.15, **SMALL)
    assert reference_b1_path(without).is_file() and not (without / "b1").exists()
    assert np.array_equal(read_raw(without / "raw.h5").kspace, raw.kspace)


def test_simulate_command_scanner_options(tmp_path, capsys):
    from mrf_monai.cli import main

    out = tmp_path / "data"
    base = [
        "simulate",
        "--out",
        str(out),
        "--subjects",
        "1",
        "--frames",
        "8",
        "--matrix",
        "32",
        "--samples",
        "64",
    ]
    rc = main(
        base
        + [
            "--coils",
            "4",
            "--coil-layout",
            "two-rings",
            "--noise-covariance",
            "realistic",
            "--noise-scan",
            "512",
        ]
        + ["--dwell-us", "2", "--noise-dwell-us", "5", "--b1-field", "0.2", "--write-b1-map"]
    )
    assert rc == 0
    raw = read_raw(out / "sub-000" / "raw.h5")
    assert raw.noise.shape == (4, 512) and (raw.dwell_us, raw.noise_dwell_us) == (2.0, 5.0)
    assert b1_map_path(out / "sub-000").is_file() and reference_b1_path(out / "sub-000").is_file()
    card = json.loads((out / "dataset.json").read_text())
    assert (
        card["b1_field"] == 0.2 and card["noise_scan_samples"] == 512 and card["coil_layout"] == "two-rings"
    )
    sim = json.loads((out / "sub-000" / "sim.json").read_text())
    assert sim["coil_layout"] == "two-rings" and sim["noise_covariance"]["kind"] == "realistic"
    np.save(tmp_path / "psi.npy", np.eye(2))
    assert main(base + ["--coils", "2", "--noise-covariance", str(tmp_path / "psi.npy")]) == 0
    capsys.readouterr()
    assert main(base + ["--write-b1-map"]) == 2
    assert "--b1-field" in capsys.readouterr().err
    assert main(base + ["--noise-covariance", str(tmp_path / "nothing.npy")]) == 2
