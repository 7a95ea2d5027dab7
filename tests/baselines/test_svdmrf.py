"""SVD-MRF end to end: fully sampled, noise-free frames must give the true T1 and T2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.nufft import Nufft2D
from mrf_monai.acquisition.trajectory import fully_sampled_spiral
from mrf_monai.baselines.svdmrf import SVDMRFReconstructor
from mrf_monai.io.ismrmrd import RawSubject
from mrf_monai.matching import match_dictionary
from mrf_monai.physics import fisp_mrf_jiang2015
from mrf_monai.physics.dictionary import build_dictionary
from mrf_monai.physics.epg import simulate_fisp

N = 32
N_FRAMES = 100
#: (T1 s, T2 s, PD) of three tissues, chosen on the dictionary grid below.
TISSUES = ((0.8, 0.05), (1.3, 0.1), (2.5, 0.4))
T1_GRID = np.geomspace(0.2, 4.0, 27)
T2_GRID = np.geomspace(0.02, 1.6, 27)


def _on_grid(v: float, grid: np.ndarray) -> float:
    return float(grid[np.argmin(np.abs(np.log(grid) - np.log(v)))])


def make_dictionary(rank: int = 5):
    t1, t2 = np.meshgrid(T1_GRID, T2_GRID, indexing="ij")
    keep = t2 < t1
    t1_s = torch.tensor(t1[keep], dtype=torch.float32)
    t2_s = torch.tensor(t2[keep], dtype=torch.float32)
    return build_dictionary(fisp_mrf_jiang2015(N_FRAMES), t1_s=t1_s, t2_s=t2_s, rank=rank)


def phantom(n: int = N):
    """Tissue label (0 = background), smooth tissue fractions ``(3, n, n)`` and complex PD.

    A disc with three compartments; the fractions are the labels blurred by a Gaussian of
    one voxel, so that the object's spectrum lies inside the sampled k-space disc (no
    Gibbs ringing at this tiny matrix).
    """
    from scipy.ndimage import gaussian_filter

    i, j = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    r = np.hypot(i, j)
    label = np.zeros((n, n), dtype=int)
    label[r < 12] = 1
    label[(r < 12) & (i > 2)] = 2
    label[np.hypot(i + 4, j - 3) < 5] = 3
    fractions = np.stack([gaussian_filter((label == k).astype(float), 1.0) for k in (1, 2, 3)])
    pd = (0.8 + 0.2 * (label == 3)) * np.exp(1j * (0.3 + 0.02 * j))
    return label, fractions, pd


def make_raw(n_coils: int = 2, samples_per_readout: int = 128) -> tuple[RawSubject, np.ndarray, np.ndarray]:
    """Noise-free raw data whose every frame holds a fully sampled spiral."""
    sequence = fisp_mrf_jiang2015(N_FRAMES)
    label, fractions, pd = phantom()
    t1 = torch.tensor([_on_grid(t[0], T1_GRID) for t in TISSUES], dtype=torch.float64)
    t2 = torch.tensor([_on_grid(t[1], T2_GRID) for t in TISSUES], dtype=torch.float64)
    fingerprints = simulate_fisp(t1, t2, sequence).numpy()  # (3, T)
    series = np.zeros((N_FRAMES, N, N), dtype=np.complex128)
    for k in range(3):
        series += fingerprints[k][:, None, None] * (fractions[k] * pd)[None]
    traj = fully_sampled_spiral(N_FRAMES, matrix=N, samples_per_readout=samples_per_readout)  # (T, S, 2)
    maps = simulate_coil_maps(n_coils, (N, N)).numpy() if n_coils > 1 else np.ones((1, N, N))
    op = Nufft2D(traj[0], (N, N), eps=1e-9)
    coil_series = torch.as_tensor((maps[:, None] * series[None]).reshape(-1, N, N))
    kspace = op.forward(coil_series).numpy().reshape(n_coils, N_FRAMES, -1).astype(np.complex64)
    raw = RawSubject(
        kspace=kspace[None],
        traj=traj[None],
        interleaf=np.zeros((1, N_FRAMES), dtype=np.int64),
        sequence=sequence,
        matrix=(N, N),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((1, 3)),
    )
    pure = fractions.max(axis=0) > 0.9  # single-tissue voxels, away from partial volumes
    dominant = fractions.argmax(axis=0)
    true_t1 = np.where(pure, t1.numpy()[dominant], 0.0)
    true_t2 = np.where(pure, t2.numpy()[dominant], 0.0)
    return raw, true_t1, true_t2


@pytest.mark.parametrize("n_coils", [1, 3])
def test_fully_sampled_svdmrf_recovers_t1_and_t2(n_coils):
    dictionary = make_dictionary()
    raw, true_t1, true_t2 = make_raw(n_coils)
    out = SVDMRFReconstructor()(raw, 0, dictionary)
    tsmi = out["tsmi"]
    assert tsmi.shape == (5, N, N) and tsmi.is_complex() and torch.isfinite(tsmi).all()
    maps = match_dictionary(tsmi, dictionary)
    label = phantom()[0]
    obj, pure = label > 0, true_t1 > 0
    mask = maps["mask"].numpy()
    # the mask is the object (up to its blurred one-voxel rim)
    assert (mask & obj).sum() >= 0.95 * obj.sum() and (mask & ~obj).sum() <= 0.25 * obj.sum()
    assert mask[pure].all()
    inside = pure  # every single-tissue voxel of the object
    t1, t2 = maps["t1_s"].numpy(), maps["t2_s"].numpy()
    t1_mape = 100 * np.mean(np.abs(t1[inside] - true_t1[inside]) / true_t1[inside])
    t2_mape = 100 * np.mean(np.abs(t2[inside] - true_t2[inside]) / true_t2[inside])
    assert t1_mape < 3.0 and t2_mape < 3.0, (t1_mape, t2_mape)
    # most single-tissue voxels get exactly the right atom
    exact = np.mean(np.isclose(t1[inside], true_t1[inside]) & np.isclose(t2[inside], true_t2[inside]))
    assert exact > 0.75, exact
    assert (t1[~mask] == 0).all() and np.isfinite(t1).all()
