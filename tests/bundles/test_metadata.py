# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""``bundles/mrf_iddpm/configs/metadata.json`` against the MONAI model-zoo metadata schema (offline).

Required keys and types as documented by the MONAI Bundle specification and the model-zoo
schema ``meta_schema_20240725.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import monai
import numpy as np
import pytest
import torch

from mrf_monai.diffusion.model import build_model

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "mrf_iddpm"

REQUIRED = {
    "schema": str,
    "version": str,
    "changelog": dict,
    "monai_version": str,
    "pytorch_version": str,
    "numpy_version": str,
    "required_packages_version": dict,
    "task": str,
    "description": str,
    "authors": str,
    "copyright": str,
    "network_data_format": dict,
}
TENSOR_REQUIRED = {
    "type": str,
    "format": str,
    "modality": str,
    "num_channels": int,
    "spatial_shape": list,
    "dtype": str,
    "value_range": list,
    "is_patch_data": bool,
    "channel_def": dict,
}
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


@pytest.fixture(scope="module")
def meta():
    return json.loads((BUNDLE / "configs" / "metadata.json").read_text())


def test_required_keys_and_types(meta):
    for key, typ in REQUIRED.items():
        assert key in meta, key
        assert isinstance(meta[key], typ), (key, type(meta[key]))
    assert meta["schema"].startswith("https://") and meta["schema"].endswith(".json")
    assert SEMVER.match(meta["version"])
    assert meta["version"] in meta["changelog"]
    assert all(isinstance(v, str) for v in meta["required_packages_version"].values())
    assert meta["task"] and meta["description"]
    # the stated versions are the ones this bundle is developed with (later ones expected to work)
    assert meta["monai_version"] == monai.__version__.split("+")[0]
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["numpy_version"] == np.__version__


def test_network_data_format(meta):
    ndf = meta["network_data_format"]
    assert set(ndf) >= {"inputs", "outputs"}
    for group in ("inputs", "outputs"):
        assert ndf[group], group
        for name, spec in ndf[group].items():
            for key, typ in TENSOR_REQUIRED.items():
                assert key in spec, (group, name, key)
                assert isinstance(spec[key], typ), (group, name, key)
            assert len(spec["channel_def"]) == spec["num_channels"], (group, name)
            assert len(spec["value_range"]) in (0, 2)


def test_data_format_matches_the_default_network(meta):
    net = build_model()
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == net.in_channels
    assert pred["num_channels"] == net.out_channels
    # "4*n": divisible by 2 ** (levels - 1) of the default 3-level network
    factor = 2 ** (len(net.block_out_channels) - 1)
    assert image["spatial_shape"] == [f"{factor}*n", f"{factor}*n"]
    x = torch.zeros(1, image["num_channels"], 4 * factor, 4 * factor)
    with torch.no_grad():
        out = net(x, timesteps=torch.zeros(1, dtype=torch.long))
    assert out.shape[1] == pred["num_channels"] and out.dtype == getattr(torch, pred["dtype"])
