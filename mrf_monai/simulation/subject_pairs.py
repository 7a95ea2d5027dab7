"""Training pairs from a dataset folder of subjects with references (``raw.h5`` + ``ref/``).

:class:`SubjectPairDataset` yields the same items as
:class:`~mrf_monai.simulation.pairs.SimulatedPairDataset` (``image``/``cond`` ``(2R, H, W)``
float32 ``[Re c_0..Re c_{R-1}, Im c_0..Im c_{R-1}]`` divided by the per-slice ``scale``, a 0-d
float32 ``scale``, ``seed``, ``slice_index``; ``patch_origin`` with ``patch_size``), so the
trainers, their transforms, channel scaling and validation take either. One item per slice
of every subject (data contract section 1: ``<dataset>/sub-<label>/raw.h5`` and
``ref/sub-<label>_{T1map,T2map,PDmap,mask}.nii.gz``).

For slice ``s`` of a subject:

* **condition**: the aliased SVD-MRF gridding of the slice's own ``raw.h5`` k-space
  (:class:`mrf_monai.acquisition.gridding.SubspaceGridder`: Pipe-Menon density compensation
  of the file's trajectory, Walsh coil combination with several coils), in the dictionary's
  basis: the very code that makes the condition at inference
  (:class:`mrf_monai.diffusion.reconstructor.IDDPMReconstructor`), so training and inference
  see identical conditions. The raw file's sequence (ISMRMRD header) must equal the
  dictionary's.
* **reference**: ``c = PD * exp(i phi) * basis^H EPG(T1, T2)`` per voxel with ``PD > 0``:
  T1/T2 (seconds) and the PD magnitude from ``ref/``, the compressed fingerprint interpolated
  from :class:`~mrf_monai.simulation.pairs.CompressedSignalTable` (as the simulated pairs).
  The PD phase ``phi``:

  - from ``ref/sub-<label>_desc-phase_PDmap.nii.gz`` (radians) when present: subjects written
    by :func:`mrf_monai.simulation.simulate_subject` carry it, and the reference then equals
    the simulator's own complex reference (up to float32 rounding);
  - otherwise estimated from the condition (:func:`estimate_pd_phase`): per voxel the angle of
    ``<s, cond> = sum_r conj(s_r) cond_r`` with ``s`` the real-phase reference signal, after
    Gaussian low-pass filtering of ``<s, cond>`` (the PD phase is smooth; the aliasing is not).
    Filtering the complex product rather than the angle avoids phase wraps, and voxels without
    signal contribute nothing. Measured on 4 simulated train-split slices at the protocol size
    (230 x 230, 200 frames, 920 samples, default noise), the error inside the brain mask is
    0.017 rad on average (0.076 rad at most) with the default 4 mm filter, and the reference
    TSMI is then within 2.1 % (NRMSE in the mask) of the exact one; no filter: 0.042 / 0.32 rad,
    5.2 %; 2 mm: 0.024 rad; 8 mm: 0.027 rad; 12 mm: 0.050 rad (wider filters blur the phase
    itself). ``tests/simulation/test_subject_pairs.py`` checks it on small subjects.

  - **B1+**: subjects simulated with a B1+ field (``simulate_subject(..., b1=...)``) have the true
    field in ``ref/sub-<label>_TB1map.nii.gz`` (:func:`mrf_monai.io.b1.reference_b1_path`, read
    with :func:`~mrf_monai.io.b1.read_b1_map`: the raw data's matrix, slices and affine), and
    their reference is ``PD * exp(i phi) * basis^H EPG(T1, T2, B1)`` at each voxel's B1 (flip
    angles scaled by it, as their k-space was simulated), from a second signal table with a B1
    axis (linear in B1). That table is built only when some subject has such a map, once, when
    the dataset is built (not per DataLoader worker), with nodes ``1 + k * table_b1_step``
    (``k`` integer, default step 0.05, 1 always a node) covering the B1 range of those maps
    where PD > 0: each node costs one plain table, so a field of ``1 +- 0.2`` needs 9 nodes
    where a fixed 0.6-1.4 grid would need 17 (and a map beyond it would be clamped), and the
    nodes of a symmetric range are those of ``SimulatedPairDataset(b1=a)`` (same cache file).
    Subjects without the map keep the B1 = 1 table: their pairs are unchanged, bit for bit.

* **normalisation**: ``scale = quantile(|cond[0]|, 0.99)`` over the slice
  (:func:`mrf_monai.transforms.intensity.condition_scale`), both divided by it.

Bad subjects (unreadable or corrupt ``raw.h5``, missing or unreadable ``ref/`` maps, maps whose
shape differs from the raw data's matrix and slice count, NaN/Inf or non-positive T1/T2 where
PD > 0, a reference B1 map that ``read_b1_map`` refuses or without a positive finite B1 wherever
PD > 0, another sequence than the dictionary's) are found when the dataset is built; with
``on_error="skip"`` (default) they are left out with one warning listing every file and reason,
and an error is raised when no subject is left; with ``on_error="raise"`` the first one raises.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.io.b1 import read_b1_map, reference_b1_path
from mrf_monai.io.ismrmrd import RawSubject, read_raw
from mrf_monai.io.subjects import (
    PD_PHASE_SUFFIX,
    RAW_NAME,
    find_subjects,
    read_reference,
    reference_path,
)
from mrf_monai.physics.sequence import MRFSequence

from .pairs import CompressedSignalTable, normalised_pair

__all__ = [
    "SubjectDataError",
    "SubjectPairDataset",
    "dataset_sequence",
    "estimate_pd_phase",
    "gaussian_smooth",
    "DEFAULT_PHASE_SMOOTHING_MM",
]

#: Default standard deviation (mm) of the Gaussian low-pass of the PD-phase estimate.
DEFAULT_PHASE_SMOOTHING_MM = 4.0

_PHASE_MODES = ("auto", "file", "estimate")


class SubjectDataError(ValueError):
    """A subject folder cannot be used for training; the message names the file and the problem."""


def _b1_table_nodes(b1_min: float, b1_max: float, step: float) -> torch.Tensor:
    """B1 nodes ``1 + k * step`` (integer ``k``, at least ``1 +- step``, all positive) covering
    ``[b1_min, b1_max]``: the B1 axis of :class:`SubjectPairDataset`'s B1 signal table."""
    k_lo = min(-1, math.floor((b1_min - 1.0) / step + 1e-6))
    k_hi = max(1, math.ceil((b1_max - 1.0) / step - 1e-6))
    while 1.0 + k_lo * step <= 1e-6:  # B1 nearer 0 than one step: clamped to the lowest node
        k_lo += 1
    return torch.tensor([round(1.0 + k * step, 9) for k in range(k_lo, k_hi + 1)], dtype=torch.float64)


def dataset_sequence(dataset_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> MRFSequence:
    """The MRF sequence of the first subject (by name) of a dataset folder whose ``raw.h5`` reads.

    Used by the training bundles to build the dictionary of the dataset's own sequence.

    Raises:
        FileNotFoundError: no subject folder, or no readable ``raw.h5`` (the errors are listed).
    """
    errors = []
    for subject in find_subjects(dataset_dir):
        try:
            return read_raw(subject / RAW_NAME).sequence
        except ValueError as err:
            errors.append(str(err))
    raise FileNotFoundError(
        f"no readable {RAW_NAME} in {dataset_dir}: "
        + "; ".join(errors)
        + " -- re-export or re-copy the raw data"
    )


def gaussian_smooth(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian filter of the last two axes of a real ``(..., H, W)`` tensor.

    ``sigma_px``: standard deviation in pixels (``<= 0``: no filtering); the kernel extends to
    3 sigma; outside the image counts as zero.
    """
    if sigma_px <= 0:
        return x
    radius = max(1, int(math.ceil(3.0 * sigma_px)))
    u = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (u / sigma_px) ** 2)
    k = k / k.sum()
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:])
    y = torch.nn.functional.conv2d(y, k.reshape(1, 1, -1, 1), padding=(radius, 0))
    y = torch.nn.functional.conv2d(y, k.reshape(1, 1, 1, -1), padding=(0, radius))
    return y.reshape(shape)


def estimate_pd_phase(condition: torch.Tensor, signal: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Smooth PD phase (radians, ``(H, W)`` float32) of a slice from its aliased condition.

    Args:
        condition: ``(R, H, W)`` complex gridded (aliased) compressed TSMI.
        signal: ``(R, H, W)`` complex reference compressed TSMI without PD phase
            (``|PD| * basis^H EPG(T1, T2)``).
        sigma_px: Gaussian low-pass standard deviation, pixels.

    Returns:
        ``angle(G * <signal, condition>)`` with ``<a, b> = sum_r conj(a_r) b_r`` per voxel and
        ``G`` the Gaussian filter (applied to the real and imaginary parts).
    """
    if condition.shape != signal.shape or condition.ndim != 3:
        raise ValueError(
            "condition and signal must both be (R, H, W), got "
            f"{tuple(condition.shape)} and {tuple(signal.shape)}"
        )
    z = (signal.conj() * condition.to(signal.device, signal.dtype)).sum(0)
    parts = gaussian_smooth(torch.stack([z.real, z.imag]).float(), sigma_px)
    return torch.atan2(parts[1], parts[0])


def _subject_seed(subject: Path) -> int:
    """The simulation seed in ``sim.json`` (``-1`` when there is none)."""
    card = subject / "sim.json"
    try:
        return int(json.loads(card.read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


class SubjectPairDataset(torch.utils.data.Dataset):
    """Training pairs from the subjects of a dataset folder (see the module docstring).

    Args:
        dataset_dir: a dataset folder (its ``sub-<label>`` folders holding ``raw.h5``), a subject
            folder, or a list of them (:func:`mrf_monai.io.subjects.find_subjects`).
        dictionary: the :class:`~mrf_monai.physics.dictionary.MRFDictionary` used at inference:
            its ``basis`` (the subspace) and ``sequence`` (every subject's ``raw.h5`` must have it).
        rank: leading basis components to keep (default: all of the dictionary's).
        device: where the gridding, the signal table and the reference are computed.
        patch_size: if given, return a ``patch_size`` x ``patch_size`` crop drawn from ``seed``
            and the item index (the scale is still computed on the whole slice).
        seed: seed of those crops.
        phase: PD phase of the reference: ``"auto"`` (the ``desc-phase_PDmap`` file when the
            subject has it, else estimated), ``"file"`` (required: subjects without it are bad
            subjects) or ``"estimate"`` (always estimated, :func:`estimate_pd_phase`).
        phase_smoothing_mm: Gaussian low-pass standard deviation of the estimate, mm.
        table_step: node spacing of :class:`CompressedSignalTable` (natural-log units).
        table_b1_step: B1 spacing of the B1 signal table of subjects with a reference B1 map
            (nodes ``1 + k * step`` covering their B1 range; module docstring).
        cache_dir: folder to cache the signal table in (optional).
        quantile: quantile of the normalisation scale.
        on_error: ``"skip"`` bad subjects with one warning listing them (an error when none is
            left) or ``"raise"`` at the first one.
        dcf_iter, eps, backend: gridding options (as ``SubspaceGridder``; keep the defaults
            to match inference).

    Attributes:
        items: ``(subject folder, slice index in raw.h5)`` of every item.
        skipped: ``(file, reason)`` of every subject left out.
        table: the B1 = 1 signal table (subjects without a reference B1 map).
        b1_table: the signal table with a B1 axis, or ``None`` when no subject has a B1 map.
        b1_ranges: ``{subject folder: (min, max)}`` B1 where PD > 0 of the subjects with a map.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike | Sequence[str | os.PathLike],
        dictionary: Any,
        rank: int | None = None,
        device: torch.device | str = "cpu",
        patch_size: int | None = None,
        seed: int = 0,
        phase: str = "auto",
        phase_smoothing_mm: float = DEFAULT_PHASE_SMOOTHING_MM,
        table_step: float = 0.01,
        cache_dir: str | Path | None = None,
        quantile: float = 0.99,
        on_error: str = "skip",
        dcf_iter: int = 15,
        eps: float = 1e-6,
        backend: str = "auto",
        table_b1_step: float = 0.05,
    ) -> None:
        if phase not in _PHASE_MODES:
            raise ValueError(f"phase must be one of {_PHASE_MODES}, got {phase!r}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if phase_smoothing_mm < 0:
            raise ValueError(f"phase_smoothing_mm must be >= 0 (mm), got {phase_smoothing_mm}")
        if patch_size is not None and patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if not 0 < float(table_b1_step) <= 0.25:
            raise ValueError(f"table_b1_step must be in (0, 0.25], got {table_b1_step}")
        basis = torch.as_tensor(dictionary.basis)
        rank = basis.shape[1] if rank is None else int(rank)
        if not 1 <= rank <= basis.shape[1]:
            raise ValueError(f"rank must be between 1 and the dictionary's rank {basis.shape[1]}, got {rank}")
        self.sequence: MRFSequence = dictionary.sequence
        self.device = torch.device(device)
        self.basis = basis[:, :rank].to(self.device, torch.complex64)
        self.rank = rank
        self.patch_size = patch_size
        self.seed = int(seed)
        self.phase = phase
        self.phase_smoothing_mm = float(phase_smoothing_mm)
        self.quantile = quantile
        self.gridding_options = {"dcf_iter": int(dcf_iter), "eps": float(eps), "backend": backend}

        self.items: list[tuple[Path, int]] = []
        self.skipped: list[tuple[Path, str]] = []
        self._seeds: dict[Path, int] = {}
        self.b1_ranges: dict[Path, tuple[float, float]] = {}
        for subject in find_subjects(dataset_dir):
            try:
                n_slices = self.check_subject(subject)
            except (SubjectDataError, ValueError, FileNotFoundError) as err:
                if on_error == "raise":
                    raise
                self.skipped.append((subject, str(err)))
                continue
            self.items += [(subject, s) for s in range(n_slices)]
            self._seeds[subject] = _subject_seed(subject)
        if self.skipped:
            listing = "\n".join(f"  {path.name}: {reason}" for path, reason in self.skipped)
            if not self.items:
                raise SubjectDataError(
                    f"no usable subject in {dataset_dir}; every subject was left out:\n{listing}\n"
                    "Fix or remove these subjects (training needs sub-<label>/raw.h5 and ref/ maps)."
                )
            warnings.warn(
                f"SubjectPairDataset: {len(self.skipped)} subject(s) of {dataset_dir} left out:\n{listing}",
                stacklevel=2,
            )
        self.table = CompressedSignalTable(
            self.sequence, self.basis, table_step, device=self.device, cache_dir=cache_dir
        )
        self.b1_table: CompressedSignalTable | None = None
        if self.b1_ranges:  # only when some subject needs it, once (not in every DataLoader worker)
            lo = min(r[0] for r in self.b1_ranges.values())
            hi = max(r[1] for r in self.b1_ranges.values())
            self.b1_table = CompressedSignalTable(
                self.sequence,
                self.basis,
                table_step,
                device=self.device,
                cache_dir=cache_dir,
                b1_values=_b1_table_nodes(lo, hi, float(table_b1_step)),
            )
        self._lock = threading.Lock()
        self._states: dict[int, SimpleNamespace] = {}

    # ------------------------------------------------------------------ checks
    def check_subject(self, subject: str | os.PathLike) -> int:
        """Check that a subject folder can give training pairs; returns its number of slices.

        A subject with a reference B1 map (``ref/sub-<label>_TB1map.nii.gz``) gets its B1 range
        where PD > 0 recorded in :attr:`b1_ranges`.

        Raises:
            SubjectDataError (or the reader's ``RawDataError``/``FileNotFoundError``/``ValueError``):
                the message names the file and the problem.
        """
        subject = Path(subject)
        raw_path = subject / RAW_NAME
        raw = read_raw(raw_path)  # RawDataError names the file (corrupt, NaN k-space, ...)
        if raw.sequence != self.sequence:
            raise SubjectDataError(
                f"{raw_path}: its sequence ({raw.sequence.sequence_type}, {raw.sequence.n_frames} frames, "
                f"key {raw.sequence.key()}) differs from the dictionary's ({self.sequence.sequence_type}, "
                f"{self.sequence.n_frames} frames, key {self.sequence.key()}); build the dictionary for this "
                "sequence (the bundles do when `sequence` follows `train_dir`) or remove the subject"
            )
        ref = read_reference(subject)  # names a missing or unreadable file
        expected = (*raw.matrix, raw.n_slices)
        t1_path = reference_path(subject, "T1map")
        if ref["t1_s"].shape != expected:
            raise SubjectDataError(
                f"{t1_path}: reference maps have shape {ref['t1_s'].shape} but {raw_path} has matrix "
                f"{raw.matrix} and {raw.n_slices} slice(s), so (Nx, Ny, S) = {expected} is needed"
            )
        if self.phase == "file" and "pd_phase_rad" not in ref:
            raise SubjectDataError(
                f"{reference_path(subject, PD_PHASE_SUFFIX)} not found (phase='file' needs the PD phase "
                "map); use phase='auto' to estimate the phase from the raw data instead"
            )
        suffixes = {"t1_s": "T1map", "t2_s": "T2map", "pd": "PDmap", "pd_phase_rad": PD_PHASE_SUFFIX}
        for key, suffix in suffixes.items():
            if key in ref and not np.all(np.isfinite(ref[key])):
                n_bad = int((~np.isfinite(ref[key])).sum())
                raise SubjectDataError(
                    f"{reference_path(subject, suffix)}: {n_bad} NaN/Inf value(s); reference maps must be "
                    "finite (0 outside the object)"
                )
        has = ref["pd"] > 0
        if not np.any(has):
            raise SubjectDataError(f"{reference_path(subject, 'PDmap')}: PD is zero everywhere (no signal)")
        if np.any(ref["t1_s"][has] <= 0) or np.any(ref["t2_s"][has] <= 0):
            raise SubjectDataError(
                f"{t1_path} or its T2map: T1 and T2 must be positive (seconds) wherever PD > 0"
            )
        b1_path = reference_b1_path(subject)
        if b1_path.is_file():
            try:
                b1 = read_b1_map(b1_path, raw)  # names the file: shape, affine, units
            except ValueError as err:
                raise SubjectDataError(str(err)) from err
            b1_has = b1[has]
            bad = ~np.isfinite(b1_has) | (b1_has <= 0)
            if np.any(bad):
                raise SubjectDataError(
                    f"{b1_path}: {int(bad.sum())} voxel(s) with PD > 0 have no positive finite B1; the "
                    "reference B1 map must give the field wherever there is signal (or remove the file)"
                )
            self.b1_ranges[subject] = (float(b1_has.min()), float(b1_has.max()))
        return raw.n_slices

    # ------------------------------------------------------------------ data
    def __len__(self) -> int:
        return len(self.items)

    def _state(self) -> SimpleNamespace:
        """Per-thread gridder (its density-compensation cache) and last raw file read."""
        key = threading.get_ident()
        with self._lock:
            state = self._states.get(key)
            if state is None:
                gridder = SubspaceGridder(device=self.device, **self.gridding_options)
                state = SimpleNamespace(gridder=gridder, raw_path=None, raw=None)
                self._states[key] = state
        return state

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        state = dict(self.__dict__)
        state["_lock"], state["_states"] = None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _raw(self, raw_path: Path) -> RawSubject:
        state = self._state()
        if state.raw_path != raw_path:
            state.raw, state.raw_path = read_raw(raw_path), raw_path
        return state.raw

    def reference_signal(
        self, t1_s: torch.Tensor, t2_s: torch.Tensor, pd: torch.Tensor, b1: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(R, Nx, Ny)`` complex64 ``pd * basis^H EPG(T1, T2[, B1])`` (zero where ``pd == 0``).

        ``t1_s``, ``t2_s``: seconds; ``pd``: real (magnitude) or complex PD; ``b1``: relative
        transmit field (``None``: B1 = 1, the plain table), all ``(Nx, Ny)``.

        Raises:
            ValueError: ``b1`` given but the dataset has no B1 table (no subject has a B1 map).
        """
        pd = torch.as_tensor(pd).to(self.device, torch.complex64)
        has = pd.abs() > 0
        t1 = torch.as_tensor(t1_s).to(self.device)
        t2 = torch.as_tensor(t2_s).to(self.device)
        c = torch.zeros(self.rank, *pd.shape, dtype=torch.complex64, device=self.device)
        if b1 is None:
            comp = self.table(t1[has], t2[has])
        elif self.b1_table is None:
            raise ValueError(
                "this dataset has no B1 signal table (none of its subjects has a reference B1 map)"
            )
        else:
            comp = self.b1_table(t1[has], t2[has], torch.as_tensor(b1).to(self.device)[has])
        c[:, has] = (comp * pd[has][:, None]).T
        return c

    def make_pair(self, index: int) -> dict[str, Any]:
        """The whole-slice pair of item ``index``.

        Returns the normalised ``image``/``cond`` channels and ``scale``, the complex
        ``reference``/``condition`` before normalisation, the PD phase used (``phase_rad``,
        ``(Nx, Ny)``) and where it came from (``phase_source``: ``"file"`` or ``"estimate"``), the
        B1 map of the reference (``b1``: ``(Nx, Ny)``, or ``None`` for B1 = 1), ``subject``
        (folder), ``seed`` and ``slice_index``.
        """
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.items)} slices")
        subject, s = self.items[index]
        raw_path = subject / RAW_NAME
        try:
            raw = self._raw(raw_path)
            cond = self._state().gridder(raw, s, SimpleNamespace(basis=self.basis))["tsmi"]
            cond = torch.as_tensor(cond).to(self.device, torch.complex64)
            ref = read_reference(subject)
            t1 = torch.from_numpy(np.ascontiguousarray(ref["t1_s"][..., s]))
            t2 = torch.from_numpy(np.ascontiguousarray(ref["t2_s"][..., s]))
            pd = torch.from_numpy(np.ascontiguousarray(ref["pd"][..., s]))
            b1 = None
            if subject in self.b1_ranges:  # the field its k-space was simulated with
                b1 = torch.from_numpy(
                    np.ascontiguousarray(read_b1_map(reference_b1_path(subject), raw)[..., s])
                )
            signal = self.reference_signal(t1, t2, pd, b1)
            if "pd_phase_rad" in ref and self.phase != "estimate":
                phase = torch.from_numpy(np.ascontiguousarray(ref["pd_phase_rad"][..., s])).to(self.device)
                source = "file"
            else:
                sigma_px = self.phase_smoothing_mm / (raw.fov_mm[0] / raw.matrix[0])
                phase = estimate_pd_phase(cond, signal, sigma_px)
                source = "estimate"
            c = signal * torch.polar(torch.ones_like(phase), phase.float())[None]
            pair = normalised_pair(c, cond, self.quantile)
        except (ValueError, FileNotFoundError) as err:
            raise SubjectDataError(f"{raw_path}, slice {s}: {err}") from err
        return {
            **pair,
            "phase_rad": phase,
            "phase_source": source,
            "b1": b1,
            "subject": subject,
            "seed": self._seeds.get(subject, -1),
            "slice_index": int(s),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.make_pair(int(index))
        out = {k: pair[k] for k in ("image", "cond", "scale", "seed", "slice_index")}
        if self.patch_size is not None:
            p = self.patch_size
            h, w = out["image"].shape[-2:]
            if p > min(h, w):
                raise ValueError(f"patch_size {p} is larger than the slice {h} x {w} of {pair['subject']}")
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 0x9A3]))
            i0, j0 = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            out["image"] = out["image"][:, i0 : i0 + p, j0 : j0 + p].contiguous()
            out["cond"] = out["cond"][:, i0 : i0 + p, j0 : j0 + p].contiguous()
            out["patch_origin"] = (i0, j0)
        return out
