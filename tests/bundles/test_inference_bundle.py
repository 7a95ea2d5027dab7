# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""MRF-IDDPM inference: the reconstructor's checks and the bundle's inference config end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mrf_monai.diffusion.model import CHECKPOINT_FORMAT, build_model, model_hyper_parameters

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
    """A checkpoint in the trainer's format (untrained tiny network) with its training subspace."""
    torch.manual_seed(seed)
    model = build_model(**TINY_NET)
    data = {
        "sequence": dictionary.sequence.to_dict(),
        "rank": RANK,
        "basis": torch.as_tensor(dictionary.basis if basis is None else basis),
    }
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "hyper_parameters": {"model": model_hyper_parameters(**TINY_NET), "scheduler": {}, "data": data},
        "state_dict": model.state_dict(),
    }
    torch.save(ckpt, path)
    return path


def write_subject(dataset: Path, label: str, dictionary) -> Path:
    """A one-slice, one-coil spiral subject: two tissues in a disc, k-space from the subspace operator."""
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
    from mrf_monai.io.ismrmrd import RawSubject, write_raw

    seq = dictionary.sequence
    traj, interleaf = mrf_spiral_trajectory(seq.n_frames, matrix=MATRIX, n_samples=200)
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
    from mrf_monai.diffusion.reconstructor import subjects_for_rank

    for label in ("a", "b", "c"):
        write_subject(tmp_path, label, tiny_dictionary)
    assert [p.name for p in subjects_for_rank(tmp_path)] == ["sub-a", "sub-b", "sub-c"]
    assert [p.name for p in subjects_for_rank(tmp_path, rank=1, world_size=2)] == ["sub-b"]
    assert [p.name for p in subjects_for_rank(tmp_path, rank=0, world_size=2)] == ["sub-a", "sub-c"]


@pytest.mark.parametrize("device", DEVICES)
def test_reconstructor_subspace_checks(tmp_path, tiny_dictionary, device):
    from mrf_monai.diffusion.reconstructor import IDDPMReconstructor
    from mrf_monai.io.ismrmrd import read_raw

    raw = read_raw(write_subject(tmp_path, "x", tiny_dictionary) / "raw.h5")
    basis = torch.as_tensor(tiny_dictionary.basis)
    # trained with the same subspace, other column phases: accepted, coefficients rotated
    phases = torch.exp(1j * torch.tensor([0.7, -2.0])).to(basis.dtype)
    rec = IDDPMReconstructor(
        write_checkpoint(tmp_path / "m1.pt", tiny_dictionary, basis * phases),
        n_samples=2,
        n_steps=2,
        roi_size=16,
        device=device,
        progress=False,
    )
    dictionary = tiny_dictionary.to(device)  # as the pipeline does for matching on the device
    grid_basis, q = rec.check_compatible(raw, dictionary)
    torch.testing.assert_close(grid_basis, basis * phases)
    torch.testing.assert_close(q, torch.diag(phases), atol=1e-5, rtol=1e-5)
    out = rec(raw, 0, dictionary)
    assert out["tsmi"].shape == (RANK, MATRIX, MATRIX) and out["samples"].shape == (2, RANK, MATRIX, MATRIX)
    assert out["tsmi"].is_complex() and bool(torch.isfinite(torch.view_as_real(out["samples"])).all())
    torch.testing.assert_close(out["tsmi"], out["samples"].mean(0))
    assert not torch.allclose(out["samples"][0], out["samples"][1])
    # reproducible with the seed
    torch.testing.assert_close(rec(raw, 0, dictionary)["samples"], out["samples"])
    # another subspace (a rotated-out basis): a clear error
    other = torch.linalg.qr(
        torch.randn(basis.shape, dtype=basis.dtype, generator=torch.Generator().manual_seed(0))
    )[0]
    rec2 = IDDPMReconstructor(
        write_checkpoint(tmp_path / "m2.pt", tiny_dictionary, other),
        n_samples=1,
        n_steps=1,
        roi_size=16,
        device=device,
        progress=False,
    )
    with pytest.raises(ValueError, match="subspace"):
        rec2(raw, 0, tiny_dictionary)
    with pytest.raises(ValueError, match="rank"):
        rec.check_compatible(raw, tiny_dictionary.truncate_rank(1))


@pytest.mark.parametrize("device", DEVICES)
def test_bundle_inference_end_to_end(tmp_path, tiny_dictionary, device):
    """``monai.bundle run inference`` with the shipped config on a tiny subject and a tiny model."""
    import nibabel as nib
    from monai.bundle import run

    from mrf_monai.io.dictionary import save_dictionary
    from mrf_monai.io.ismrmrd import read_raw

    dataset, out = tmp_path / "data", tmp_path / "out"
    subject = write_subject(dataset, "01", tiny_dictionary)
    save_dictionary(tiny_dictionary, tmp_path / "dict.h5")
    run(
        run_id="inference",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=str(BUNDLE / "configs" / "inference.json"),
        logging_file=False,
        dataset_dir=str(dataset),
        output_dir=str(out),
        model_path=str(write_checkpoint(tmp_path / "model.pt", tiny_dictionary)),
        dictionary_path=str(tmp_path / "dict.h5"),
        n_samples=2,
        n_steps=2,
        roi_size=[16, 16],
        sw_batch_size=8,
        device=device,
        progress=False,
    )
    folder = out / "sub-01"
    affine = read_raw(subject / "raw.h5").affine()
    for suffix in ("T1map", "T2map", "PDmap", "desc-std_T1map", "desc-std_T2map"):
        img = nib.load(str(folder / f"sub-01_{suffix}.nii.gz"))
        data = np.asarray(img.dataobj)
        assert data.shape == (MATRIX, MATRIX, 1) and data.dtype == np.float32, suffix
        assert np.isfinite(data).all(), suffix
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
        assert json.loads((folder / f"sub-01_{suffix}.json").read_text())
    t1 = np.asarray(nib.load(str(folder / "sub-01_T1map.nii.gz")).dataobj)
    t1_std = np.asarray(nib.load(str(folder / "sub-01_desc-std_T1map.nii.gz")).dataobj)
    assert (t1 > 0).any() and (t1_std >= 0).all()
