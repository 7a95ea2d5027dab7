"""Validation sets: in-distribution held-out subjects and out-of-distribution sets on reserved seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.io.subjects import read_reference
from mrf_monai.phantoms import sample_subject_maps, split_slices
from mrf_monai.phantoms.recipe import VALIDATION_SEED_BLOCKS, check_training_seed, validation_seed
from mrf_monai.simulation.subjects import DEFAULT_NOISE
from mrf_monai.simulation.validation_sets import (
    read_validation_set,
    validation_set_subjects,
    write_validation_set,
)

from .conftest import MATRIX, N_SAMPLES

N_FRAMES = 12
TINY = dict(n_frames=N_FRAMES, matrix=MATRIX, samples_per_readout=N_SAMPLES)


def test_subject_lists():
    ind = validation_set_subjects("in-distribution", 3, seed=9000)
    assert [s.seed for s in ind] == [9000, 9001, 9002] and {s.phantom for s in ind} == {"template"}
    assert [s.label for s in ind] == ["id000", "id001", "id002"]
    ood = validation_set_subjects("ood", 5, seed=2)
    assert [s.phantom for s in ood] == ["deformed", "synthetic", "deformed", "synthetic", "deformed"]
    assert [s.seed for s in ood] == [
        validation_seed("deformed", 2),
        validation_seed("synthetic", 2),
        validation_seed("deformed", 3),
        validation_seed("synthetic", 3),
        validation_seed("deformed", 4),
    ]
    for s in ood:
        lo, hi = VALIDATION_SEED_BLOCKS[s.phantom]
        assert lo <= s.seed < hi and s.label.isalnum()
        with pytest.raises(ValueError, match="reserved"):
            check_training_seed(s.seed, "train")  # no training draw can be one of them
    noisy = validation_set_subjects("ood-4x-noise", 5, seed=2)
    assert [s.seed for s in noisy] == [s.seed for s in ood]
    with pytest.raises(ValueError, match="validation set kind must be one of"):
        validation_set_subjects("unseen-anatomy", 2)
    with pytest.raises(ValueError, match="reserved"):
        validation_set_subjects("in-distribution", 2, seed=2**52)
    with pytest.raises(ValueError, match="alphanumeric"):
        validation_set_subjects("ood", 2, label_prefix="ood-")


@pytest.fixture(scope="module")
def ood_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("ood")
    return write_validation_set(out, "ood", 2, seed=0, **TINY)


def test_ood_set_is_written_and_reads_back(ood_set):
    manifest = read_validation_set(ood_set)
    assert manifest["set"] == "ood" and manifest["split"] == "val"
    assert manifest["noise"] == pytest.approx(DEFAULT_NOISE)
    assert manifest["n_frames"] == N_FRAMES and manifest["matrix"] == [MATRIX, MATRIX]
    assert manifest["samples_per_readout"] == N_SAMPLES and "n_samples" not in manifest
    assert [e["phantom"] for e in manifest["subjects"]] == ["deformed", "synthetic"]
    assert "deformation" in manifest["subjects"][0]["ingredients"]
    assert manifest["subjects"][1]["ingredients"][0].startswith("synthetic-")
    for entry, folder in zip(manifest["subjects"], manifest["subject_dirs"]):
        card = json.loads((folder / "sim.json").read_text())
        assert card["seed"] == entry["seed"] and card["split"] == "val"
        assert card["phantom_world"] == entry["world"] and card["phantom_world"]["ingredients"]
        raw = read_raw(folder / "raw.h5")
        assert raw.kspace.shape == (1, 1, N_FRAMES, N_SAMPLES) and np.isfinite(raw.kspace).all()
        ref = read_reference(folder)
        z = card["template_slices"][0]
        assert z in split_slices("val")
        maps = sample_subject_maps(entry["seed"], z, MATRIX, "val")
        assert np.allclose(ref["t1_s"][..., 0], maps["t1_s"])
        assert np.allclose(ref["t2_s"][..., 0], maps["t2_s"])
        assert np.array_equal(ref["mask"][..., 0], maps["mask"]) and ref["mask"].any()
        has = ref["pd"][..., 0] > 0
        assert (ref["t2_s"][..., 0][has] <= ref["t1_s"][..., 0][has]).all()
    synthetic = read_reference(manifest["subject_dirs"][1])
    # a synthetic label phantom: far outside the brain's T1/T2 values somewhere
    t1 = synthetic["t1_s"][synthetic["mask"]]
    assert t1.min() < 0.6 or t1.max() > 2.0


def test_four_times_noise_variant_has_the_same_subjects(ood_set, tmp_path):
    noisy = write_validation_set(tmp_path, "ood-4x-noise", 2, seed=0, **TINY)
    a = read_validation_set(ood_set)
    b = read_validation_set(noisy)
    assert [e["seed"] for e in a["subjects"]] == [e["seed"] for e in b["subjects"]]
    assert b["noise"] == pytest.approx(4 * DEFAULT_NOISE)
    for da, db in zip(a["subject_dirs"], b["subject_dirs"]):
        ca = json.loads((da / "sim.json").read_text())["noise"]["sigma_per_slice"]
        cb = json.loads((db / "sim.json").read_text())["noise"]["sigma_per_slice"]
        assert np.allclose(cb, 4 * np.asarray(ca), rtol=1e-6)  # same phantom, same signal, 4 x sigma
        assert np.allclose(read_reference(da)["t1_s"], read_reference(db)["t1_s"])


def test_in_distribution_set_and_resume(tmp_path):
    out = write_validation_set(tmp_path, "in-distribution", 1, seed=9000, split="test", **TINY)
    m = read_validation_set(out)
    entry = m["subjects"][0]
    assert entry["phantom"] == "template" and entry["recipe"] is None and entry["world"] is None
    card = json.loads((m["subject_dirs"][0] / "sim.json").read_text())
    assert card["seed"] == 9000 and card["template_slices"][0] in split_slices("test")
    raw = m["subject_dirs"][0] / "raw.h5"
    stamp = raw.stat().st_mtime_ns
    write_validation_set(tmp_path, "in-distribution", 1, seed=9000, split="test", skip_existing=True, **TINY)
    assert raw.stat().st_mtime_ns == stamp  # kept, not rewritten


def test_bad_requests_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="split 'val' or 'test'"):
        write_validation_set(tmp_path, "ood", 1, split="train", **TINY)
    with pytest.raises(FileNotFoundError, match="no validation-set manifest"):
        read_validation_set(tmp_path)
    (tmp_path / "validation_set.json").write_text(json.dumps({"subjects": [{"subject": "sub-x1"}]}))
    with pytest.raises(FileNotFoundError, match="sub-x1"):
        read_validation_set(tmp_path)
