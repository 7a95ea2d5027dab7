"""The pipeline is its config: swapping a transform in the JSON changes the run."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrf_monai.io.dictionary import save_dictionary
from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
from mrf_monai.physics.sequence import fisp_mrf_jiang2015
from mrf_monai.pipeline import methods, reconstruct_dataset
from mrf_monai.simulation.subjects import simulate_subject


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    simulate_subject(
        root / "data", "01", seed=2, n_slices=1, n_frames=24, matrix=32, samples_per_readout=96, split="test"
    )
    t1, t2 = t1t2_grid(step=0.2)
    dictionary = build_dictionary(fisp_mrf_jiang2015(24), t1, t2, rank=3)
    return root, save_dictionary(dictionary, root / "dict.h5")


def _run(root, dict_path, name, config):
    path = root / f"{name}.json"
    path.write_text(json.dumps(config))
    methods.register_method(name, path)
    status = reconstruct_dataset(root / "data", root / name, name, dictionary_path=dict_path, progress=False)
    assert status == 0
    folder = root / name / "sub-01"
    return {
        s: np.asarray(nib.load(folder / f"sub-01_{s}.nii.gz").dataobj) for s in ("T1map", "T2map", "PDmap")
    }


def test_swapping_a_transform_in_the_json_changes_the_run(subject, monkeypatch):
    root, dict_path = subject
    monkeypatch.setattr(methods, "REGISTRY", methods.MethodRegistry())
    config = json.loads(methods.method_config("svdmrf").config.read_text())
    base = _run(root, dict_path, "base", config)

    # 1. the matching transform with another background threshold: a smaller mask
    stricter = json.loads(json.dumps(config))
    matcher = stricter["postprocessing"]["transforms"][0]
    assert matcher["_target_"] == "mrf_monai.transforms.DictionaryMatchd"
    matcher["mask_threshold"] = 0.6
    strict = _run(root, dict_path, "strict", stricter)
    assert (strict["T1map"] > 0).sum() < (base["T1map"] > 0).sum()
    inside = strict["T1map"] > 0
    np.testing.assert_array_equal(strict["T1map"][inside], base["T1map"][inside])  # same matches inside

    # 2. another gridding: a cruder density compensation (2 Pipe-Menon iterations) changes the maps
    gridding = json.loads(json.dumps(config))
    transforms = gridding["preprocessing"]["transforms"]
    grid = next(t for t in transforms if t["_target_"].endswith("GridSubspaced"))
    assert grid["_target_"] == "mrf_monai.transforms.GridSubspaced"
    grid["dcf_iter"] = 2
    other = _run(root, dict_path, "nodcf", gridding)
    assert not np.array_equal(other["T1map"], base["T1map"])

    # 3. a transform inserted between gridding and matching: the TSMI scaled by 3 -> PD x 3, T1/T2 unchanged
    inserted = json.loads(json.dumps(config))
    inserted["postprocessing"]["transforms"].insert(
        0, {"_target_": "Lambdad", "keys": "tsmi", "func": "$lambda x: 3 * x"}
    )
    tripled = _run(root, dict_path, "tripled", inserted)
    np.testing.assert_array_equal(tripled["T1map"], base["T1map"])
    np.testing.assert_allclose(tripled["PDmap"], 3 * base["PDmap"], rtol=1e-5)
