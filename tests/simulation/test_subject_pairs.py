"""Training pairs from a dataset folder: item format, condition, both PD-phase paths, bad subjects."""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mrf_monai.baselines.svdmrf import SVDMRFReconstructor
from mrf_monai.io.b1 import read_b1_map, reference_b1_path
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.io.nifti import load_nifti, save_nifti
from mrf_monai.io.subjects import read_reference
from mrf_monai.phantoms import sample_subject_maps
from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.simulation import (
    DEFAULT_NOISE,
    SubjectDataError,
    SubjectPairDataset,
    dataset_sequence,
    estimate_pd_phase,
    simulate_subject,
)
from mrf_monai.simulation.subject_pairs import gaussian_smooth

from .conftest import MATRIX, N_FRAMES, N_SAMPLES

SPLIT = "test"


def _simulate(root, label, seed, n_slices=1, noise=0.0, **kwargs):
    args = dict(n_frames=N_FRAMES, split=SPLIT, matrix=MATRIX, samples_per_readout=N_SAMPLES, noise=noise)
    args.update(kwargs)
    return simulate_subject(root, label, seed=seed, n_slices=n_slices, **args)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """Two noise-free subjects: sub-01 with 2 slices, sub-02 with 1."""
    root = tmp_path_factory.mktemp("subjects")
    _simulate(root, "01", seed=7, n_slices=2)
    _simulate(root, "02", seed=8, n_slices=1)
    return root


@pytest.fixture(scope="module")
def make_subject_dataset(dictionary, table_cache):
    def make(path, **kwargs):
        args = dict(table_step=0.03, cache_dir=table_cache)  # the table of the `pair_dataset` fixture
        args.update(kwargs)
        return SubjectPairDataset(path, dictionary, **args)

    return make


def _template_slices(subject):
    return json.loads((subject / "sim.json").read_text())["template_slices"]


def test_items_have_the_simulated_pairs_format(dataset_dir, make_subject_dataset, pair_dataset):
    ds = make_subject_dataset(dataset_dir)
    assert len(ds) == 3 and not ds.skipped  # one item per slice of each subject
    assert ds.items == [
        (dataset_dir / "sub-01", 0),
        (dataset_dir / "sub-01", 1),
        (dataset_dir / "sub-02", 0),
    ]
    ours, theirs = ds[1], pair_dataset[0]
    assert set(ours) == set(theirs)
    for key in ("image", "cond"):
        assert ours[key].shape == theirs[key].shape == (10, MATRIX, MATRIX)
        assert ours[key].dtype == theirs[key].dtype == torch.float32
    assert ours["scale"].shape == () and ours["scale"].dtype == torch.float32
    assert ours["seed"] == 7 and ours["slice_index"] == 1  # sim.json seed, slice of raw.h5
    # normalisation: the 0.99 quantile of |cond[0]| is 1, channels [Re c_0..c_4, Im c_0..c_4]
    c0 = torch.complex(ours["cond"][0], ours["cond"][5])
    assert float(torch.quantile(c0.abs().flatten(), 0.99)) == pytest.approx(1.0, rel=1e-4)
    pair = ds.make_pair(1)
    assert torch.allclose(ours["image"][:5] * ours["scale"], pair["reference"].real, atol=1e-6)
    assert torch.allclose(ours["image"][5:] * ours["scale"], pair["reference"].imag, atol=1e-6)
    # reproducible, and the trainer's collate takes a batch of them
    assert torch.equal(ds[1]["image"], ours["image"]) and torch.equal(ds[1]["cond"], ours["cond"])
    from monai.data import list_data_collate

    batch = list_data_collate([ds[0], ds[2]])
    assert batch["image"].shape == (2, 10, MATRIX, MATRIX)
    with pytest.raises(IndexError):
        ds[3]


def test_condition_is_the_inference_gridding_of_raw_h5(dataset_dir, make_subject_dataset, dictionary):
    ds = make_subject_dataset(dataset_dir)
    raw = read_raw(dataset_dir / "sub-01" / "raw.h5")
    expected = SVDMRFReconstructor()(raw, 1, SimpleNamespace(basis=dictionary.basis))["tsmi"]
    pair = ds.make_pair(1)
    assert torch.equal(pair["condition"], expected)  # bit-identical to what inference grids
    assert torch.equal(pair["cond"], (torch.cat([expected.real, expected.imag]) / pair["scale"]).float())


def test_reference_with_the_phase_file_matches_the_simulator(dataset_dir, make_subject_dataset, pair_dataset):
    ds = make_subject_dataset(dataset_dir)
    subject = dataset_dir / "sub-01"
    assert (subject / "ref" / "sub-01_desc-phase_PDmap.nii.gz").is_file()
    for s, z in enumerate(_template_slices(subject)):
        pair = ds.make_pair(s)
        assert pair["phase_source"] == "file"
        exact = pair_dataset.reference(sample_subject_maps(7, z, MATRIX, SPLIT))
        rel = float((pair["reference"] - exact).norm() / exact.norm())
        assert rel < 1e-5, rel
        # and the (noise-free) condition agrees with the simulated pair's to the subspace error
        sim = pair_dataset.make_pair(7, z)
        assert float((pair["condition"] - sim["condition"]).norm() / sim["condition"].norm()) < 0.02
        assert float((pair["image"] - sim["image"]).norm() / sim["image"].norm()) < 0.03


def test_estimated_phase_is_close_inside_the_mask(tmp_path, make_subject_dataset, pair_dataset):
    subject = _simulate(tmp_path, "05", seed=21, n_slices=1, noise=DEFAULT_NOISE)
    true = read_reference(subject)["pd_phase_rad"][..., 0]
    mask = torch.from_numpy(read_reference(subject)["mask"][..., 0])
    (subject / "ref" / "sub-05_desc-phase_PDmap.nii.gz").unlink()  # the contract's ref/ only
    ds = make_subject_dataset(tmp_path)
    pair = ds.make_pair(0)
    assert pair["phase_source"] == "estimate"
    err = torch.angle(torch.polar(torch.ones(mask.shape), pair["phase_rad"].float() - torch.from_numpy(true)))
    err = err[mask].abs()
    print(
        f"estimated PD phase error in the mask: mean {float(err.mean()):.4f} rad, max {float(err.max()):.4f}"
    )
    assert float(err.mean()) < 0.05 and float(err.max()) < 0.3
    exact = pair_dataset.reference(sample_subject_maps(21, _template_slices(subject)[0], MATRIX, SPLIT))
    m = mask[None].expand_as(exact)
    rel = float((pair["reference"] - exact)[m].norm() / exact[m].norm())
    assert rel < 0.06, rel
    # phase="estimate" ignores a phase file; phase="file" refuses a subject without one
    _simulate(tmp_path / "with_file", "06", seed=21, n_slices=1, noise=DEFAULT_NOISE)
    forced = make_subject_dataset(tmp_path / "with_file", phase="estimate").make_pair(0)
    assert forced["phase_source"] == "estimate"
    assert torch.allclose(forced["reference"], pair["reference"], rtol=1e-5, atol=1e-6)
    with pytest.raises(SubjectDataError, match="desc-phase_PDmap.nii.gz not found"):
        make_subject_dataset(tmp_path, phase="file", on_error="raise")


def test_phase_estimate_recovers_a_smooth_phase():
    g = torch.Generator().manual_seed(0)
    signal = torch.randn(3, 40, 40, dtype=torch.complex64, generator=g)
    u = torch.linspace(-1, 1, 40)
    phase = 2.5 + 0.8 * u[:, None] - 0.5 * u[None, :] ** 2  # crosses +-pi: no wrap problem
    cond = signal * torch.polar(torch.ones(40, 40), phase)[None]
    noisy = cond + 0.3 * torch.randn(cond.shape, dtype=torch.complex64, generator=g)
    est = estimate_pd_phase(noisy, signal, sigma_px=1.5)
    err = torch.angle(torch.polar(torch.ones(40, 40), est - phase))[5:-5, 5:-5].abs()
    assert float(err.max()) < 0.1
    assert torch.allclose(
        estimate_pd_phase(cond, signal, 0.0), torch.angle(torch.polar(torch.ones(40, 40), phase))
    )
    # the filter keeps constants inside and is separable-normalised
    x = torch.ones(1, 30, 30)
    assert torch.allclose(gaussian_smooth(x, 2.0)[0, 10:20, 10:20], torch.ones(10, 10), atol=1e-6)


def test_patches_are_crops_of_the_whole_slice(dataset_dir, make_subject_dataset):
    ds = make_subject_dataset(dataset_dir, patch_size=16, seed=3)
    p = ds[2]
    full = make_subject_dataset(dataset_dir)[2]
    i0, j0 = p["patch_origin"]
    assert p["image"].shape == p["cond"].shape == (10, 16, 16)
    assert torch.equal(p["image"], full["image"][:, i0 : i0 + 16, j0 : j0 + 16])
    assert torch.equal(p["cond"], full["cond"][:, i0 : i0 + 16, j0 : j0 + 16])
    assert torch.equal(p["scale"], full["scale"])


def _copy(src, root, label):
    dst = root / f"sub-{label}"
    shutil.copytree(src, dst)
    for f in (dst / "ref").iterdir():
        f.rename(f.with_name(f.name.replace(f"{src.name}_", f"sub-{label}_")))
    return dst


def test_bad_subjects_are_skipped_with_their_reasons(tmp_path, dataset_dir, make_subject_dataset):
    root = tmp_path / "ds"
    good = _copy(dataset_dir / "sub-02", root, "good")
    no_ref = _copy(good, root, "noref")
    (no_ref / "ref" / "sub-noref_T2map.nii.gz").unlink()
    corrupt = _copy(good, root, "corrupt")
    data = (corrupt / "raw.h5").read_bytes()
    (corrupt / "raw.h5").write_bytes(data[: len(data) // 2])
    shape = _copy(good, root, "shape")
    for f in (shape / "ref").iterdir():
        arr, aff = load_nifti(f)
        save_nifti(f, arr[:-2], aff, arr.dtype)
    nan = _copy(good, root, "nan")
    t1_path = nan / "ref" / "sub-nan_T1map.nii.gz"
    arr, aff = load_nifti(t1_path)
    arr[MATRIX // 2, MATRIX // 2] = np.nan
    save_nifti(t1_path, arr, aff, np.float32)
    broken_nifti = _copy(good, root, "gz")
    pd_path = broken_nifti / "ref" / "sub-gz_PDmap.nii.gz"
    pd_path.write_bytes(gzip.compress(b"not a nifti"))
    _simulate(root, "seq", seed=9, n_frames=N_FRAMES // 2)  # another sequence than the dictionary's

    with pytest.warns(UserWarning, match="6 subject") as record:
        ds = make_subject_dataset(root)
    assert len(ds) == 1 and ds.items == [(good, 0)]
    reasons = dict((p.name, r) for p, r in ds.skipped)
    message = str(record[0].message)
    assert "sub-noref_T2map.nii.gz not found" in reasons["sub-noref"]
    assert str(corrupt / "raw.h5") in reasons["sub-corrupt"]
    assert "sub-shape_T1map.nii.gz" in reasons["sub-shape"] and "(46, 48, 1)" in reasons["sub-shape"]
    assert "sub-nan_T1map.nii.gz: 1 NaN/Inf" in reasons["sub-nan"]
    assert "sub-gz_PDmap.nii.gz: cannot be read as NIfTI" in reasons["sub-gz"]
    assert "sequence" in reasons["sub-seq"] and str(root / "sub-seq" / "raw.h5") in reasons["sub-seq"]
    for name in reasons:
        assert name in message
    assert ds[0]["image"].shape == (10, MATRIX, MATRIX)

    with pytest.raises(SubjectDataError, match="sub-nan_T1map.nii.gz"):
        make_subject_dataset(nan, on_error="raise")
    shutil.rmtree(good)
    with pytest.raises(SubjectDataError, match="no usable subject") as err:
        make_subject_dataset(root)
    assert "sub-corrupt" in str(err.value) and "sub-seq" in str(err.value)


def test_dataset_sequence_and_arguments(dataset_dir, dictionary, make_subject_dataset):
    assert dataset_sequence(dataset_dir) == dictionary.sequence
    with pytest.raises(FileNotFoundError, match="no subjects found"):
        dataset_sequence(dataset_dir / "sub-01" / "ref")
    with pytest.raises(ValueError, match="phase must be one of"):
        make_subject_dataset(dataset_dir, phase="guess")
    with pytest.raises(ValueError, match="rank must be between"):
        make_subject_dataset(dataset_dir, rank=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset warns about nothing
        ds = make_subject_dataset(dataset_dir, rank=3)
    assert ds[0]["image"].shape == (6, MATRIX, MATRIX)


# ---------------------------------------------------------------- subjects with a B1+ field (issue 15)
B1_FRAMES, B1_MATRIX, B1_SAMPLES = 20, 32, 64


@pytest.fixture(scope="module")
def b1_dictionary(sequence):
    t1, t2 = t1t2_grid(step=0.1)
    return build_dictionary(sequence.truncate(B1_FRAMES), t1, t2, rank=5)


@pytest.fixture(scope="module")
def b1_subjects(tmp_path_factory):
    """Two noise-free 32 x 32, 20-frame subjects of template slice 74: sub-b1 simulated with a
    B1+ field of amplitude 0.2, sub-plain without one."""
    root = tmp_path_factory.mktemp("b1_subjects")
    args = dict(
        slices=[74], n_frames=B1_FRAMES, split=SPLIT, matrix=B1_MATRIX, samples_per_readout=B1_SAMPLES
    )
    simulate_subject(root, "b1", seed=7, noise=0.0, b1=0.2, **args)
    simulate_subject(root, "plain", seed=8, noise=0.0, **args)
    return root


def _b1_dataset(path, dictionary, table_cache, **kwargs):
    return SubjectPairDataset(path, dictionary, table_step=0.03, cache_dir=table_cache, **kwargs)


def test_b1_subject_reference_is_epg_at_its_field(b1_subjects, b1_dictionary, table_cache):
    subject = b1_subjects / "sub-b1"
    raw = read_raw(subject / "raw.h5")
    field = read_b1_map(reference_b1_path(subject), raw)[..., 0]
    ds = _b1_dataset(subject, b1_dictionary, table_cache)
    assert ds.b1_table is not None and ds.table.b1_axis is None
    assert ds.b1_table.b1_values == [0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2]  # covers 1 +- 0.2
    pair = ds.make_pair(0)
    assert pair["phase_source"] == "file" and np.array_equal(pair["b1"].numpy(), field)
    ref = read_reference(subject)
    has = ref["pd"][..., 0] > 0
    sig = simulate_fisp(
        torch.from_numpy(ref["t1_s"][..., 0][has]).double(),
        torch.from_numpy(ref["t2_s"][..., 0][has]).double(),
        ds.sequence,
        b1=torch.from_numpy(field[has]).double(),  # the flip angles scaled by each voxel's B1
    )
    pd = torch.polar(
        torch.from_numpy(ref["pd"][..., 0][has]), torch.from_numpy(ref["pd_phase_rad"][..., 0][has])
    )[:, None]
    exact = (sig.to(torch.complex64) @ b1_dictionary.basis.conj()) * pd
    mask = torch.from_numpy(has)
    rel = (pair["reference"][:, mask].T - exact).norm(dim=1) / exact.norm(dim=1)
    assert rel.max() < 2e-3, rel.max()  # the table's interpolation error
    assert not pair["reference"][:, ~mask].any()
    nominal = (
        ds.reference_signal(
            torch.from_numpy(ref["t1_s"][..., 0]),
            torch.from_numpy(ref["t2_s"][..., 0]),
            torch.from_numpy(ref["pd"][..., 0]),
        )
        * torch.polar(torch.ones(B1_MATRIX, B1_MATRIX), pair["phase_rad"].float())[None]
    )  # B1 = 1, as before
    off = float((nominal - pair["reference"]).norm() / pair["reference"].norm())
    print(f"B1 reference vs exact EPG: max voxel error {float(rel.max()):.2e}; at B1 = 1: off by {off:.3f}")
    assert off > 0.03  # the field matters
    # the condition is still the inference gridding of raw.h5, bit for bit
    expected = SVDMRFReconstructor()(raw, 0, SimpleNamespace(basis=b1_dictionary.basis))["tsmi"]
    assert torch.equal(pair["condition"], expected)


def test_subjects_without_b1_map_are_unchanged(b1_subjects, b1_dictionary, table_cache):
    plain = b1_subjects / "sub-plain"
    assert not reference_b1_path(plain).exists()
    alone = _b1_dataset(plain, b1_dictionary, table_cache)
    assert alone.b1_table is None and alone.b1_ranges == {}  # no B1 table is built
    mixed = _b1_dataset(b1_subjects, b1_dictionary, table_cache)
    assert mixed.b1_table is not None and list(mixed.b1_ranges) == [b1_subjects / "sub-b1"]
    ours = mixed.make_pair(mixed.items.index((plain, 0)))
    before = alone.make_pair(0)
    assert ours["b1"] is None and before["b1"] is None
    for key in ("reference", "condition", "image", "cond", "scale"):
        assert torch.equal(ours[key], before[key]), key
    # and that is the B1 = 1 table's PD * exp(i phi) * basis^H EPG(T1, T2)
    ref = read_reference(plain)
    has = torch.from_numpy(ref["pd"][..., 0] > 0)
    t1, t2, pd = (torch.from_numpy(np.ascontiguousarray(ref[k][..., 0])) for k in ("t1_s", "t2_s", "pd"))
    c = torch.zeros(5, B1_MATRIX, B1_MATRIX, dtype=torch.complex64)
    c[:, has] = (alone.table(t1[has], t2[has]) * pd[has].to(torch.complex64)[:, None]).T
    phase = torch.from_numpy(np.ascontiguousarray(ref["pd_phase_rad"][..., 0]))
    assert torch.equal(before["reference"], c * torch.polar(torch.ones_like(phase), phase)[None])


def test_bad_b1_maps_are_refused_naming_the_file(tmp_path, b1_subjects, b1_dictionary, table_cache):
    shape = _copy(b1_subjects / "sub-b1", tmp_path, "shape")
    path = reference_b1_path(shape)
    arr, aff = load_nifti(path)
    save_nifti(path, arr[:-2], aff, np.float32)
    with pytest.raises(SubjectDataError, match="sub-shape_TB1map.nii.gz: the B1 map is 30 x 32 x 1"):
        _b1_dataset(shape, b1_dictionary, table_cache, on_error="raise")
    hole = _copy(b1_subjects / "sub-b1", tmp_path, "hole")
    path = reference_b1_path(hole)
    arr, aff = load_nifti(path)
    arr[B1_MATRIX // 2, B1_MATRIX // 2] = np.nan  # inside the brain: PD > 0
    save_nifti(path, arr, aff, np.float32)
    good = _copy(b1_subjects / "sub-plain", tmp_path, "good")
    with pytest.warns(UserWarning, match="2 subject"):
        ds = _b1_dataset(tmp_path, b1_dictionary, table_cache)
    assert ds.items == [(good, 0)] and ds.b1_table is None
    reasons = dict((p.name, r) for p, r in ds.skipped)
    assert "sub-shape_TB1map.nii.gz" in reasons["sub-shape"] and "resample" in reasons["sub-shape"]
    assert "sub-hole_TB1map.nii.gz: 1 voxel(s) with PD > 0 have no positive finite B1" in reasons["sub-hole"]
