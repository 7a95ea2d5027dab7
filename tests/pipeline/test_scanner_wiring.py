"""The scanner-data front end and B1+ in the real pipeline: configs, sidecars, the TB1map, --b1.

A fully sampled 2-coil subject (20 frames, 32 x 32) under a +-15 % B1+ field, with correlated
channel noise and a noise scan, simulated once; every run goes through ``reconstruct_dataset`` or
``mrf-monai reconstruct`` with the method configs as shipped (brute-force matching, a test-local
dictionary cache).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrf_monai.acquisition.protocol import Protocol
from mrf_monai.acquisition.trajectory import default_n_interleaves_full, fully_sampled_spiral
from mrf_monai.cli import main
from mrf_monai.io.b1 import b1_map_path, reference_b1_path, write_b1_map
from mrf_monai.io.subjects import read_reference
from mrf_monai.physics.sequence import fisp_mrf_jiang2015
from mrf_monai.pipeline import method_options, reconstruct_dataset
from mrf_monai.simulation.subjects import simulate_subject

FRAMES, MATRIX, SAMPLES, COILS, NOISE_SAMPLES = 20, 32, 128, 2, 256
NEW_KEYS = {
    "prewhiten": "auto",
    "noise_covariance": None,
    "n_virtual_coils": "auto",
    "b1_path": None,
    "b1_policy": "ignore",
    "use_b1_map": True,
    "b1_step": 0.05,
    "b1_range": [0.6, 1.4],
}


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("scanner")
    n_interleaves = default_n_interleaves_full(MATRIX, SAMPLES)
    protocol = Protocol(
        fisp_mrf_jiang2015(1000).truncate(FRAMES),
        fully_sampled_spiral(FRAMES, MATRIX, SAMPLES, n_interleaves),
        n_interleaves,
        (MATRIX, MATRIX),
        (230.0, 230.0, 5.0),
        COILS,
    )
    folder = simulate_subject(
        root / "data",
        "01",
        seed=3,
        split="test",
        protocol=protocol,
        noise=4e-4,
        noise_covariance="realistic",
        noise_scan_samples=NOISE_SAMPLES,
        b1=0.15,
        write_b1_map=True,
    )
    return {"root": root, "folder": folder, "cache": root / "cache", "ref": read_reference(folder)}


def _run(subject: dict, name: str, inputs=None, **options) -> Path:
    out = subject["root"] / name
    status = reconstruct_dataset(
        subject["folder"] if inputs is None else inputs,
        out,
        "svdmrf",
        options=options,
        cache_dir=subject["cache"],
        coarse_to_fine=False,
        progress=False,
    )
    assert status == 0
    return out / "sub-01"


def _map(folder: Path, suffix: str) -> np.ndarray:
    return np.asarray(nib.load(folder / f"sub-01_{suffix}.nii.gz").dataobj)[..., 0]


def _sidecar(folder: Path, suffix: str = "T1map") -> dict:
    return json.loads((folder / f"sub-01_{suffix}.json").read_text())


def _mape(folder: Path, ref: dict, quantity: str) -> float:
    est, true = _map(folder, f"{quantity}map"), ref[f"{quantity.lower()}_s"][..., 0]
    inside = ref["mask"][..., 0].astype(bool)
    assert (est[inside] > 0).all()  # every reference voxel was matched
    return float(np.mean(np.abs(est[inside] - true[inside]) / true[inside]))


@pytest.fixture(scope="module")
def with_and_without_map(subject) -> tuple[Path, Path]:
    return _run(subject, "map"), _run(subject, "ignored", use_b1_map=False)


def test_every_method_config_has_the_same_scanner_keys():
    for method in ("svdmrf", "lrtv", "unet", "iddpm"):
        options = method_options(method)
        assert {k: options.get(k, "missing") for k in NEW_KEYS} == NEW_KEYS, method


def test_the_subjects_b1_map_lowers_the_t1_t2_error(subject, with_and_without_map):
    mapped, ignored = with_and_without_map
    ref = subject["ref"]
    t1_map, t2_map = _mape(mapped, ref, "T1"), _mape(mapped, ref, "T2")
    t1_ignored, t2_ignored = _mape(ignored, ref, "T1"), _mape(ignored, ref, "T2")
    # measured: T1 5.3 % vs 15.9 %, T2 5.4 % vs 8.1 % (a B1+ field of 0.85-1.15 ignored)
    assert t1_map < 0.5 * t1_ignored and t2_map < 0.85 * t2_ignored, (t1_map, t1_ignored, t2_map, t2_ignored)
    for suffix in ("T1map", "T2map", "PDmap"):
        b1 = _sidecar(mapped, suffix)["B1"]
        assert b1["Handling"] == "map" and Path(b1["Map"]) == b1_map_path(subject["folder"])
        assert b1["DictionaryB1Range"] == [0.6, 1.4] and b1["DictionaryB1Values"] == 17
    assert _sidecar(ignored)["B1"] == {
        "Handling": "ignore",
        "Map": None,
        "Note": "B1 map not used (use_map=false)",
    }
    assert not (mapped / "sub-01_TB1map.nii.gz").exists()  # a given map is not an estimate


def test_the_noise_scan_prewhitens_and_the_sidecar_says_so(subject, with_and_without_map, capfd):
    mapped, _ = with_and_without_map
    side = _sidecar(mapped)
    assert list(side).index("NoisePrewhitening") < list(side).index("B1")
    white = side["NoisePrewhitening"]
    assert white["Applied"] is True and white["Source"] == "noise scan"
    assert white["Channels"] == COILS and white["NoiseSamplesPerChannel"] == NOISE_SAMPLES
    assert side["CoilCompression"]["Applied"] is False  # 2 channels: nothing to compress
    assert side["CoilMaps"]["Coils"] == COILS
    # the contract's fields are still there
    assert side["Units"] == "s" and side["Method"] == "svdmrf" and side["Sequence"]["sequence_type"] == "FISP"
    # switched off from the command line: the record says so, and the maps change
    out = subject["root"] / "unwhitened"
    common = [str(subject["folder"]), "--cache-dir", str(subject["cache"])]
    status, err = _cli(capfd, *common, "--output", str(out), "--option", "prewhiten=false")
    assert status == 0, err
    side = _sidecar(out / "sub-01")
    assert side["NoisePrewhitening"] == {
        "Applied": False,
        "Reason": "prewhitening switched off (prewhiten=false)",
    }
    # a covariance file instead of the noise scan; one of the wrong shape names the option
    np.save(subject["root"] / "psi.npy", np.eye(COILS, dtype=np.complex64))
    given = subject["root"] / "given_cov"
    option = f"noise_covariance={subject['root'] / 'psi.npy'}"
    status, err = _cli(capfd, *common, "--output", str(given), "--option", option)
    assert status == 0, err
    assert _sidecar(given / "sub-01")["NoisePrewhitening"]["Source"] == "given noise covariance"
    status, err = _cli(capfd, *common, "--output", str(given), "--option", "noise_covariance=[1, 2]")
    assert status == 2 and "noise_covariance" in err[0] and "(C, C) matrix" in err[0], err
    assert not np.array_equal(_map(out / "sub-01", "PDmap"), _map(mapped, "PDmap"))


def test_free_b1_writes_the_matched_tb1map_and_a_rerun_drops_it(subject):
    free = _run(subject, "free", use_b1_map=False, b1_policy="free")
    path = free / "sub-01_TB1map.nii.gz"
    img, t1 = nib.load(path), nib.load(free / "sub-01_T1map.nii.gz")
    assert img.shape == t1.shape and img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.affine, t1.affine)
    b1, true = (
        np.asarray(img.dataobj)[..., 0],
        np.asarray(nib.load(reference_b1_path(subject["folder"])).dataobj),
    )
    matched = _map(free, "T1map") > 0
    assert (b1[~matched] == 0).all()  # background is 0, as in every map
    grid = np.linspace(0.6, 1.4, 17)
    assert np.abs(b1[matched][:, None] - grid).min(axis=1).max() < 1e-6  # the B1 of the matched atoms
    inside = subject["ref"]["mask"][..., 0].astype(bool)
    assert np.mean(np.abs(b1[inside] - true[..., 0][inside])) < 0.05  # the field is recovered
    side = _sidecar(free, "TB1map")
    assert side["Quantity"] == "B1" and side["Units"] == "ratio" and side["B1"]["Handling"] == "free"
    assert _sidecar(free)["B1"]["DictionaryB1Values"] == 17
    # the written map is a B1 map of the data contract: a later run reads it from the folder
    again = _run(subject, "from_free", b1_path=str(free.parent))
    assert _sidecar(again)["B1"]["Map"] == str(path)
    # a re-run that estimates no B1 removes the TB1map it owns, and keeps the user's files
    (free / "notes.txt").write_text("mine")
    rerun = _run(subject, "free", use_b1_map=False)
    assert rerun == free and not path.exists() and not (free / "sub-01_TB1map.json").exists()
    assert (free / "notes.txt").read_text() == "mine"


def _cli(capfd, *args: str) -> tuple[int, list[str]]:
    status = main(["reconstruct", "--method", "svdmrf", "--brute-force", "--no-progress", *args])
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return status, [line for line in captured.err.splitlines() if "Warning" not in line]


def test_a_b1_map_on_another_grid_names_the_file(subject, tmp_path, capfd):
    good = subject["folder"]
    data = tmp_path / "data"
    shutil.copytree(good, data / "sub-01")
    bad = data / "sub-02"
    shutil.copytree(good, bad, ignore=shutil.ignore_patterns("b1"))
    affine = nib.load(b1_map_path(good)).affine
    small = write_b1_map(b1_map_path(bad), np.ones((16, 16, 1), np.float32), affine)
    common = ["--cache-dir", str(subject["cache"])]

    # the subject's own b1/ map is wrong: that subject fails in one line, the others are written
    status, err = _cli(capfd, str(data), "--output", str(tmp_path / "out"), *common)
    assert status == 1
    assert any(line.startswith(f"sub-02: {small}: the B1 map is 16 x 16 x 1 voxels") for line in err), err
    assert (tmp_path / "out" / "sub-01" / "sub-01_T1map.nii.gz").is_file()
    assert not (tmp_path / "out" / "sub-02").exists()

    # the same file given with --b1 is a wrong setting: exit 2, one line naming it, nothing written
    status, err = _cli(
        capfd, str(data / "sub-01"), "--output", str(tmp_path / "given"), "--b1", str(small), *common
    )
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"mrf-monai reconstruct: error: b1_path: {small}: the B1 map is 16 x 16 x 1")
    assert not (tmp_path / "given" / "sub-01").exists()

    # one file for two subjects, or a file that does not exist: refused before the first subject
    status, err = _cli(
        capfd, str(data), "--output", str(tmp_path / "two"), "--b1", str(b1_map_path(good)), *common
    )
    assert status == 2 and "one B1 map file but 2 subjects" in err[0] and "folder" in err[0]
    missing = tmp_path / "nope.nii.gz"
    status, err = _cli(capfd, str(data), "--output", str(tmp_path / "two"), "--b1", str(missing), *common)
    assert status == 2 and f"B1 map {missing} not found" in err[0]
    assert not (tmp_path / "two").exists()


def test_mrf_iddpm_bundle_uses_the_map_for_the_mean_and_every_sample(subject, tmp_path):
    """The bundle's inference config (a tiny untrained network on the nominal subspace): with the
    subject's map the B1 dictionary keeps that subspace (the network's), and free B1 writes a TB1map."""
    import torch
    from monai.bundle import run

    from mrf_monai.diffusion.model import build_model, save_model
    from mrf_monai.io.dictionary import cached_dictionary

    bundle = Path(__file__).resolve().parents[2] / "bundles" / "mrf_iddpm"
    nominal = cached_dictionary(fisp_mrf_jiang2015(1000).truncate(FRAMES), cache_dir=subject["cache"])
    net = {"channels": [8, 8], "attention_levels": [False, False], "num_res_blocks": 1}
    net.update({"rank": nominal.rank, "num_head_channels": 8, "norm_num_groups": 8})
    data = {"sequence_key": nominal.sequence.key(), "rank": nominal.rank, "patch_size": [16, 16]}
    data["basis"] = torch.as_tensor(nominal.basis).to(torch.complex64)
    model = save_model(
        tmp_path / "model.pt", build_model(**net, init_seed=0), {"scheduler": {}, "data": data}
    )

    def bundle_run(out: Path, **overrides) -> Path:
        run(
            run_id="run",
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=str(bundle / "configs" / "inference.json"),
            logging_file=False,
            dataset_dir=str(subject["folder"]),
            output_dir=str(out),
            model_path=str(model),
            cache_dir=str(subject["cache"]),
            coarse_to_fine=False,
            device="cpu",
            progress=False,
            **{"n_samples": 2, "n_steps": 2, "dc_steps": 0, **overrides},
        )
        return out / "sub-01"

    mapped = bundle_run(tmp_path / "map")
    side = _sidecar(mapped)
    assert side["B1"]["Handling"] == "map" and side["NoisePrewhitening"]["Applied"] is True
    assert _sidecar(mapped, "desc-std_T1map")["B1"] == side["B1"]
    std = _map(mapped, "desc-std_T1map")
    assert np.isfinite(std).all() and (std >= 0).all() and (std[_map(mapped, "T1map") == 0] == 0).all()
    assert not (mapped / "sub-01_TB1map.nii.gz").exists()
    free = bundle_run(tmp_path / "free", use_b1_map=False, b1_policy="free")
    b1 = _map(free, "TB1map")
    assert _sidecar(free, "TB1map")["B1"]["Handling"] == "free"
    assert ((b1 > 0) == (_map(free, "T1map") > 0)).all() and b1.max() <= 1.4 + 1e-6
