# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""MRF-IDDPM inference: the reconstructor's checks and the bundle's inference config end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mrf_monai.diffusion.model import build_model, save_model

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "mrf_iddpm"
RANK = 2
MATRIX = 32
TINY_NET = {
    "rank": RANK,
    "channels": [8, 8],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 8,
}

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and the CPUs are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_dictionary():
    from mrf_monai.physics.dictionary import build_dictionary
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    seq = fisp_mrf_jiang2015(n_frames=1000).truncate(24)
    t1, t2 = torch.meshgrid(torch.linspace(0.3, 3.0, 6), torch.linspace(0.03, 0.3, 4), indexing="ij")
    keep = t2 < t1
    return build_dictionary(seq, t1_s=t1[keep], t2_s=t2[keep], rank=RANK)


def write_checkpoint(path: Path, dictionary, basis=None, seed: int = 0) -> Path:
    """Weights in the trainer's format (an untrained tiny network) with its training subspace."""
    model = build_model(**TINY_NET, init_seed=seed)
    data = {
        "sequence": dictionary.sequence.to_dict(),
        "sequence_key": dictionary.sequence.key(),
        "rank": RANK,
        "basis": torch.as_tensor(dictionary.basis if basis is None else basis).to(torch.complex64),
        "patch_size": [16, 16],
    }
    return save_model(path, model, {"scheduler": {}, "data": data})


def write_subject(dataset: Path, label: str, dictionary) -> Path:
    """A one-slice, one-coil spiral subject: two tissues in a disc, k-space from the subspace operator."""
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
    from mrf_monai.io.ismrmrd import RawSubject, write_raw

    seq = dictionary.sequence
    traj, interleaf = mrf_spiral_trajectory(seq.n_frames, matrix=MATRIX, samples_per_readout=200)
    i, j = np.meshgrid(np.arange(MATRIX) - MATRIX // 2, np.arange(MATRIX) - MATRIX // 2, indexing="ij")
    r = np.hypot(i, j)
    atom = np.where(r < 6, 3, 10)  # two dictionary atoms
    atoms = torch.as_tensor(dictionary.compressed)[torch.as_tensor(atom)]  # (Nx, Ny, R)
    norms = torch.as_tensor(dictionary.norms)[torch.as_tensor(atom)]
    c = (atoms * norms[..., None] * torch.as_tensor(r < 12)[..., None]).permute(2, 0, 1).to(torch.complex64)
    op = SubspaceNufftOperator(traj, dictionary.basis, (MATRIX, MATRIX))
    k = op.forward(c).detach().cpu().numpy().reshape(1, 1, seq.n_frames, -1)
    raw = RawSubject(
        kspace=k,
        traj=traj[None],
        interleaf=np.asarray(interleaf)[None],
        sequence=seq,
        matrix=(MATRIX, MATRIX),
        fov_mm=(float(MATRIX), float(MATRIX), 5.0),
        position_mm=np.zeros((1, 3)),
    )
    write_raw(dataset / f"sub-{label}" / "raw.h5", raw)
    return dataset / f"sub-{label}"


def test_subjects_for_rank(tmp_path, tiny_dictionary):
    from mrf_monai.pipeline import subjects_for_rank

    for label in ("a", "b", "c"):
        write_subject(tmp_path, label, tiny_dictionary)
    assert [p.name for p in subjects_for_rank(tmp_path)] == ["sub-a", "sub-b", "sub-c"]
    assert [p.name for p in subjects_for_rank(tmp_path, process_rank=1, world_size=2)] == ["sub-b"]
    assert [p.name for p in subjects_for_rank(tmp_path, process_rank=0, world_size=2)] == ["sub-a", "sub-c"]


def _run(tmp_path, dataset, out, model, dictionary_path, device="cpu", **overrides):
    from monai.bundle import run

    run(
        run_id="run",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=str(BUNDLE / "configs" / "inference.json"),
        logging_file=False,
        dataset_dir=str(dataset),
        output_dir=str(out),
        model_path=str(model),
        dictionary_path=str(dictionary_path),
        device=device,
        progress=False,
        **{"n_samples": 2, "n_steps": 2, **overrides},
    )


def _maps(folder: Path, label: str) -> dict[str, np.ndarray]:
    import nibabel as nib

    return {
        s: np.asarray(nib.load(str(folder / f"sub-{label}_{s}.nii.gz")).dataobj)
        for s in ("T1map", "T2map", "PDmap", "desc-std_T1map", "desc-std_T2map")
        if (folder / f"sub-{label}_{s}.nii.gz").is_file()
    }


@pytest.mark.parametrize("device", DEVICES)
def test_bundle_inference_end_to_end(tmp_path, tiny_dictionary, device):
    """``monai.bundle run`` with the shipped config on a tiny subject and a tiny model."""
    import nibabel as nib

    from mrf_monai.io.dictionary import save_dictionary
    from mrf_monai.io.ismrmrd import read_raw

    dataset, out = tmp_path / "data", tmp_path / "out"
    subject = write_subject(dataset, "01", tiny_dictionary)
    save_dictionary(tiny_dictionary, tmp_path / "dict.h5")
    model = write_checkpoint(tmp_path / "model.pt", tiny_dictionary)
    _run(tmp_path, dataset, out, model, tmp_path / "dict.h5", device)
    folder = out / "sub-01"
    affine = read_raw(subject / "raw.h5").affine()
    maps = _maps(folder, "01")
    assert set(maps) == {"T1map", "T2map", "PDmap", "desc-std_T1map", "desc-std_T2map"}
    for suffix, data in maps.items():
        assert data.shape == (MATRIX, MATRIX, 1) and data.dtype == np.float32, suffix
        assert np.isfinite(data).all(), suffix
        np.testing.assert_allclose(
            nib.load(str(folder / f"sub-01_{suffix}.nii.gz")).affine, affine, atol=1e-4
        )
        assert json.loads((folder / f"sub-01_{suffix}.json").read_text())
    assert (maps["T1map"] > 0).any() and (maps["desc-std_T1map"] >= 0).all()
    sidecar = json.loads((folder / "sub-01_T1map.json").read_text())
    assert sidecar["Sampler"]["NSamples"] == 2 and sidecar["Sampler"]["Mode"] == "whole"
    timing = json.loads((folder / "timing.json").read_text())
    assert timing["n_samples"] == 2 and timing["dc_steps"] == 5 and timing["n_slices"] == 1
    # reproducible with the seed; another seed gives other samples
    _run(tmp_path, dataset, tmp_path / "again", model, tmp_path / "dict.h5", device)
    np.testing.assert_array_equal(_maps(tmp_path / "again" / "sub-01", "01")["T1map"], maps["T1map"])
    _run(tmp_path, dataset, tmp_path / "seed", model, tmp_path / "dict.h5", device, seed=1)
    assert not np.array_equal(
        _maps(tmp_path / "seed" / "sub-01", "01")["desc-std_T1map"], maps["desc-std_T1map"]
    )


@pytest.mark.parametrize("mode", ["patch", "patch-dc", "whole-nodc"])
def test_sampling_modes_of_the_bundle(tmp_path, tiny_dictionary, mode):
    """The paper's sliding-window sampler (with and without k-space consistency) and the whole slice."""
    from mrf_monai.io.dictionary import save_dictionary

    dataset = tmp_path / "data"
    write_subject(dataset, "01", tiny_dictionary)
    save_dictionary(tiny_dictionary, tmp_path / "dict.h5")
    model = write_checkpoint(tmp_path / "model.pt", tiny_dictionary)
    settings = {
        "patch": {"mode": "patch", "dc_steps": 0, "roi_size": [16, 16], "overlap": 0.5},
        "patch-dc": {"mode": "patch", "dc_steps": 2, "roi_size": [16, 16], "overlap": 0.5},
        "whole-nodc": {"mode": "whole", "dc_steps": 0},
    }[mode]
    _run(tmp_path, dataset, tmp_path / "out", model, tmp_path / "dict.h5", **settings)
    maps = _maps(tmp_path / "out" / "sub-01", "01")
    assert maps["T1map"].shape == (MATRIX, MATRIX, 1) and np.isfinite(maps["T1map"]).all()
    assert (maps["desc-std_T1map"] >= 0).all()
    timing = json.loads((tmp_path / "out" / "sub-01" / "timing.json").read_text())
    assert timing["mode"] == settings["mode"] and timing["dc_steps"] == settings["dc_steps"]


def test_subspace_checks_of_the_bundle(tmp_path, tiny_dictionary, capfd):
    """Trained with the same subspace in other column phases: accepted (coefficients rotated);
    another subspace or rank: one clear error per subject."""
    from mrf_monai.io.dictionary import save_dictionary
    from mrf_monai.pipeline import ReconstructionFailed
    from mrf_monai.pipeline.bundle_errors import innermost

    dataset = tmp_path / "data"
    write_subject(dataset, "01", tiny_dictionary)
    save_dictionary(tiny_dictionary, tmp_path / "dict.h5")
    basis = torch.as_tensor(tiny_dictionary.basis)
    phases = torch.exp(1j * torch.tensor([0.7, -2.0])).to(basis.dtype)
    rotated = write_checkpoint(tmp_path / "rotated.pt", tiny_dictionary, basis * phases)
    plain = write_checkpoint(tmp_path / "plain.pt", tiny_dictionary)
    _run(tmp_path, dataset, tmp_path / "rot", rotated, tmp_path / "dict.h5", dc_steps=0, n_samples=1)
    _run(tmp_path, dataset, tmp_path / "plain", plain, tmp_path / "dict.h5", dc_steps=0, n_samples=1)
    a = _maps(tmp_path / "rot" / "sub-01", "01")
    b = _maps(tmp_path / "plain" / "sub-01", "01")
    assert set(a) == {"T1map", "T2map", "PDmap"}  # one sample: no std maps
    other = torch.linalg.qr(
        torch.randn(basis.shape, dtype=basis.dtype, generator=torch.Generator().manual_seed(0))
    )[0]
    wrong = write_checkpoint(tmp_path / "other.pt", tiny_dictionary, other)
    capfd.readouterr()
    with pytest.raises(RuntimeError) as info:  # monai.bundle wraps the runner's error
        _run(tmp_path, dataset, tmp_path / "other", wrong, tmp_path / "dict.h5", dc_steps=0, n_samples=1)
    assert isinstance(innermost(info.value), ReconstructionFailed)
    assert "1 of 1 subject(s) failed" in str(innermost(info.value))
    err = capfd.readouterr().err
    assert "sub-01: the dictionary's subspace differs from the training subspace" in err
    assert not (tmp_path / "other" / "sub-01").exists()
    assert a["T1map"].shape == b["T1map"].shape


@pytest.mark.parametrize("dc_steps", [0, 2])
def test_warm_start_of_the_bundle(tmp_path, tiny_dictionary, dc_steps):
    """``warm_start``: the samples start from the slice's LRTV reconstruction at ``start_timestep``
    (the slice's problem is built for it even without data consistency); starting just above
    t = 0 the samples barely differ, where cold starts from noise spread widely."""
    from mrf_monai.io.dictionary import save_dictionary

    dataset = tmp_path / "data"
    write_subject(dataset, "01", tiny_dictionary)
    save_dictionary(tiny_dictionary, tmp_path / "dict.h5")
    model = write_checkpoint(tmp_path / "model.pt", tiny_dictionary)
    common = {"n_samples": 3, "dc_steps": dc_steps}
    _run(tmp_path, dataset, tmp_path / "cold", model, tmp_path / "dict.h5", **common)
    _run(
        tmp_path,
        dataset,
        tmp_path / "warm",
        model,
        tmp_path / "dict.h5",
        warm_start=True,
        start_timestep=2,
        **common,
    )
    folder = tmp_path / "warm" / "sub-01"
    sidecar = json.loads((folder / "sub-01_T1map.json").read_text())
    assert sidecar["Sampler"]["WarmStart"] == "LRTV" and sidecar["Sampler"]["StartTimestep"] == 2
    timing = json.loads((folder / "timing.json").read_text())
    assert timing["warm_start"] is True and timing["start_timestep"] == 2
    warm, cold = _maps(folder, "01"), _maps(tmp_path / "cold" / "sub-01", "01")
    assert np.isfinite(warm["T1map"]).all() and (warm["T1map"] > 0).any()
    mask = cold["T1map"] > 0
    assert np.mean(warm["desc-std_T2map"][mask]) < 0.35 * np.mean(cold["desc-std_T2map"][mask])
