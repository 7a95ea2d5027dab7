"""Temporal subspace compression/expansion transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mrf_monai.transforms.subspace import SubspaceCompress, SubspaceCompressd, SubspaceExpand, SubspaceExpandd

T, R = 12, 3


def _basis():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(T, R, dtype=torch.complex64, generator=g)
    q, _ = torch.linalg.qr(a)
    return q


def test_compress_matches_definition_and_round_trips_in_subspace():
    basis = _basis()
    coeffs = torch.randn(R, 4, 5, dtype=torch.complex64)
    series = SubspaceExpand(basis)(coeffs)
    assert series.shape == (T, 4, 5)
    torch.testing.assert_close(series, torch.einsum("tr,r...->t...", basis, coeffs))
    back = SubspaceCompress(basis)(series)
    torch.testing.assert_close(back, torch.einsum("tr,t...->r...", basis.conj(), series))
    torch.testing.assert_close(back, coeffs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(SubspaceCompress(basis).inverse(back), series, rtol=1e-5, atol=1e-5)


def test_time_axis_batch_and_numpy():
    basis = _basis()
    x = np.random.default_rng(0).standard_normal((2, T, 3)).astype(np.complex64)
    c = SubspaceCompress(basis.numpy(), dim=1)(x)
    assert isinstance(c, np.ndarray) and c.shape == (2, R, 3) and c.dtype == np.complex64
    np.testing.assert_allclose(c[1], basis.numpy().conj().T @ x[1], rtol=1e-5, atol=1e-5)


def test_metadata_kept_and_dict_forms():
    basis = _basis()
    x = MetaTensor(torch.randn(T, 2, 2, dtype=torch.complex64), meta={"k": "v"})
    d = SubspaceCompressd(keys="tsmi", basis=basis)({"tsmi": x})
    assert isinstance(d["tsmi"], MetaTensor) and d["tsmi"].meta["k"] == "v" and d["tsmi"].shape == (R, 2, 2)
    e = SubspaceExpandd(keys="tsmi", basis=basis)(d)
    assert e["tsmi"].shape == (T, 2, 2) and e["tsmi"].meta["k"] == "v"
    torch.testing.assert_close(
        SubspaceCompressd(keys="tsmi", basis=basis).inverse(d)["tsmi"].as_tensor(), e["tsmi"].as_tensor()
    )


def test_errors_name_both_sizes():
    basis = _basis()
    with pytest.raises(ValueError, match=r"T = 10 frames.*12 rows"):
        SubspaceCompress(basis)(torch.zeros(10, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"R = 4 components.*3 columns"):
        SubspaceExpand(basis)(torch.zeros(4, 2, dtype=torch.complex64))
