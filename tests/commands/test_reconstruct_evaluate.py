"""``mrf-monai reconstruct`` / ``evaluate`` and the shared pipeline on a tiny dataset."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from mrf_monai.acquisition.nufft import Nufft2D
from mrf_monai.acquisition.trajectory import fully_sampled_spiral
from mrf_monai.cli import main
from mrf_monai.io.dictionary import save_dictionary
from mrf_monai.io.ismrmrd import RawSubject, write_raw
from mrf_monai.io.subjects import write_reference
from mrf_monai.physics import fisp_mrf_jiang2015
from mrf_monai.physics.dictionary import build_dictionary
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.pipeline import parse_options, reconstruct_dataset, register_method

N, FRAMES = 24, 60
T1_GRID = np.geomspace(0.3, 3.0, 16)
T2_GRID = np.geomspace(0.03, 1.0, 16)
TISSUES = ((T1_GRID[5], T2_GRID[4]), (T1_GRID[11], T2_GRID[9]))  # (T1 s, T2 s) on the grid


def _dictionary(n_frames: int = FRAMES):
    t1, t2 = np.meshgrid(T1_GRID, T2_GRID, indexing="ij")
    keep = t2 < t1
    return build_dictionary(
        fisp_mrf_jiang2015(n_frames), torch.tensor(t1[keep]).float(), torch.tensor(t2[keep]).float(), rank=4
    )


def _write_subject(dataset, label: str, n_frames: int = FRAMES, n_slices: int = 2):
    """Noise-free, fully sampled subject (two blurred tissues in a disc) with ref/ maps."""
    seq = fisp_mrf_jiang2015(n_frames)
    i, j = np.meshgrid(np.arange(N) - N // 2, np.arange(N) - N // 2, indexing="ij")
    label_map = np.where(np.hypot(i, j) < 9, np.where(j > 1, 2, 1), 0)
    frac = np.stack([gaussian_filter((label_map == k).astype(float), 0.8) for k in (1, 2)])
    fp = simulate_fisp(
        torch.tensor([t[0] for t in TISSUES]), torch.tensor([t[1] for t in TISSUES]), seq
    ).numpy()
    traj = fully_sampled_spiral(n_frames, matrix=N, samples_per_readout=96)
    op = Nufft2D(traj[0], (N, N))
    kspace, t1s, t2s, pds, masks = [], [], [], [], []
    for s in range(n_slices):
        f = frac if s == 0 else frac[:, ::-1]  # the second slice is mirrored
        series = np.einsum("kt,kxy->txy", fp, f) * np.exp(0.4j)
        kspace.append(op.forward(torch.as_tensor(series, dtype=torch.complex64)).numpy()[None])
        pure = f.max(0) > 0.9
        dom = f.argmax(0)
        t1s.append(np.where(pure, np.array([t[0] for t in TISSUES])[dom], 0.0))
        t2s.append(np.where(pure, np.array([t[1] for t in TISSUES])[dom], 0.0))
        pds.append(np.where(pure, 1.0, 0.0))
        masks.append(pure)
    raw = RawSubject(
        kspace=np.stack(kspace),
        traj=np.broadcast_to(traj, (n_slices, *traj.shape)),
        interleaf=np.zeros((n_slices, n_frames), dtype=np.int64),
        sequence=seq,
        matrix=(N, N),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.array([[0.0, 0.0, 5.0 * s] for s in range(n_slices)]),
    )
    folder = dataset / f"sub-{label}"
    folder.mkdir(parents=True)
    write_raw(folder / "raw.h5", raw)
    stack = [np.stack(v, axis=-1).astype(np.float32) for v in (t1s, t2s, pds)]
    write_reference(folder, label, *stack, np.stack(masks, axis=-1).astype(np.uint8), raw.affine())
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """sub-good (2 slices), sub-bad (truncated raw.h5), sub-other (100-frame sequence)."""
    root = tmp_path_factory.mktemp("data")
    ds = root / "dataset"
    good = _write_subject(ds, "good")
    bad = ds / "sub-bad"
    shutil.copytree(good, bad)
    data = (good / "raw.h5").read_bytes()
    (bad / "raw.h5").write_bytes(data[: len(data) // 3])
    _write_subject(ds, "other", n_frames=40, n_slices=1)
    dict_path = root / "dict.h5"
    save_dictionary(_dictionary(), dict_path)
    return ds, dict_path


@pytest.fixture(scope="module")
def reconstructed(dataset, tmp_path_factory):
    ds, dict_path = dataset
    out = tmp_path_factory.mktemp("out") / "svdmrf"
    args = [
        "reconstruct",
        "--method",
        "svdmrf",
        str(ds),
        "--output",
        str(out),
        "--dictionary",
        str(dict_path),
    ]
    status = main([*args, "--no-progress"])
    return out, status


def test_reconstruct_writes_good_subject_and_reports_bad_ones(dataset, reconstructed, capfd):
    out, status = reconstructed
    assert status == 1  # two subjects failed
    assert sorted(p.name for p in out.iterdir()) == ["sub-good"]  # nothing else, no temp folders
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    sub = out / "sub-good"
    for suffix in ("T1map", "T2map", "PDmap", "desc-compressed_TSMI"):
        assert (sub / f"sub-good_{suffix}.nii.gz").is_file() and (sub / f"sub-good_{suffix}.json").is_file()
    t1 = nib.load(sub / "sub-good_T1map.nii.gz")
    t2 = np.asarray(nib.load(sub / "sub-good_T2map.nii.gz").dataobj)
    assert t1.shape == (N, N, 2) and t1.get_data_dtype() == np.float32
    ref = nib.load(ds_ref := dataset[0] / "sub-good" / "ref" / "sub-good_T1map.nii.gz")
    np.testing.assert_allclose(t1.affine, ref.affine, atol=1e-4)
    # single-tissue voxels are exact (noise-free, fully sampled)
    true_t1 = np.asarray(ref.dataobj)
    true_t2 = np.asarray(nib.load(str(ds_ref).replace("T1map", "T2map")).dataobj)
    pure = true_t1 > 0
    assert np.mean(np.isclose(np.asarray(t1.dataobj)[pure], true_t1[pure], rtol=1e-4)) > 0.9
    assert np.mean(np.isclose(t2[pure], true_t2[pure], rtol=1e-4)) > 0.9
    assert np.isfinite(t2).all() and (t2[N // 2, :2] == 0).all() and (t2[:2, N // 2] == 0).all()  # background
    timing = json.loads((sub / "timing.json").read_text())
    assert timing["method"] == "svdmrf" and timing["n_slices"] == 2 and len(timing["seconds_per_slice"]) == 2
    assert timing["mean_seconds_per_slice"] > 0
    assert json.loads((sub / "sub-good_T1map.json").read_text())["Units"] == "s"
    tsmi = nib.load(sub / "sub-good_desc-compressed_TSMI.nii.gz")
    assert tsmi.shape == (N, N, 2, 4) and np.iscomplexobj(np.asarray(tsmi.dataobj))


def test_reconstruct_failure_messages(dataset, tmp_path, capfd):
    ds, dict_path = dataset
    status = main(
        [
            "reconstruct",
            "--method",
            "svdmrf",
            str(ds / "sub-bad"),
            str(ds / "sub-other"),
            "--output",
            str(tmp_path / "o"),
            "--dictionary",
            str(dict_path),
            "--no-progress",
        ]
    )
    err = capfd.readouterr().err
    assert status == 1
    assert "sub-bad:" in err and "raw.h5" in err
    assert (
        "sub-other:" in err and "another sequence" in err and "raw data vs dictionary: 40 frames vs 60" in err
    )
    assert "2 of 2 subject(s) failed" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    args = ["reconstruct", "--method", "svdmrf", str(tmp_path / "nowhere"), "--output", str(tmp_path)]
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "nowhere does not exist" in err and "Traceback" not in err and err.count("\n") == 1


def test_evaluate_compares_methods(dataset, reconstructed, tmp_path, capfd):
    ds, dict_path = dataset
    out, _ = reconstructed
    out_ms = tmp_path / "svdmrf_ms"
    status = main(
        [
            "reconstruct",
            "--method",
            "svdmrf",
            str(ds / "sub-good"),
            "--output",
            str(out_ms),
            "--units",
            "ms",
            "--dictionary",
            str(dict_path),
            "--no-progress",
            "--brute-force",
        ]
    )
    assert status == 0
    assert json.loads((out_ms / "sub-good" / "sub-good_T1map.json").read_text())["Units"] == "ms"
    report = tmp_path / "report"
    status = main(
        [
            "evaluate",
            "--pred",
            str(out),
            str(out_ms),
            "--methods",
            "seconds",
            "millis",
            "--ref",
            str(ds),
            "--out",
            str(report),
            "--dictionary",
            str(dict_path),
        ]
    )
    assert status == 1  # sub-bad and sub-other have no predictions
    rows = list(csv.DictReader(open(report / "metrics.csv")))
    assert [(r["method"], r["subject"]) for r in rows] == [("seconds", "sub-good"), ("millis", "sub-good")]
    for r in rows:
        assert float(r["T1_MAPE"]) < 3.0 and float(r["T2_MAPE"]) < 3.0
        assert float(r["TSMI_NRMSE"]) < 0.2 and float(r["TSMI_SSIM"]) > 0.8
        assert float(r["seconds_per_slice"]) > 0
    for key in ("T1_MAPE", "T2_MAPE", "T2_RMSE_ms", "TSMI_NRMSE"):  # ms maps are read back in seconds
        assert float(rows[0][key]) == pytest.approx(float(rows[1][key]), abs=1e-4)
    summary = (report / "summary.md").read_text()
    assert "| seconds | 1 |" in summary and "| millis | 1 |" in summary and "T1 MAPE %" in summary
    assert "sub-bad" in summary and "sub-other" in summary  # listed as not evaluated


PLUGIN = """
import torch
from monai.inferers import Inferer


class NoiseReplicaInferer(Inferer):
    \"\"\"A probabilistic method: K replicas of the gridding image with complex Gaussian noise.\"\"\"

    def __init__(self, n_samples=3, noise=0.05, seed=0):
        self.n_samples, self.noise, self.seed = n_samples, noise, seed

    def __call__(self, inputs, network=None, slice_index=0):
        x = torch.as_tensor(inputs).as_subclass(torch.Tensor)
        g = torch.Generator().manual_seed(self.seed + int(slice_index))
        sigma = self.noise * x.abs().mean()
        shape = (self.n_samples, *x.shape)
        z = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
        return x[None] + sigma * z
"""


def test_a_registered_method_config_with_samples_gives_std_maps(dataset, tmp_path, monkeypatch):
    """A method of another package: its own inferer (importable module) and a config derived
    from svdmrf.json with the probabilistic postprocessing (mean, matching, std maps)."""
    from mrf_monai.io.dictionary import load_dictionary
    from mrf_monai.pipeline import methods

    ds, dict_path = dataset
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "noisy_replica.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    monkeypatch.setattr(methods, "REGISTRY", methods.MethodRegistry())
    config = json.loads(methods.method_config("svdmrf").config.read_text())
    grid = next(t for t in config["preprocessing"]["transforms"] if t["_target_"].endswith("GridSubspaced"))
    grid["output_key"] = "cond"
    config["inferer"] = {"_target_": "noisy_replica.NoiseReplicaInferer", "noise": 0.3}
    config["postprocessing"]["transforms"] = [
        {"_target_": "mrf_monai.transforms.SampleMeand", "keys": "pred", "mean_key": "tsmi"},
        *config["postprocessing"]["transforms"],
        {"_target_": "mrf_monai.transforms.SampleStdMapsd", "samples_key": "samples"},
    ]
    config["runner"].update({"inferer": "@inferer", "input_key": "cond", "pred_key": "pred"})
    config["runner"]["inferer_kwargs"] = {"slice_index": "slice"}
    (tmp_path / "noisyreplica.json").write_text(json.dumps(config))
    register_method("noisyreplica", tmp_path / "noisyreplica.json")
    with pytest.raises(ValueError, match="already registered"):
        register_method("noisyreplica", tmp_path / "noisyreplica.json")
    status = reconstruct_dataset(
        ds / "sub-good",
        tmp_path / "out",
        "noisyreplica",
        options={"method_name": "noisyreplica"},
        dictionary=load_dictionary(dict_path),
        progress=False,
    )
    assert status == 0
    sub = tmp_path / "out" / "sub-good"
    std = np.asarray(nib.load(sub / "sub-good_desc-std_T1map.nii.gz").dataobj)
    t1 = np.asarray(nib.load(sub / "sub-good_T1map.nii.gz").dataobj)
    assert std.shape == t1.shape and np.isfinite(std).all() and (std >= 0).all()
    assert (std[t1 == 0] == 0).all() and std.max() > 0
    assert (sub / "sub-good_desc-std_T2map.nii.gz").is_file()


def test_parse_options():
    assert parse_options(["n=3", "lr=1e-3", "flag=true", "name=ddim", "x=none"]) == {
        "n": 3,
        "lr": 1e-3,
        "flag": True,
        "name": "ddim",
        "x": None,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["oops"])
