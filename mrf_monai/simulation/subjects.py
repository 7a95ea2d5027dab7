"""Simulated MRF subjects written exactly as the data contract's subject folders.

A subject is a few axial slices of a brain phantom (:mod:`mrf_monai.phantoms`) scanned with
the FISP-MRF protocol:

1. Ground truth: per-voxel continuous T1, T2 and complex PD
   (:func:`mrf_monai.phantoms.sample_subject_maps`).
2. Time series: the EPG signal (:func:`mrf_monai.physics.epg.simulate_fisp`) of every voxel
   with protons, at its own continuous (T1, T2) (never snapped to a dictionary grid),
   times its PD: ``x[t, i, j] = PD[i, j] * EPG(T1[i, j], T2[i, j])[t]``. Only voxels with
   protons are simulated (in chunks, by the EPG module).
3. k-space: every full frame image (not a rank-R subspace approximation), times each coil
   sensitivity, through the type-2 NUFFT (:class:`mrf_monai.acquisition.nufft.Nufft2D`) on
   that frame's readouts (one spiral interleaf by default; any number of readouts per frame
   with a :class:`~mrf_monai.acquisition.protocol.Protocol`). ``frames_per_call`` frames are
   transformed in one library call on the union of their readouts (each frame's own samples
   are kept).
4. Noise: complex white Gaussian noise, independent per coil and sample, with
   ``E|n|^2 = sigma^2`` and ``sigma = noise * mean_{coil, t} |s_{coil, t}(k = 0)|``: the
   noise level is a fraction of the mean magnitude of the k-space centre of the frames
   (``s(0) = sum_ij S_coil m_t``, the data contract's model at k = 0). See
   :data:`DEFAULT_NOISE` and ``docs/simulation.md`` for the image-domain SNR this gives.

Scanner conditions, when asked (:mod:`mrf_monai.simulation.scanner`; the defaults give the
subjects of earlier versions bit for bit): correlated channel noise (``noise_covariance``,
``E[n n^H] = sigma^2 Psi``), a coil layout (``coil_layout``), a noise scan in ``raw.h5``
(``noise_scan_samples`` noise-only samples per channel, ISMRMRD flag 19, with the dwell times)
and a smooth B1+ field (``b1``): every voxel's EPG then uses its flip angles times its B1, and the
field is written to ``ref/sub-<label>_TB1map.nii.gz`` (and with ``write_b1_map`` to
``b1/sub-<label>_TB1map.nii.gz``, the map a reconstruction reads; data contract section 5).

The subject folder (data contract, section 1) holds ``raw.h5`` (ISMRMRD, written by
:func:`mrf_monai.io.ismrmrd.write_raw`), ``ref/`` (T1 and T2 in seconds, PD magnitude and
the uint8 brain mask, written by :func:`mrf_monai.io.subjects.write_reference`, plus the
phase of the complex PD in radians, ``sub-<label>_desc-phase_PDmap.nii.gz``, an extra file
that lets :class:`mrf_monai.simulation.SubjectPairDataset` rebuild the exact complex reference) and a
``sim.json`` card describing how it was made. Geometry: axial slices in LPS,
``read_dir = (1, 0, 0)``, ``phase_dir = (0, 1, 0)``, ``slice_dir = (0, 0, 1)``, slice
centres at the MNI152 coordinates of the chosen template slices.

Protocols (:func:`simulate_subject` ``protocol=``): the sequence, trajectory (any readouts per
frame), matrix, FOV and coils of a :class:`~mrf_monai.acquisition.protocol.Protocol` (e.g.
``Protocol.from_raw(read_raw("raw.h5"))``). The phantom is drawn over its fixed 230 mm canvas
at the protocol's pixel size (the nearest whole matrix over 230 mm) and centre-cropped or
zero-padded to the protocol's matrix (:func:`protocol_slice_maps`), so the anatomy keeps its
size to within half a pixel over 230 mm.

Writing is atomic per subject: the folder is written under a hidden temporary name and
published when complete (:func:`mrf_monai.io.folders.publish_folder`), so a failed write (a
full disk) leaves no partial ``sub-<label>/``; files of an earlier run that the simulator
does not write are kept.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mrf_monai import __version__
from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.nufft import Nufft2D
from mrf_monai.acquisition.protocol import Protocol
from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
from mrf_monai.io import b1 as b1_io
from mrf_monai.io.atomic import atomic_write
from mrf_monai.io.folders import publish_folder, temporary_folder
from mrf_monai.io.ismrmrd import RawSubject, write_raw
from mrf_monai.phantoms import FIELD_STRENGTH_T, FOV_MM, sample_subject_maps, sample_subject_parameters
from mrf_monai.phantoms.anatomy import slice_position_mm
from mrf_monai.phantoms.augment import BAND_PERIOD, SLICE_RANGE, split_slices, subject_generator
from mrf_monai.phantoms.world import world_to_dict
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import MRFSequence, fisp_mrf_jiang2015

from .scanner import ScannerConditions

__all__ = [
    "DEFAULT_NOISE",
    "SLICE_THICKNESS_MM",
    "GYROMAGNETIC_HZ_PER_T",
    "choose_slices",
    "simulate_time_series",
    "simulate_kspace",
    "noise_sigma",
    "simulate_subject",
    "subject_protocol",
    "protocol_slice_maps",
    "SUBJECT_OUTPUTS",
]

#: Default relative noise level: sigma = DEFAULT_NOISE * mean |k-space centre| of the frames.
#: At the protocol size (230 x 230, 200 frames, 920 samples, rank 5) the gridded noise in the
#: first subspace component is then about 3 % of its mean magnitude in the brain (SNR ~ 35),
#: below the aliasing of that component (6-8 % RMS).
DEFAULT_NOISE = 4e-4
#: Slice thickness of the protocol, mm (written to the ISMRMRD FOV z).
SLICE_THICKNESS_MM = 5.0
#: Proton gyromagnetic ratio / (2 pi), Hz per tesla.
GYROMAGNETIC_HZ_PER_T = 42.577478e6
#: What the simulator writes into a subject folder (replaced on a re-run; anything else is kept).
SUBJECT_OUTPUTS = ("raw.h5", "ref", "sim.json", "b1")


def choose_slices(seed: int, split: str, n_slices: int) -> np.ndarray:
    """Template slices (MNI152 axial indices, ascending) of a subject of ``split``.

    Up to one slice per band of the split (:data:`mrf_monai.phantoms.augment.BAND_PERIOD`
    = 24 mm apart, so 5 at most), the slices are equally spaced: the same offset in a run of
    consecutive bands, both drawn from the subject's seed; the NIfTI stack then has an
    exact affine. More slices are spread evenly over the split's whole slice list (unequal
    spacing: each slice keeps its own position in ``raw.h5``).
    """
    pool = split_slices(split)
    if not 1 <= n_slices <= pool.size:
        raise ValueError(
            f"n_slices must be between 1 and {pool.size} (the slices of split {split!r}), got {n_slices}"
        )
    rng = subject_generator(seed, split, 2)
    bands = (pool - SLICE_RANGE[0]) // BAND_PERIOD
    n_bands = int(bands.max()) + 1
    if n_slices <= n_bands:
        offsets = np.unique((pool - SLICE_RANGE[0]) % BAND_PERIOD)
        offset = int(rng.choice(offsets))
        first = int(rng.integers(0, n_bands - n_slices + 1))
        z = SLICE_RANGE[0] + offset + BAND_PERIOD * np.arange(first, first + n_slices)
        return z.astype(np.int64)
    step = pool.size / n_slices
    idx = np.minimum((rng.uniform(0.0, step) + step * np.arange(n_slices)).astype(np.int64), pool.size - 1)
    return pool[np.unique(idx)]


def simulate_time_series(
    t1_s: torch.Tensor | np.ndarray,
    t2_s: torch.Tensor | np.ndarray,
    pd: torch.Tensor | np.ndarray,
    sequence: MRFSequence,
    device: torch.device | str = "cpu",
    b1: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Exact EPG time series of a parameter map: ``(T, Nx, Ny)`` complex64.

    Args:
        t1_s, t2_s: ``(Nx, Ny)`` seconds (any value where ``pd == 0``).
        pd: ``(Nx, Ny)`` complex proton density; voxels with ``pd == 0`` are not simulated.
        sequence: the MRF sequence (T frames).
        device: where the EPG runs.
        b1: optional ``(Nx, Ny)`` relative transmit field: each voxel's flip angles are scaled
            by its B1 (``None``: the nominal flip angles).
    """
    t1 = torch.as_tensor(np.asarray(t1_s) if not isinstance(t1_s, torch.Tensor) else t1_s).to(
        device, torch.float32
    )
    t2 = torch.as_tensor(np.asarray(t2_s) if not isinstance(t2_s, torch.Tensor) else t2_s).to(
        device, torch.float32
    )
    p = torch.as_tensor(np.asarray(pd) if not isinstance(pd, torch.Tensor) else pd).to(
        device, torch.complex64
    )
    if not (t1.shape == t2.shape == p.shape) or t1.ndim != 2:
        raise ValueError(
            f"t1_s, t2_s and pd must be (Nx, Ny) maps of one shape, got {t1.shape}, {t2.shape}, {p.shape}"
        )
    sel = p.abs() > 0
    if bool(((t1[sel] <= 0) | (t2[sel] <= 0)).any()):
        raise ValueError("T1 and T2 must be positive wherever PD is non-zero")
    b1_t = None
    if b1 is not None:
        b1_t = torch.as_tensor(np.asarray(b1) if not isinstance(b1, torch.Tensor) else b1).to(
            device, torch.float32
        )
        if b1_t.shape != t1.shape:
            raise ValueError(f"b1 must be an (Nx, Ny) map like t1_s, got {tuple(b1_t.shape)}")
        if bool((~torch.isfinite(b1_t[sel]) | (b1_t[sel] <= 0)).any()):
            raise ValueError("B1 must be a positive finite relative field wherever PD is non-zero")
    x = torch.zeros(sequence.n_frames, *t1.shape, dtype=torch.complex64, device=device)
    if bool(sel.any()):
        sig = simulate_fisp(t1[sel], t2[sel], sequence, b1=None if b1_t is None else b1_t[sel])  # (N, T)
        x[:, sel] = (sig * p[sel][:, None]).T
    return x


def simulate_kspace(
    images: torch.Tensor,
    traj: np.ndarray | torch.Tensor,
    coil_maps: torch.Tensor | None = None,
    frames_per_call: int = 10,
    eps: float = 1e-6,
    backend: str = "auto",
) -> torch.Tensor:
    """Noise-free k-space of full frame images: ``(T, Nx, Ny)`` -> ``(C, T, S)`` complex64.

    Args:
        images: ``(T, Nx, Ny)`` complex frame images (the time series).
        traj: ``(T, S, 2)`` each frame's samples (all its readouts), cycles per pixel.
        coil_maps: ``(C, Nx, Ny)`` sensitivities or ``None`` (one coil, sensitivity 1).
        frames_per_call: frames per NUFFT call (the union of their readouts is planned once).
        eps, backend: NUFFT accuracy and backend.
    """
    if isinstance(traj, torch.Tensor):
        tr = traj
    else:  # a copy when read-only (a Protocol's trajectory): torch wants writable memory
        arr = np.asarray(traj)
        tr = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    n_t, n_s = int(tr.shape[0]), int(tr.shape[1])
    if images.ndim != 3 or images.shape[0] != n_t:
        raise ValueError(
            f"images must be (T, Nx, Ny) with T = {n_t} frames of traj, got {tuple(images.shape)}"
        )
    shape = tuple(images.shape[-2:])
    maps = None if coil_maps is None else coil_maps.to(images.device, torch.complex64)
    n_c = 1 if maps is None else int(maps.shape[0])
    out = torch.empty(n_c, n_t, n_s, dtype=torch.complex64)
    g = max(1, int(frames_per_call))
    for t0 in range(0, n_t, g):
        t1 = min(n_t, t0 + g)
        op = Nufft2D(tr[t0:t1].reshape(-1, 2), shape, eps=eps, backend=backend, device=images.device)
        x = images[t0:t1]
        x = x[:, None] if maps is None else x[:, None] * maps[None]  # (G, C, Nx, Ny)
        y = op.forward(x.reshape(-1, *shape)).reshape(t1 - t0, n_c, t1 - t0, n_s)
        idx = torch.arange(t1 - t0)
        out[:, t0:t1] = y[idx, :, idx].permute(1, 0, 2).cpu()  # each frame's own readout
    return out


def noise_sigma(images: torch.Tensor, coil_maps: torch.Tensor | None, noise: float) -> float:
    """Noise standard deviation ``noise * mean_{coil, t} |sum_ij S_coil m_t|`` (module docs)."""
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (a fraction of the mean |k-space centre|), got {noise}")
    if coil_maps is None:
        dc = images.sum(dim=(-2, -1)).abs()
    else:
        dc = torch.einsum("cxy,txy->ct", coil_maps.to(images.device, torch.complex64), images).abs()
    return float(noise * dc.mean())


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return _jsonable({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    return obj


def subject_protocol(
    n_frames: int | None = None,
    matrix: int | None = None,
    samples_per_readout: int | None = None,
    n_coils: int | None = None,
    sequence: MRFSequence | None = None,
    protocol: Protocol | None = None,
) -> Protocol:
    """The protocol a simulated subject is scanned with.

    Without ``protocol``: ``sequence`` (default ``fisp_mrf_jiang2015()``) truncated to
    ``n_frames`` (default 200, or all of ``sequence``'s frames), one golden-angle spiral
    interleaf of ``samples_per_readout`` (920) samples per frame on a ``matrix`` (230) square
    matrix, FOV 230 mm, 5 mm slices, ``n_coils`` (1) coils. With ``protocol``: exactly its
    sequence, trajectory, matrix, FOV and coils; ``n_coils`` overrides its coils, and
    ``n_frames``, ``matrix``, ``samples_per_readout`` and ``sequence`` must be ``None`` or agree
    with it.

    Raises:
        ValueError: an argument that contradicts ``protocol``.
    """
    if protocol is not None:
        conflicts = []
        if n_frames is not None and n_frames != protocol.n_frames:
            conflicts.append(f"{n_frames} frames vs the protocol's {protocol.n_frames}")
        if matrix is not None and (matrix, matrix) != protocol.matrix:
            conflicts.append(f"matrix {matrix} vs the protocol's {protocol.matrix[0]} x {protocol.matrix[1]}")
        if samples_per_readout is not None and samples_per_readout != protocol.samples_per_readout:
            conflicts.append(
                f"{samples_per_readout} samples per readout vs the protocol's {protocol.samples_per_readout}"
            )
        if sequence is not None and sequence != protocol.sequence:
            conflicts.append("sequence: " + ", ".join(sequence.differences(protocol.sequence)))
        if conflicts:
            raise ValueError(
                "the simulation arguments contradict the protocol (" + "; ".join(conflicts) + "); leave "
                "them out to simulate the protocol as it is"
            )
        return protocol if n_coils is None else protocol.replace(n_coils=int(n_coils))
    seq = sequence if sequence is not None else fisp_mrf_jiang2015(1000)
    n_t = int(n_frames) if n_frames is not None else (seq.n_frames if sequence is not None else 200)
    if seq.n_frames != n_t:
        seq = seq.truncate(n_t)
    m = 230 if matrix is None else int(matrix)
    s = 920 if samples_per_readout is None else int(samples_per_readout)
    traj, interleaf = mrf_spiral_trajectory(n_t, m, s)
    return Protocol(
        seq,
        traj,
        1,
        (m, m),
        (FOV_MM, FOV_MM, SLICE_THICKNESS_MM),
        1 if n_coils is None else int(n_coils),
        "spiral",
        interleaf[:, None],
    )


def _fit(a: np.ndarray, m: int, nx: int, ny: int) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes of ``a`` from ``(m, m)`` to ``(nx, ny)``, keeping
    voxel ``m // 2`` of the phantom at voxel ``n // 2`` of the result (the slice centre)."""
    out = np.zeros((*a.shape[:-2], nx, ny), dtype=a.dtype)
    ranges = []
    for n in (nx, ny):
        shift = n // 2 - m // 2  # result index = phantom index + shift
        lo, hi = max(0, -shift), min(m, n - shift)
        ranges.append((lo, hi, lo + shift, hi + shift))
    (a0, a1, b0, b1), (c0, c1, d0, d1) = ranges
    out[..., b0:b1, d0:d1] = a[..., a0:a1, c0:c1]
    return out


def protocol_slice_maps(
    seed: int,
    slice_index: int,
    matrix: tuple[int, int],
    fov_mm: Sequence[float],
    split: str = "test",
    augment: bool = True,
    **kwargs,
) -> tuple[dict[str, np.ndarray], int]:
    """Phantom maps of one slice on a protocol's matrix and FOV (see the module docstring).

    The phantom is drawn over its 230 mm canvas with ``m = round(230 / pixel)`` voxels for the
    protocol's pixel size ``fov / matrix`` and centre-cropped or zero-padded to ``matrix``;
    ``m == matrix`` (the 230 mm FOV) is :func:`mrf_monai.phantoms.sample_subject_maps` itself.
    ``kwargs`` go to ``sample_subject_maps`` (``parameters``, ...).

    Returns:
        the maps (``t1_s``, ``t2_s``, ``pd``, ``mask``, ... of shape ``matrix``) and ``m``
        (the voxel ``(m // 2, m // 2)`` of the phantom, i.e. :func:`slice_position_mm` with
        ``m``, sits at voxel ``(Nx // 2, Ny // 2)``).

    Raises:
        ValueError: non-square pixels, or a pixel size that gives fewer than 8 phantom voxels.
    """
    nx, ny = int(matrix[0]), int(matrix[1])
    px, py = float(fov_mm[0]) / nx, float(fov_mm[1]) / ny
    if abs(px - py) > 1e-3 * max(px, py):
        raise ValueError(
            f"the phantom needs square pixels, but FOV {fov_mm[0]:g} x {fov_mm[1]:g} mm on a {nx} x {ny} "
            f"matrix gives {px:.4g} x {py:.4g} mm"
        )
    m = int(round(FOV_MM / px))
    if m < 8:
        raise ValueError(f"pixels of {px:.4g} mm leave fewer than 8 phantom voxels across {FOV_MM:g} mm")
    maps = sample_subject_maps(seed, slice_index, m, split, augment, **kwargs)
    if m == nx == ny:
        return maps, m
    return {k: _fit(np.asarray(v), m, nx, ny) for k, v in maps.items()}, m


def simulate_subject(
    out_dir: str | Path,
    label: str,
    seed: int,
    n_slices: int = 1,
    n_frames: int | None = None,
    n_coils: int | None = None,
    noise: float = DEFAULT_NOISE,
    split: str = "test",
    matrix: int | None = None,
    samples_per_readout: int | None = None,
    *,
    sequence: MRFSequence | None = None,
    slices: Sequence[int] | None = None,
    augment: bool = True,
    device: torch.device | str = "cpu",
    protocol: Protocol | None = None,
    coil_layout: str = "ring",
    noise_covariance: str | np.ndarray | None = None,
    noise_scan_samples: int = 0,
    dwell_us: float | None = None,
    noise_dwell_us: float | None = None,
    relative_noise_bandwidth: float | None = None,
    b1: float | str | None = None,
    write_b1_map: bool = False,
) -> Path:
    """Simulate one subject and write its folder ``out_dir/sub-<label>`` (data contract).

    Args:
        out_dir: dataset folder (created if needed).
        label: alphanumeric subject label.
        seed: subject seed (non-negative); with ``split`` it fixes the anatomy, tissues,
            lesions, slices and noise.
        n_slices: number of axial slices (chosen by :func:`choose_slices`).
        n_frames: leading frames of the sequence to acquire (default 200 = acceleration 5).
        n_coils: receive coils (default 1, or the protocol's; 1: uniform sensitivity; more:
            :func:`simulate_coil_maps`, normalised to ``sum |S|^2 = 1``).
        noise: relative noise level (``sigma = noise * mean |k-space centre|``, module docs).
        split: ``"train"``, ``"val"`` or ``"test"``.
        matrix: image matrix (default 230; the field of view is 230 mm).
        samples_per_readout: readout samples per spiral interleaf (default 920).
        sequence: the MRF sequence (default: ``fisp_mrf_jiang2015()`` truncated to ``n_frames``).
        slices: explicit template slices (must belong to ``split``) instead of ``n_slices``.
        augment: apply the subject's geometric augmentation.
        device: where EPG and NUFFT run.
        protocol: scan with exactly this protocol's sequence, trajectory (any number of
            readouts per frame), matrix, FOV and coils (:func:`subject_protocol`: ``n_coils``
            overrides its coils; ``n_frames``, ``matrix``, ``samples_per_readout`` and
            ``sequence`` must be left out or agree).
        coil_layout: ``"ring"`` or ``"two-rings"``
            (:func:`~mrf_monai.acquisition.coils.simulate_coil_maps`).
        noise_covariance: channel noise covariance: ``None`` / ``"white"``, ``"realistic"``
            (:func:`~mrf_monai.acquisition.coils.realistic_noise_covariance` of the subject's
            seed) or a ``(C, C)`` matrix (:mod:`mrf_monai.simulation.scanner`).
        noise_scan_samples: noise-only samples per channel of a noise scan written to
            ``raw.h5`` (0: none). With a noise scan the subject has one noise level, the mean
            of its slices' ``sigma``.
        dwell_us: imaging dwell time written to ``raw.h5`` (default none, or
            :data:`~mrf_monai.simulation.scanner.DEFAULT_DWELL_US` with a noise scan).
        noise_dwell_us: dwell time of the noise scan (default ``dwell_us``); its noise power
            scales with ``dwell_us / noise_dwell_us``.
        relative_noise_bandwidth: the receiver's relative noise bandwidth written to the header
            (scales the noise scan's power too); default none (1).
        b1: a B1+ field: its amplitude ``a`` (B1 = 1 +- a over the brain) or ``"random"``
            (drawn per subject from 0.10-0.25); ``None``: nominal flip angles everywhere.
        write_b1_map: also write the field to ``b1/sub-<label>_TB1map.nii.gz`` (the map that
            reconstructions read); it is always written to ``ref/`` when there is a field.

    Returns:
        the subject folder.
    """
    from mrf_monai.io.subjects import write_reference

    if not label.isalnum():
        raise ValueError(f"subject label {label!r} must be alphanumeric (data contract, section 1)")
    prot = subject_protocol(n_frames, matrix, samples_per_readout, n_coils, sequence, protocol)
    seq, (nx, ny), n_c = prot.sequence, prot.matrix, prot.n_coils
    z_list = (
        np.asarray(slices, dtype=np.int64) if slices is not None else choose_slices(seed, split, n_slices)
    )
    traj = prot.trajectory
    maps_c = None if n_c == 1 else simulate_coil_maps(n_c, (nx, ny), device=device, layout=coil_layout)
    params = sample_subject_parameters(seed, split, augment)
    rng = subject_generator(seed, split, 3)
    scanner = ScannerConditions.create(
        seed,
        split,
        n_c,
        coil_layout,
        noise_covariance,
        noise_scan_samples,
        dwell_us,
        noise_dwell_us,
        relative_noise_bandwidth,
        b1,
    )

    kspace = np.empty((len(z_list), n_c, prot.n_frames, prot.n_samples), dtype=np.complex64)
    t1m, t2m, pdm, phasem, maskm, sigmas, positions = [], [], [], [], [], [], []
    for s, z in enumerate(z_list):
        maps, m = protocol_slice_maps(seed, int(z), (nx, ny), prot.fov_mm, split, augment, parameters=params)
        field = scanner.slice_b1(maps["mask"], float(slice_position_mm(int(z), m)[2]))
        x = simulate_time_series(maps["t1_s"], maps["t2_s"], maps["pd"], seq, device, b1=field)
        k = simulate_kspace(x, traj, maps_c)
        sigma = noise_sigma(x, maps_c, noise)
        if sigma > 0 and not scanner.noise_per_subject:
            k = k + torch.from_numpy(scanner.slice_noise(rng, tuple(k.shape), sigma))
        kspace[s] = k.numpy()
        sigmas.append(sigma)
        t1m.append(maps["t1_s"])
        t2m.append(maps["t2_s"])
        pdm.append(np.abs(maps["pd"]).astype(np.float32))
        phasem.append(np.angle(maps["pd"]).astype(np.float32))
        maskm.append(maps["mask"].astype(np.uint8))
        positions.append(slice_position_mm(int(z), m))
        del x, k

    n_sl = len(z_list)
    noise_fields = scanner.finish(kspace, sigmas, rng)  # with a noise scan: one sigma per subject
    raw = RawSubject(
        kspace=kspace,
        traj=np.broadcast_to(traj, (n_sl, *traj.shape)).copy(),
        interleaf=np.broadcast_to(prot.interleaf_indices, (n_sl, *prot.interleaf_indices.shape)).copy(),
        sequence=seq,
        matrix=(nx, ny),
        fov_mm=prot.fov_mm,
        position_mm=np.stack(positions),
        larmor_hz=GYROMAGNETIC_HZ_PER_T * FIELD_STRENGTH_T,
        readouts_per_frame=prot.readouts_per_frame,
        trajectory_type=prot.trajectory_type,
        **noise_fields,
    )
    card = {
        "software": f"mrf_monai {__version__}",
        "python": platform.python_version(),
        "label": label,
        "seed": int(seed),
        "split": split,
        "template_slices": [int(z) for z in z_list],
        "template": "MNI152 ICBM 2009a nonlinear symmetric, 1 mm (nilearn)",
        "field_strength_T": FIELD_STRENGTH_T,
        "sequence": seq.to_dict(),
        "n_frames": prot.n_frames,
        "n_coils": n_c,
        "coil_model": None if n_c == 1 else "simulate_coil_maps (Biot-Savart wires, sum |S|^2 = 1)",
        "matrix": [nx, ny],
        "fov_mm": list(prot.fov_mm),
        "phantom_pixel_mm": FOV_MM / m,
        "samples_per_readout": prot.samples_per_readout,
        "readouts_per_frame": prot.readouts_per_frame,
        "trajectory": (
            "mrf_spiral_trajectory (variable-density spiral, golden-angle rotation per frame)"
            if protocol is None
            else f"the protocol's ({prot.trajectory_type}, {prot.readouts_per_frame} readout(s) per frame)"
        ),
        "protocol": prot.to_dict(include_trajectory=False),
        "noise": {
            "relative": float(noise),
            "definition": "complex Gaussian, E|n|^2 = sigma^2, sigma = relative * mean over coils and "
            "frames of |k-space centre| = |sum_ij S_c m_t[i, j]|",
            "sigma_per_slice": sigmas,
        },
        "signal_model": "EPG FISP at each voxel's continuous (T1, T2), times complex PD; full frames "
        "through the NUFFT (no subspace)",
        "partial_volume": "fast-exchange mixing of relaxation rates, PD-weighted",
        "pd_phase": "ref/sub-<label>_desc-phase_PDmap.nii.gz, radians (PDmap holds the magnitude)",
        "augment": bool(augment),
        "augmentation": _jsonable(params.augmentation) if augment else None,
        "head_layers": _jsonable(params.layers),
        "lesion_type": params.lesion_type,
        "lesions": _jsonable(params.lesions),
        "tissues": _jsonable(params.tissues),
        # the phantom-world draw (validation seeds; None for today's phantoms)
        "phantom_world": world_to_dict(params.world),
    }
    card.update(scanner.card(maskm, write_b1_map))
    subject_dir = Path(out_dir) / f"sub-{label}"
    tmp = temporary_folder(subject_dir)  # published only when complete
    try:
        write_raw(tmp / "raw.h5", raw)
        write_reference(
            tmp,
            label,
            np.stack(t1m, axis=-1),
            np.stack(t2m, axis=-1),
            np.stack(pdm, axis=-1),
            np.stack(maskm, axis=-1),
            raw.affine(),  # the geometry inference writes its maps with
            pd_phase_rad=np.stack(phasem, axis=-1),
        )
        if scanner.b1_maps:
            field = np.stack(scanner.b1_maps, axis=-1)
            b1_io.write_b1_map(b1_io.reference_b1_path(tmp, label), field, raw.affine())
            if write_b1_map:
                b1_io.write_b1_map(b1_io.b1_map_path(tmp, label), field, raw.affine())
        with atomic_write(tmp / "sim.json") as f:
            f.write_text(json.dumps(card, indent=2))
        publish_folder(tmp, subject_dir, owned=SUBJECT_OUTPUTS)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return subject_dir
