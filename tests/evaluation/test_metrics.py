from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrf_monai.evaluation.metrics import (
    align_phase,
    map_metrics,
    mape,
    nrmse,
    psnr,
    reference_tsmi,
    rmse,
    ssim,
    tsmi_metrics,
)
from mrf_monai.matching import match_dictionary


@pytest.fixture()
def maps():
    g = np.random.default_rng(0)
    n = 32
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    mask = np.repeat((((yy - 16) ** 2 + (xx - 16) ** 2) < 144)[..., None], 2, axis=2)
    t1 = np.where(mask, 0.8 + 0.6 * g.random((n, n, 2)), 0.0)
    t2 = np.where(mask, 0.05 + 0.1 * g.random((n, n, 2)), 0.0)
    return t1, t2, mask


def test_percentage_and_root_mean_square_errors(maps):
    t1, _, mask = maps
    assert mape(1.1 * t1, t1, mask) == pytest.approx(10.0, rel=1e-9)
    assert mape(0.95 * t1, t1, mask) == pytest.approx(5.0, rel=1e-9)
    # 2 ms offset inside the mask, garbage outside it must not count
    pred = np.where(mask, t1 + 0.002, 123.0)
    assert rmse(pred, t1, mask, scale=1000.0) == pytest.approx(2.0, rel=1e-6)
    assert nrmse(2 * t1, t1, mask) == pytest.approx(1.0, rel=1e-9)
    assert nrmse(t1, t1, mask) == 0.0
    z = torch.polar(torch.ones(5), torch.arange(5.0))
    assert nrmse(z * 1j, z) == pytest.approx(math.sqrt(2), rel=1e-6)  # complex: |1j - 1| = sqrt(2)


def test_ssim_and_psnr(maps):
    t1, _, mask = maps
    assert ssim(t1, t1, mask) == pytest.approx(1.0, abs=1e-6)
    noisy = t1 + np.random.default_rng(1).normal(0, 0.1, t1.shape)
    s = ssim(noisy, t1, mask)
    assert 0.0 < s < 0.99
    # what happens outside the mask is ignored (both are zeroed there)
    assert ssim(np.where(mask, noisy, 9.0), t1, mask) == pytest.approx(s, rel=1e-9)
    peak = t1[mask].max()
    assert psnr(t1 + 0.01, t1, mask) == pytest.approx(20 * math.log10(peak / 0.01), rel=1e-6)
    assert psnr(t1, t1, mask) == float("inf")


def test_map_metrics_names_and_errors(maps):
    t1, t2, mask = maps
    out = map_metrics({"t1_s": 1.1 * t1, "t2_s": t2}, {"t1_s": t1, "t2_s": t2}, mask)
    assert set(out) == {
        f"{p}_{m}" for p in ("T1", "T2") for m in ("MAPE", "RMSE_ms", "NRMSE", "SSIM", "PSNR")
    }
    assert out["T1_MAPE"] == pytest.approx(10.0) and out["T2_MAPE"] == 0.0 and out["T2_RMSE_ms"] == 0.0
    with pytest.raises(ValueError, match="empty"):
        mape(t1, t1, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        rmse(t1[:3], t1, mask)
    with pytest.raises(ValueError, match="real"):
        ssim(t1 + 1j, t1, mask)


def test_tsmi_metrics_ignore_the_pd_phase():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 16, 16, dtype=torch.complex64, generator=g)
    mask = torch.ones(16, 16, dtype=torch.bool)
    phase = torch.polar(torch.ones(16, 16), 6 * torch.rand(16, 16, generator=g))
    out = tsmi_metrics(ref * phase, ref, mask)
    assert out["TSMI_NRMSE"] < 1e-6 and out["TSMI_SSIM"] == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(align_phase(ref * phase, ref), ref.to(torch.complex128), atol=1e-5, rtol=0)
    worse = tsmi_metrics(1.2 * ref * phase, ref, mask)
    assert worse["TSMI_NRMSE"] == pytest.approx(0.2, rel=1e-4) and worse["TSMI_SSIM"] < 1.0


def test_reference_tsmi_round_trips_through_matching(make_dictionary):
    d = make_dictionary(n_t1=12, n_t2=12, n_frames=100)
    g = torch.Generator().manual_seed(1)
    n = torch.as_tensor(d.t1_s).numel()
    index = torch.randint(0, n, (10, 10), generator=g)
    pd = 0.5 + torch.rand(10, 10, generator=g)
    mask = np.ones((10, 10), dtype=bool)
    mask[0] = False
    tsmi = reference_tsmi(d.t1_s[index].numpy(), d.t2_s[index].numpy(), pd.numpy(), mask, d)
    assert tsmi.shape == (d.compressed.shape[1], 10, 10) and (tsmi[:, ~mask] == 0).all()
    out = match_dictionary(torch.as_tensor(tsmi, dtype=torch.complex64), d, mask=torch.as_tensor(mask))
    assert torch.equal(out["index"][1:], index[1:])
    torch.testing.assert_close(out["pd"][1:], pd[1:], rtol=1e-4, atol=1e-6)
