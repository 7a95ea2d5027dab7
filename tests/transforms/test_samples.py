"""SampleMeand / SampleStdMapsd: the spread of the maps matched from each sample, with a B1 map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from mrf_monai.matching.match import match_dictionary
from mrf_monai.physics.dictionary import build_dictionary
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import fisp_mrf_jiang2015
from mrf_monai.transforms.samples import SampleMeand, SampleStdMapsd, pooled_std

SEQ = fisp_mrf_jiang2015(1000).truncate(40)
B1 = torch.tensor([0.8, 1.0, 1.2])
T1 = torch.tensor([0.4, 0.8, 1.2, 2.0, 0.8, 1.5])
T2 = torch.tensor([0.04, 0.06, 0.1, 0.2, 0.3, 0.05])


def test_each_sample_is_matched_with_the_b1_map_of_the_mean():
    d = build_dictionary(SEQ, T1, T2, rank=5, b1_values=B1)
    # 2 samples of a 3 x 2 image: voxel v holds atom v (sample 0) or atom 5 - v (sample 1), at B1 1.2
    series = [
        simulate_fisp(T1[idx], T2[idx], SEQ, b1=torch.full((6,), 1.2))
        for idx in (torch.arange(6), torch.arange(6).flip(0))
    ]
    samples = torch.stack([(f @ d.basis.conj()).T.reshape(-1, 3, 2) for f in series])
    data = SampleMeand("pred", mean_key="tsmi")({"pred": samples})
    b1_map = torch.full((3, 2), 0.8)  # a (wrong) map restricts every voxel to the B1 = 0.8 atoms
    data.update(dictionary=d, clusters=None, mask=torch.ones(3, 2, dtype=torch.bool), b1_map=b1_map)
    with_map = SampleStdMapsd(b1_key="b1_map")(data)
    without = SampleStdMapsd()(data)
    oracle = [match_dictionary(s, d, mask=data["mask"], b1_map=b1_map) for s in samples]
    for key, name in (("t1_std_s", "t1_s"), ("t2_std_s", "t2_s")):
        expected = torch.stack([o[name] for o in oracle]).std(dim=0, correction=0)
        torch.testing.assert_close(with_map[key], expected)
        free = torch.stack([match_dictionary(s, d, mask=data["mask"])[name] for s in samples])
        torch.testing.assert_close(without[key], free.std(dim=0, correction=0))
    # free B1 finds the true atoms (B1 = 1.2): |T1_v - T1_(5-v)| / 2; the map's B1 gives other values
    torch.testing.assert_close(without["t1_std_s"].reshape(-1), (T1 - T1.flip(0)).abs() / 2)
    assert not torch.equal(with_map["t1_std_s"], without["t1_std_s"])


def test_pooled_std_is_the_local_rms_of_the_spread_inside_the_mask():
    g = torch.Generator().manual_seed(0)
    std = torch.rand(20, 24, generator=g, dtype=torch.float64)
    mask = torch.zeros(20, 24, dtype=torch.bool)
    mask[3:17, 4:20] = True
    out = pooled_std(std, mask, 1.0)
    # reference: scipy's Gaussian (same 3-sigma truncation, zero padding) of the masked variance,
    # normalised by the Gaussian of the mask
    m = mask.double().numpy()
    num = gaussian_filter(std.numpy() ** 2 * m, 1.0, mode="constant", truncate=3.0)
    den = gaussian_filter(m, 1.0, mode="constant", truncate=3.0)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    expected = torch.where(mask, torch.as_tensor(ratio).sqrt(), torch.zeros(()))
    torch.testing.assert_close(out, expected)
    # a constant spread stays constant up to the mask border; background stays 0; sigma 0 is a no-op
    flat = pooled_std(torch.full((20, 24), 0.3, dtype=torch.float64), mask, 2.0)
    torch.testing.assert_close(flat[mask], torch.full((int(mask.sum()),), 0.3, dtype=torch.float64))
    assert float(flat[~mask].abs().max()) == 0.0
    torch.testing.assert_close(pooled_std(std, mask, 0.0), std * mask)
    # it averages variances, not standard deviations: one outlier raises its neighbours' RMS
    spike = torch.zeros(20, 24, dtype=torch.float64)
    spike[10, 10] = 1.0
    pooled = pooled_std(spike, mask, 1.0)
    assert 0 < float(pooled[10, 11]) < float(pooled[10, 10]) < 1.0


def test_std_maps_transform_pools_when_asked():
    d = build_dictionary(SEQ, T1, T2, rank=5)
    series = [simulate_fisp(T1[idx], T2[idx], SEQ) for idx in (torch.arange(6), torch.arange(6).flip(0))]
    samples = torch.stack([(f @ d.basis.conj()).T.reshape(-1, 3, 2) for f in series])
    data = SampleMeand("pred", mean_key="tsmi")({"pred": samples})
    data.update(dictionary=d, clusters=None, mask=torch.ones(3, 2, dtype=torch.bool))
    plain = SampleStdMapsd()(data)
    pooled = SampleStdMapsd(smoothing_px=1.0)(data)
    for key in ("t1_std_s", "t2_std_s"):
        torch.testing.assert_close(pooled[key], pooled_std(plain[key], data["mask"], 1.0))
    with pytest.raises(ValueError, match="std_smoothing_px"):
        SampleStdMapsd(smoothing_px=-1)
