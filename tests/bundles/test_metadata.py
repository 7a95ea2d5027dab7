# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Both bundles' ``configs/metadata.json``: valid against MONAI's own metadata schema (vendored in
``tests/bundles/schema``, validated with jsonschema offline) and true to the shipped weights
(``models/model.json``), the inference config and ``docs/results.md``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import monai
import numpy as np
import pytest
import torch

from mrf_monai.io.weights import load_hyper_parameters

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "schema" / "meta_schema_20240725.json").read_text())
BUNDLES = ("mrf_iddpm", "unet_baseline")


def _meta(bundle: str) -> dict:
    return json.loads((ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())


def _hp(bundle: str) -> dict:
    return load_hyper_parameters(ROOT / "bundles" / bundle / "models" / "model.pt")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_is_valid_against_monais_schema(bundle):
    meta = _meta(bundle)
    errors = sorted(e.message for e in jsonschema.Draft201909Validator(SCHEMA).iter_errors(meta))
    assert errors == []
    assert meta["schema"].endswith("meta_schema_20240725.json")  # the schema vendored here
    assert re.match(r"^\d+\.\d+\.\d+$", meta["version"]) and meta["version"] in meta["changelog"]
    # the stated versions are the ones this bundle is developed with (later ones expected to work)
    assert meta["monai_version"] == monai.__version__.split("+")[0]
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["numpy_version"] == np.__version__


def test_the_schema_rejects_what_it_should():
    """The vendored schema is the real one: a missing required key and a mistyped field fail."""
    meta = _meta("mrf_iddpm")
    del meta["optional_packages_version"]
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "20"
    messages = [e.message for e in jsonschema.Draft201909Validator(SCHEMA).iter_errors(meta)]
    assert any("optional_packages_version" in m for m in messages)
    assert len(messages) >= 2


def test_mrf_iddpm_metadata_is_true_to_the_shipped_model():
    meta, hp = _meta("mrf_iddpm"), _hp("mrf_iddpm")
    inference = json.loads((ROOT / "bundles" / "mrf_iddpm" / "configs" / "inference.json").read_text())
    facts = meta["mrf_monai"]
    model = hp["model"]
    assert facts["prediction_type"] == model["prediction_type"] == "v"
    assert facts["learn_sigma"] is model["learn_sigma"] is True
    assert facts["channels"] == model["channels"] and facts["attention_levels"] == model["attention_levels"]
    assert facts["rank"] == model["rank"] and facts["patch_size"] == hp["data"]["patch_size"]
    assert facts["sequence_key"] == hp["data"]["sequence_key"]
    assert facts["num_train_timesteps"] == hp["scheduler"]["num_train_timesteps"]
    for key, config_key in (
        ("mode", "mode"),
        ("n_samples", "n_samples"),
        ("n_steps", "n_steps"),
        ("dc_steps", "dc_steps"),
    ):
        assert facts["sampling"][key] == inference[config_key], key
    assert facts["sampling"]["method"] == inference["sampling_method"]
    assert "v-prediction" in meta["description"] and "32 x 32" in meta["description"]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    r = model["rank"]
    assert image["num_channels"] == 4 * r and pred["num_channels"] == 4 * r  # [x_t, cond] -> [v, variance]
    assert pred["channel_def"]["0"].startswith("v ") and len(pred["channel_def"]) == pred["num_channels"]
    factor = 2 ** (len(model["channels"]) - 1)
    assert image["spatial_shape"] == [f"{factor}*n", f"{factor}*n"] and image["is_patch_data"] is True
    _check_eval_metrics(meta, "**MRF-IDDPM**")


def test_unet_metadata_is_true_to_the_shipped_model():
    meta, hp = _meta("unet_baseline"), _hp("unet_baseline")
    facts = meta["mrf_monai"]
    assert facts["channels"] == hp["model"]["channels"] and facts["rank"] == hp["rank"]
    assert facts["patch_size"] == hp["data"]["patch_size"] and facts["loss"] == hp["training"]["loss"]
    assert facts["sequence_key"] == hp["data"]["sequence_key"]
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 2 * hp["rank"] and image["is_patch_data"] is False
    _check_eval_metrics(meta, "U-Net")


def _check_eval_metrics(meta: dict, row_start: str) -> None:
    """The metrics in the metadata are those of the results table of docs/results.md."""
    table = (ROOT / "docs" / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith(f"| {row_start}"))
    cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
    numbers = [float(c.split("±")[0]) for c in cells[1:7]]
    metrics = meta["eval_metrics"]
    expected = ("t1_mape_percent", "t2_mape_percent", "t1_rmse_ms", "t2_rmse_ms", "tsmi_nrmse", "tsmi_ssim")
    assert [metrics[k] for k in expected] == pytest.approx(numbers)
