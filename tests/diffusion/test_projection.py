# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""The Bloch (dictionary) projection of the sampler's x0 estimate, alone, in the inferer and in the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mrf_monai.diffusion.inferer import DiffusionSamplingInferer, derive_seed
from mrf_monai.diffusion.model import build_model, save_model
from mrf_monai.matching.match import build_atom_clusters
from mrf_monai.matching.projection import DictionaryProjection, DictionaryProjectionFactory
from mrf_monai.transforms.complex import channels_to_complex, complex_to_channels

RANK = 3
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "mrf_iddpm"
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
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def dictionary():
    from mrf_monai.physics.dictionary import build_dictionary
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    seq = fisp_mrf_jiang2015(n_frames=1000).truncate(48)
    t1, t2 = torch.meshgrid(torch.linspace(0.3, 3.0, 10), torch.linspace(0.03, 0.3, 6), indexing="ij")
    keep = t2 < t1
    return build_dictionary(seq, t1_s=t1[keep], t2_s=t2[keep], rank=RANK)


def _unit_atoms(dictionary) -> torch.Tensor:
    c = torch.as_tensor(dictionary.compressed).to(torch.complex128)
    return c / torch.linalg.vector_norm(c, dim=1, keepdim=True)


def _on_manifold(dictionary, shape=(2, 6, 5), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """``PD * (||f_n|| v_n)`` per voxel (compressed M0 = 1 fingerprints scaled by a complex PD):
    ``(B, R, Nx, Ny)`` complex64 and the atom of each voxel."""
    g = torch.Generator().manual_seed(seed)
    comp, norms = torch.as_tensor(dictionary.compressed), torch.as_tensor(dictionary.norms)
    index = torch.randint(0, comp.shape[0], shape, generator=g)
    pd = torch.complex(torch.rand(shape, generator=g) + 0.5, torch.randn(shape, generator=g))
    x = pd[..., None] * comp[index] * norms[index][..., None]
    return x.movedim(-1, 1).to(torch.complex64), index


def _oracle(x: torch.Tensor, dictionary) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force projection of every voxel of ``x (B, R, ...)`` in float64: ``<d, x> d`` with
    ``d`` the unit atom of largest ``|<d, x>|``; also that atom."""
    atoms = _unit_atoms(dictionary)
    xv = x.movedim(1, -1).to(torch.complex128)
    corr = xv @ atoms.conj().T  # <d_n, x> for every atom
    best = corr.abs().argmax(dim=-1)
    coefficient = torch.gather(corr, -1, best[..., None])
    return (coefficient * atoms[best]).movedim(-1, 1), best


def _network_space(x_dict: torch.Tensor, w: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
    """Dictionary coefficients -> the network's channels (``c_net = Q^-1 c_dict``, times ``w``)."""
    x = x_dict
    if q is not None:
        x = torch.einsum("rs,bs...->br...", torch.linalg.inv(q.to(torch.complex128)), x.to(torch.complex128))
    return complex_to_channels(x.to(torch.complex64), dim=1) * w[:, None, None]


def _dictionary_space(x0: torch.Tensor, w: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
    x = channels_to_complex(x0.double() / w.double()[:, None, None], dim=1)
    return x if q is None else torch.einsum("rs,bs...->br...", q.to(torch.complex128), x)


def _rotation(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.complex(torch.randn(RANK, RANK, generator=g), torch.randn(RANK, RANK, generator=g))
    return torch.linalg.qr(a)[0].to(torch.complex64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CHANNELS = torch.tensor([0.8, 1.7, 3.1, 0.8, 1.7, 3.1])


@pytest.mark.parametrize("search", ["brute", "clusters"])
@pytest.mark.parametrize("rotated", [False, True])
def test_a_tsmi_on_the_manifold_is_unchanged(dictionary, search, rotated):
    x, _ = _on_manifold(dictionary)
    q = _rotation() if rotated else None
    x0 = _network_space(x, CHANNELS, q)
    clusters = build_atom_clusters(dictionary) if search == "clusters" else None
    project = DictionaryProjection(dictionary, clusters, q, CHANNELS, mask_threshold=0.0)
    out = project(x0, 0)
    assert out.dtype == x0.dtype and out.shape == x0.shape
    torch.testing.assert_close(out, x0, rtol=0, atol=2e-5 * float(x0.abs().max()))


@pytest.mark.parametrize("search", ["brute", "clusters"])
@pytest.mark.parametrize("rotated", [False, True])
def test_a_perturbed_tsmi_moves_to_its_best_atom(dictionary, search, rotated):
    x, index = _on_manifold(dictionary, seed=3)
    g = torch.Generator().manual_seed(4)
    noise = torch.complex(torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g))
    noisy = x + 0.05 * x.abs().mean() * noise.to(x.dtype)
    q = _rotation(2) if rotated else None
    x0 = _network_space(noisy, CHANNELS, q)
    clusters = build_atom_clusters(dictionary) if search == "clusters" else None
    out = DictionaryProjection(dictionary, clusters, q, CHANNELS, mask_threshold=0.0)(x0, 0)
    expected, best = _oracle(_dictionary_space(x0, CHANNELS, q), dictionary)
    assert not torch.equal(best, index)  # neighbouring atoms are close: the noise changes some
    assert not torch.allclose(out, x0, atol=1e-3)  # the perturbation is removed...
    got = _dictionary_space(out, CHANNELS, q)
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)  # ...onto the matched atom
    # every projected voxel lies on the ray of its atom, and is not longer than before
    atoms = _unit_atoms(dictionary)[best]
    corr = (atoms.conj() * got.movedim(1, -1)).sum(-1).abs()
    np.testing.assert_allclose(corr, torch.linalg.vector_norm(got, dim=1), rtol=1e-5)
    assert bool(
        (torch.linalg.vector_norm(got, dim=1) <= torch.linalg.vector_norm(noisy, dim=1) * 1.0001).all()
    )
    # a small perturbation goes back to the atom it came from
    slight = _network_space(x + 1e-4 * x.abs().mean() * noise.to(x.dtype), CHANNELS, q)
    back = DictionaryProjection(dictionary, clusters, q, CHANNELS, mask_threshold=0.0)(slight, 0)
    assert torch.equal(_oracle(_dictionary_space(back, CHANNELS, q), dictionary)[1], index)
    torch.testing.assert_close(
        back, _network_space(x, CHANNELS, q), rtol=0, atol=2e-4 * float(x0.abs().max())
    )


def test_weight_zero_is_the_identity_and_weights_blend(dictionary):
    x, _ = _on_manifold(dictionary, seed=5)
    x0 = _network_space(x, CHANNELS, None) + 0.3 * torch.randn(2, 2 * RANK, 6, 5, generator=_gen(5))
    assert DictionaryProjection(dictionary, channel_scale=CHANNELS, weight=0.0)(x0, 0) is x0
    full = DictionaryProjection(dictionary, channel_scale=CHANNELS, mask_threshold=0.0)(x0, 0)
    half = DictionaryProjection(dictionary, channel_scale=CHANNELS, weight=0.25, mask_threshold=0.0)(x0, 0)
    torch.testing.assert_close(half, 0.75 * x0 + 0.25 * full, rtol=0, atol=1e-5)


def test_only_the_last_steps_and_the_object_are_projected(dictionary):
    x, _ = _on_manifold(dictionary, seed=6)
    x[:, :, :2] *= 0.01  # two dim rows: background below the threshold
    x0 = _network_space(x, CHANNELS, None) + 0.05 * torch.randn(2, 2 * RANK, 6, 5, generator=_gen(6))
    project = DictionaryProjection(dictionary, channel_scale=CHANNELS, n_last_steps=2, n_steps=5)
    assert [project.active(i) for i in range(5)] == [False, False, False, True, True]
    assert torch.equal(project(x0, 2), x0)
    out = project(x0, 3)
    norm = torch.linalg.vector_norm(channels_to_complex(x0 / CHANNELS[:, None, None], dim=1), dim=1)
    background = norm <= 0.15 * norm.amax(dim=(1, 2), keepdim=True)
    assert bool(background[:, :2].all()) and int((~background).sum()) > 20
    assert torch.equal(out.movedim(1, -1)[background], x0.movedim(1, -1)[background])
    assert bool(((out - x0).movedim(1, -1)[~background].abs().amax(dim=-1) > 1e-4).all())


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_are_kept(dictionary, device):
    x, _ = _on_manifold(dictionary, seed=7)
    x0 = _network_space(x, CHANNELS, None).to(device) + 0.05
    d = dictionary.to(device)
    project = DictionaryProjection(d, build_atom_clusters(d), channel_scale=CHANNELS, mask_threshold=0.0)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        out = project(x0.to(dtype), 0)
        assert out.device == x0.device and out.dtype == dtype
    reference = DictionaryProjection(dictionary, channel_scale=CHANNELS, mask_threshold=0.0)(x0.cpu(), 0)
    torch.testing.assert_close(project(x0, 0).cpu(), reference, rtol=0, atol=1e-5)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="projection_weight"):
        DictionaryProjectionFactory(weight=1.5)
    with pytest.raises(ValueError, match="projection_steps"):
        DictionaryProjectionFactory(n_last_steps=0)
    with pytest.raises(ValueError, match="mask_threshold"):
        DictionaryProjectionFactory(mask_threshold=1.0)


# ---------------------------------------------------------------- in the inferer


def _tiny_network(seed: int = 0) -> torch.nn.Module:
    net = build_model(**TINY_NET, init_seed=seed).eval()
    # the zero-initialised output layer would make eps = 0: randomise it
    torch.nn.init.normal_(net.out[2].conv.weight, std=0.1, generator=torch.Generator().manual_seed(seed))
    return net


def _condition(dictionary, seed: int = 8) -> torch.Tensor:
    x, _ = _on_manifold(dictionary, shape=(1, 12, 12), seed=seed)
    return _network_space(x, CHANNELS, None)[0]


def _lies_on_the_manifold(samples: torch.Tensor, dictionary, threshold: float = 0.4) -> torch.Tensor:
    """Per sample, whether every voxel above ``threshold`` times the largest norm equals its own
    projection (above the projection's own 0.15 of the norms before it, which were larger)."""
    x = _dictionary_space(samples, CHANNELS, None)
    projected, _ = _oracle(x, dictionary)
    norm = torch.linalg.vector_norm(x, dim=1)
    inside = norm > threshold * norm.amax(dim=(1, 2), keepdim=True)
    err = torch.linalg.vector_norm(projected - x, dim=1)
    return torch.stack([(err[k][inside[k]] <= 1e-4 * norm[k].max()).all() for k in range(x.shape[0])])


def test_the_inferer_samples_with_the_projection(dictionary):
    net, cond = _tiny_network(), _condition(dictionary)
    common = {"n_samples": 2, "n_steps": 3, "mode": "whole", "channel_scale": CHANNELS, "progress": False}
    off = DiffusionSamplingInferer(**common)(cond, net, dictionary=dictionary)
    # off: exactly the unconstrained sampler, whatever dictionary the call gets
    plain = DiffusionSamplingInferer(**common).sample_slice(net, cond, 2, derive_seed(0, 0))
    assert torch.equal(off, plain)
    inferer = DiffusionSamplingInferer(**common, projection=DictionaryProjectionFactory())
    on = inferer(cond, net, dictionary=dictionary, clusters=build_atom_clusters(dictionary))
    assert on.shape == (2, 2 * RANK, 12, 12) and on.dtype == torch.float32 and torch.isfinite(on).all()
    assert not torch.allclose(on, off)
    # the last DDIM step returns its (projected) x0: the samples lie on the dictionary's manifold
    assert bool(_lies_on_the_manifold(on, dictionary).all()) and not bool(
        _lies_on_the_manifold(off, dictionary).any()
    )
    with pytest.raises(ValueError, match="needs the slice's dictionary"):
        inferer(cond, net)
    # weight 0: the unconstrained samples exactly
    zero = DiffusionSamplingInferer(**common, projection=DictionaryProjectionFactory(weight=0.0))
    assert torch.equal(zero(cond, net, dictionary=dictionary), off)


def test_the_projection_comes_after_the_data_consistency(dictionary):
    """A consistency step that moves x0 off the manifold (a constant offset): the samples still lie
    on it, so the projection was applied last."""
    net, cond = _tiny_network(1), _condition(dictionary, seed=9)

    def offset_factory(problem, scale, channel_scale):
        return lambda x0, i: x0 + 0.1

    common = {"n_samples": 1, "n_steps": 2, "mode": "whole", "channel_scale": CHANNELS, "progress": False}
    both = DiffusionSamplingInferer(
        **common, data_consistency=offset_factory, projection=DictionaryProjectionFactory()
    )
    out = both(cond, net, problem=object(), scale=1.0, dictionary=dictionary)
    assert bool(_lies_on_the_manifold(out, dictionary).all())
    dc_only = DiffusionSamplingInferer(**common, data_consistency=offset_factory)
    assert not bool(_lies_on_the_manifold(dc_only(cond, net, problem=object(), scale=1.0), dictionary).any())


def test_the_patch_sampler_blends_every_step_with_the_projection(dictionary):
    net, cond = _tiny_network(2), _condition(dictionary, seed=10)
    inferer = DiffusionSamplingInferer(
        n_samples=1,
        n_steps=2,
        mode="patch",
        roi_size=8,
        overlap=0.5,
        channel_scale=CHANNELS,
        projection=DictionaryProjectionFactory(),
    )
    assert inferer.blend_every_step
    out = inferer(cond, net, dictionary=dictionary)
    assert out.shape == (1, 2 * RANK, 12, 12) and bool(_lies_on_the_manifold(out, dictionary).all())


# ---------------------------------------------------------------- in the bundle


def _write_subject(dataset: Path, dictionary, matrix: int = 24) -> None:
    """A one-slice, one-coil spiral subject: two atoms in a disc, k-space from the subspace operator."""
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
    from mrf_monai.io.ismrmrd import RawSubject, write_raw

    seq = dictionary.sequence
    traj, interleaf = mrf_spiral_trajectory(seq.n_frames, matrix=matrix, samples_per_readout=200)
    i, j = np.meshgrid(np.arange(matrix) - matrix // 2, np.arange(matrix) - matrix // 2, indexing="ij")
    r = np.hypot(i, j)
    atom = torch.as_tensor(np.where(r < 4, 3, 20))
    comp, norms = torch.as_tensor(dictionary.compressed), torch.as_tensor(dictionary.norms)
    c = (comp[atom] * norms[atom][..., None] * torch.as_tensor(r < 9)[..., None]).permute(2, 0, 1)
    op = SubspaceNufftOperator(traj, dictionary.basis, (matrix, matrix))
    k = op.forward(c.to(torch.complex64)).detach().cpu().numpy().reshape(1, 1, seq.n_frames, -1)
    raw = RawSubject(
        kspace=k,
        traj=traj[None],
        interleaf=np.asarray(interleaf)[None],
        sequence=seq,
        matrix=(matrix, matrix),
        fov_mm=(float(matrix), float(matrix), 5.0),
        position_mm=np.zeros((1, 3)),
    )
    write_raw(dataset / "sub-01" / "raw.h5", raw)


def test_the_bundle_keys(tmp_path, dictionary):
    """``bloch_projection`` false (the default) and true with weight 0 write the same maps; true
    projects (the samples' maps change) and the sidecar and timing record it."""
    import json

    import nibabel as nib
    from monai.bundle import run

    from mrf_monai.io.dictionary import save_dictionary

    dataset = tmp_path / "data"
    _write_subject(dataset, dictionary)
    save_dictionary(dictionary, tmp_path / "dict.h5")
    data = {
        "sequence": dictionary.sequence.to_dict(),
        "sequence_key": dictionary.sequence.key(),
        "rank": RANK,
        "basis": torch.as_tensor(dictionary.basis).to(torch.complex64),
        "patch_size": [16, 16],
    }
    save_model(tmp_path / "model.pt", _tiny_network(3), {"scheduler": {}, "data": data})

    def reconstruct(name: str, **overrides) -> dict[str, np.ndarray]:
        run(
            run_id="run",
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            config_file=str(BUNDLE / "configs" / "inference.json"),
            logging_file=False,
            dataset_dir=str(dataset),
            output_dir=str(tmp_path / name),
            model_path=str(tmp_path / "model.pt"),
            dictionary_path=str(tmp_path / "dict.h5"),
            device="cpu",
            progress=False,
            **{"n_samples": 2, "n_steps": 2, "dc_steps": 2, **overrides},
        )
        folder = tmp_path / name / "sub-01"
        return {
            s: np.asarray(nib.load(str(folder / f"sub-01_{s}.nii.gz")).dataobj)
            for s in ("T1map", "T2map", "PDmap", "desc-std_T1map", "desc-compressed_TSMI")
        }

    off = reconstruct("off")
    zero = reconstruct("zero", bloch_projection=True, projection_weight=0.0)
    on = reconstruct("on", bloch_projection=True, projection_steps=1)
    for key in off:
        np.testing.assert_array_equal(zero[key], off[key], err_msg=key)
    assert not np.array_equal(on["desc-compressed_TSMI"], off["desc-compressed_TSMI"])
    assert all(np.isfinite(v).all() for v in on.values())
    sidecar = json.loads((tmp_path / "on" / "sub-01" / "sub-01_T1map.json").read_text())
    assert sidecar["Sampler"]["BlochProjection"] is True and sidecar["Sampler"]["ProjectionSteps"] == 1
    timing = json.loads((tmp_path / "off" / "sub-01" / "timing.json").read_text())
    assert timing["bloch_projection"] is False
