"""Normalisation by the condition's scale and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mrf_monai.transforms.complex import complex_to_channels
from mrf_monai.transforms.intensity import (
    NormalizeByCondition,
    NormalizeByConditiond,
    condition_scale,
    denormalize,
)


def _cond():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 16, 16, dtype=torch.complex64, generator=g) * 7.0


def test_scale_is_quantile_of_component_zero_for_complex_and_channels():
    cond = _cond()
    expected = np.quantile(np.abs(cond[0].numpy()).astype(np.float64), 0.99)
    assert float(condition_scale(cond)) == pytest.approx(expected, rel=1e-5)
    assert float(condition_scale(complex_to_channels(cond))) == pytest.approx(expected, rel=1e-5)
    assert float(condition_scale(cond, 0.5)) == pytest.approx(
        np.quantile(np.abs(cond[0].numpy()), 0.5), rel=1e-5
    )


def test_dict_normalises_keys_stores_scale_and_inverts():
    cond = complex_to_channels(_cond())
    image = cond * 0.5 + 1.0
    t = NormalizeByConditiond(keys=("image", "cond"), cond_key="cond")
    out = t({"image": image, "cond": cond})
    scale = out["scale"]
    assert scale.ndim == 0 and scale.dtype == torch.float32
    torch.testing.assert_close(out["cond"] * scale, cond)
    torch.testing.assert_close(out["image"], image / scale)
    hyp = torch.hypot(out["cond"][0], out["cond"][3]).reshape(-1).double()
    assert float(torch.quantile(hyp, 0.99)) == pytest.approx(1.0, rel=1e-5)
    back = t.inverse(out)
    torch.testing.assert_close(back["image"], image)
    torch.testing.assert_close(back["cond"], cond)
    # network output under another name, batched with one scale per item
    pred = torch.ones(2, 6, 4, 4)
    res = t.inverse({"pred": pred, "scale": torch.tensor([2.0, 3.0])}, keys=["pred"])
    assert torch.all(res["pred"][0] == 2.0) and torch.all(res["pred"][1] == 3.0)


def test_array_form_metatensor_inverse_and_numpy():
    cond = MetaTensor(_cond(), meta={"id": 4})
    n = NormalizeByCondition()
    out = n(cond)
    assert out.meta["id"] == 4 and "scale" in out.meta
    torch.testing.assert_close(n.inverse(out).as_tensor(), cond.as_tensor())
    x = np.ones((2, 3, 3), np.float32)
    y = n(x, scale=torch.tensor(4.0))
    assert isinstance(y, np.ndarray) and np.allclose(y, 0.25)
    np.testing.assert_allclose(denormalize(y, torch.tensor(4.0)), x)
    with pytest.raises(ValueError, match="pass scale"):
        n.inverse(torch.ones(2))


def test_zero_condition_is_a_clear_error():
    with pytest.raises(ValueError, match="empty, zero or not finite"):
        NormalizeByConditiond(keys="cond")({"cond": torch.zeros(4, 8, 8)})
    with pytest.raises(ValueError, match="2R channels"):
        condition_scale(torch.ones(3, 4, 4))
