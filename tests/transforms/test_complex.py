"""Complex <-> channel layout transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mrf_monai.transforms.complex import (
    ChannelsToComplex,
    ChannelsToComplexd,
    ComplexToChannels,
    ComplexToChannelsd,
    channels_to_complex,
    complex_to_channels,
)


def test_layout_and_round_trip():
    c = torch.randn(3, 4, 5, dtype=torch.complex64)
    x = complex_to_channels(c)
    assert x.shape == (6, 4, 5) and x.dtype == torch.float32
    torch.testing.assert_close(x[1], c[1].real)
    torch.testing.assert_close(x[4], c[1].imag)
    torch.testing.assert_close(channels_to_complex(x), c)
    batch = torch.randn(2, 3, 4, 4, dtype=torch.complex128)
    xb = complex_to_channels(batch, dim=1)
    assert xb.shape == (2, 6, 4, 4) and xb.dtype == torch.float64
    torch.testing.assert_close(channels_to_complex(xb, dim=1), batch)


def test_numpy_in_numpy_out():
    c = (np.arange(8) + 1j * np.arange(8)).reshape(2, 2, 2).astype(np.complex64)
    x = ComplexToChannels()(c)
    assert isinstance(x, np.ndarray) and x.shape == (4, 2, 2) and x.dtype == np.float32
    back = ChannelsToComplex()(x)
    assert back.dtype == np.complex64
    np.testing.assert_array_equal(back, c)


def test_metatensor_metadata_kept_and_dict_forms():
    c = MetaTensor(torch.randn(2, 3, 3, dtype=torch.complex64), meta={"subject": "01"})
    d = ComplexToChannelsd(keys="cond")({"cond": c, "other": 1})
    assert isinstance(d["cond"], MetaTensor) and d["cond"].meta["subject"] == "01" and d["other"] == 1
    back = ChannelsToComplexd(keys="cond")(d)
    assert back["cond"].meta["subject"] == "01"
    torch.testing.assert_close(back["cond"].as_tensor(), c.as_tensor())
    torch.testing.assert_close(ComplexToChannelsd(keys="cond").inverse(d)["cond"].as_tensor(), c.as_tensor())


def test_errors():
    with pytest.raises(ValueError, match="even number"):
        channels_to_complex(torch.zeros(3, 2, 2))
    with pytest.raises(TypeError, match="complex"):
        complex_to_channels(torch.zeros(2, 2, 2))
