"""MRF dictionaries: a (T1, T2[, B1]) grid, simulated fingerprints and their SVD subspace.

The temporal subspace is the uncentred SVD of the dictionary of unit-norm fingerprints
(McGivney et al., IEEE TMI 2014): its R leading right singular vectors are the columns of
``basis`` (T, R). They are computed as the leading eigenvectors of the T x T Gram matrix
``X^H X`` (each chunk's product in the atoms' precision, summed over chunks in float64),
which is far cheaper than an SVD of the N x T dictionary when N >> T; with complex64
atoms the basis agrees with a float64 SVD to better than 1e-5 (checked in the tests).
When every fingerprint is purely imaginary (FISP with pulses about x, see
:mod:`mrf_monai.physics.epg`) the Gram matrix is real and is built from the imaginary
parts alone.

Phase convention of the basis: each column is multiplied by the unit phase that makes its
largest-magnitude entry real and positive (the first such entry on ties), so that the
same dictionary always gives the same basis.

B1 axis
-------
The transmit field scales every flip angle (:mod:`mrf_monai.physics.epg`). ``build_dictionary(...,
b1_values=...)`` repeats the (T1, T2) atoms for every relative B1 value of a grid
(:func:`b1_grid`), B1-major: atoms ``j * M .. (j + 1) * M - 1`` are the M (T1, T2) pairs at
``b1_values[j]``. One basis spans the whole dictionary (its Gram matrix sums over every B1
block), so matching can restrict each voxel to the atoms of its B1
(:func:`mrf_monai.matching.match_dictionary` with ``b1_map``) or search them all. The blocks are
simulated one after the other, so the peak memory is one block's fingerprints plus the unit
atoms (kept as real imaginary parts for FISP: 4 bytes per atom and frame).

Progress
--------
``build_dictionary(..., progress=callback)`` calls ``callback(atoms_done, atoms_total)`` after
each simulated sub-block (a command line shows it as a progress bar; this module does no I/O).
With a callback each block is simulated in about :data:`PROGRESS_STEPS` sub-blocks overall of
atoms consecutive in T2 (at least :data:`PROGRESS_MIN_ATOMS` on the CPU,
:data:`PROGRESS_MIN_ATOMS_ACCELERATOR` elsewhere), written into the block's fingerprints, and
the rest of the build (norms, Gram matrix, basis) is unchanged. The EPG keeps its dephasing
orders per chunk of atoms (:mod:`mrf_monai.physics.epg`), and sub-blocks change those chunks, so
the fingerprints may differ from the build without a callback at the level of the EPG state
truncation (measured: 5e-5 of M0 at most for the 1000-frame Jiang schedule, float32 rounding
for 60 frames); without a callback each block is one EPG call, as above.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .epg import simulate
from .sequence import MRFSequence

__all__ = ["MRFDictionary", "t1t2_grid", "b1_grid", "build_dictionary", "temporal_basis"]

#: With a progress callback: about this many sub-blocks over the whole dictionary...
PROGRESS_STEPS = 50
#: ... of at least this many atoms on the CPU (so that the EPG still has chunks for every thread)
PROGRESS_MIN_ATOMS = 1024
#: ... and on accelerators (the size of the EPG's own chunks there, so no kernel gets smaller).
PROGRESS_MIN_ATOMS_ACCELERATOR = 65536


def _geometric(lo: float, hi: float, step: float) -> torch.Tensor:
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"range ({lo}, {hi}) must satisfy 0 < low <= high (seconds)")
    n = int(math.floor(math.log(hi / lo) / math.log1p(step) + 1e-9)) + 1
    return lo * (1.0 + step) ** torch.arange(n, dtype=torch.float64)


def t1t2_grid(
    t1_range_s: tuple[float, float] = (0.05, 5.0),
    t2_range_s: tuple[float, float] = (0.005, 3.0),
    step: float = 0.03,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (T1, T2) pairs of two geometric grids with T2 <= T1.

    Args:
        t1_range_s: smallest and largest T1, seconds (both included when on the grid).
        t2_range_s: smallest and largest T2, seconds.
        step: relative increment between neighbouring values (0.03 = 3 %).
        dtype: floating dtype of the result.

    Returns:
        ``(t1_s, t2_s)``, each of shape (N,), ordered by T1 then T2.
    """
    if not step > 0:
        raise ValueError(f"step must be positive (a relative increment such as 0.03), got {step}")
    t1 = _geometric(float(t1_range_s[0]), float(t1_range_s[1]), step)
    t2 = _geometric(float(t2_range_s[0]), float(t2_range_s[1]), step)
    t1g, t2g = torch.meshgrid(t1, t2, indexing="ij")
    keep = t2g <= t1g * (1 + 1e-12)
    if not bool(keep.any()):
        raise ValueError(f"no pair with T2 <= T1 in T1 range {t1_range_s} and T2 range {t2_range_s}")
    return t1g[keep].to(dtype), t2g[keep].to(dtype)


def b1_grid(
    b1_range: tuple[float, float] = (0.6, 1.4), step: float = 0.05, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Evenly spaced relative B1 values ``low, low + step, ...`` up to ``high`` (included when on the grid).

    Values are rounded to 1e-9 so that, e.g., 1.0 is exactly on the default grid.
    """
    lo, hi = float(b1_range[0]), float(b1_range[1])
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"B1 range ({lo}, {hi}) must satisfy 0 < low <= high (relative transmit field)")
    if not step > 0:
        raise ValueError(f"b1_step must be positive (e.g. 0.05), got {step}")
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    values = torch.round((lo + step * torch.arange(n, dtype=torch.float64)) * 1e9) / 1e9
    return values.to(dtype)


@dataclass
class MRFDictionary:
    """Simulated MRF dictionary with its temporal subspace.

    Attributes:
        t1_s: T1 of each atom, seconds (N,).
        t2_s: T2 of each atom, seconds (N,).
        b1: relative transmit field of each atom (N,), or None (B1 = 1).
        basis: (T, R) complex, orthonormal columns (uncentred SVD of the unit-norm atoms).
        compressed: (N, R) complex, ``unit_atoms @ basis.conj()``.
        norms: (N,) 2-norm of each raw fingerprint (signal with M0 = 1).
        fingerprints: (N, T) complex raw fingerprints, or None.
        sequence: the sequence the atoms were simulated for.
        energy: fraction of the unit-norm dictionary's energy that the basis keeps.
    """

    t1_s: torch.Tensor
    t2_s: torch.Tensor
    b1: torch.Tensor | None
    basis: torch.Tensor
    compressed: torch.Tensor
    norms: torch.Tensor
    fingerprints: torch.Tensor | None
    sequence: MRFSequence
    energy: float

    def __post_init__(self) -> None:
        n, (t, r) = self.t1_s.shape[0], self.basis.shape
        checks = [
            (self.t2_s.shape == (n,), f"t2_s has shape {tuple(self.t2_s.shape)}, expected ({n},)"),
            (self.b1 is None or self.b1.shape == (n,), f"b1 must have shape ({n},)"),
            (
                self.compressed.shape == (n, r),
                f"compressed has shape {tuple(self.compressed.shape)}, expected ({n}, {r})",
            ),
            (self.norms.shape == (n,), f"norms has shape {tuple(self.norms.shape)}, expected ({n},)"),
            (
                t == self.sequence.n_frames,
                f"basis has {t} rows but the sequence has {self.sequence.n_frames} frames",
            ),
            (
                self.fingerprints is None or self.fingerprints.shape == (n, t),
                f"fingerprints must have shape ({n}, {t})",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"inconsistent MRFDictionary: {msg}")

    @property
    def rank(self) -> int:
        """Number of subspace components R."""
        return int(self.basis.shape[1])

    @property
    def n_atoms(self) -> int:
        """Number of atoms N."""
        return int(self.t1_s.shape[0])

    @property
    def n_frames(self) -> int:
        """Number of time frames T."""
        return int(self.basis.shape[0])

    @property
    def device(self) -> torch.device:
        return self.compressed.device

    @property
    def b1_values(self) -> torch.Tensor | None:
        """Sorted distinct B1 values of the atoms (the B1 grid), or None without a B1 axis."""
        return None if self.b1 is None else torch.unique(self.b1)

    def to(self, device: torch.device | str) -> MRFDictionary:
        """A copy with every tensor on ``device``."""

        def mv(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device)

        return replace(
            self,
            t1_s=mv(self.t1_s),
            t2_s=mv(self.t2_s),
            b1=mv(self.b1),
            basis=mv(self.basis),
            compressed=mv(self.compressed),
            norms=mv(self.norms),
            fingerprints=mv(self.fingerprints),
        )

    def truncate_rank(self, rank: int) -> MRFDictionary:
        """The same dictionary keeping only the ``rank`` leading subspace components.

        The kept energy is recomputed from the compressed unit-norm atoms
        (``mean_n sum_r |c[n, r]|^2``), which is exact for an orthonormal basis.
        """
        if not 1 <= rank <= self.rank:
            raise ValueError(f"cannot keep rank {rank} of a rank-{self.rank} dictionary")
        compressed = self.compressed[:, :rank]
        energy = float(compressed.abs().square().sum(dim=1).double().mean()) if self.n_atoms else 0.0
        return replace(self, basis=self.basis[:, :rank], compressed=compressed, energy=energy)


def _fix_phase(vectors: torch.Tensor) -> torch.Tensor:
    """Rotate each column so that its largest-magnitude entry is real and positive."""
    idx = vectors.abs().argmax(dim=0)
    pivot = vectors.gather(0, idx[None, :])
    phase = pivot / pivot.abs().clamp_min(torch.finfo(vectors.abs().dtype).tiny)
    return vectors * phase.conj()


def _gram_add(gram: torch.Tensor, x: torch.Tensor, chunk_size: int) -> None:
    """``gram += x^H x``, each chunk's product in ``x``'s precision, the sum in float64."""
    for start in range(0, x.shape[0], chunk_size):
        part = x[start : start + chunk_size]
        gram += (part.mH @ part).to(gram.dtype)


def _basis_from_gram(gram: torch.Tensor, rank: int, cdtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """Leading ``rank`` eigenvectors of the Gram matrix (phase fixed) and their energy fraction."""
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    total = float(evals.clamp_min(0).sum())
    energy = float(evals[:rank].clamp_min(0).sum()) / total if total > 0 else 0.0
    basis = _fix_phase(evecs[:, :rank].to(torch.complex128))
    return basis.to(cdtype), energy


def temporal_basis(unit_atoms: torch.Tensor, rank: int, chunk_size: int = 8192) -> tuple[torch.Tensor, float]:
    """Leading ``rank`` right singular vectors of ``unit_atoms`` (N, T) and the kept energy.

    Uses the eigen-decomposition of the Gram matrix (see module docs).

    Returns:
        ``(basis (T, rank) with unit_atoms' complex dtype, energy fraction)``.
    """
    n, t = unit_atoms.shape
    if not 1 <= rank <= t:
        raise ValueError(f"rank must lie in [1, {t}] (the number of frames), got {rank}")
    cdtype = unit_atoms.dtype if unit_atoms.is_complex() else torch.complex64
    imaginary_only = unit_atoms.is_complex() and not bool(unit_atoms.real.any())
    real_gram = imaginary_only or not unit_atoms.is_complex()
    gram = torch.zeros(t, t, device=unit_atoms.device, dtype=torch.float64 if real_gram else torch.complex128)
    _gram_add(gram, unit_atoms.imag if imaginary_only else unit_atoms, chunk_size)
    return _basis_from_gram(gram, rank, cdtype)


def _as_atoms(x: torch.Tensor | None, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor | None:
    return None if x is None else torch.as_tensor(x).to(device=device, dtype=dtype).reshape(-1)


def _simulate_in_steps(
    t1_s: torch.Tensor,
    t2_s: torch.Tensor,
    b1: torch.Tensor | None,
    sequence: MRFSequence,
    chunk_size: int | None,
    step: int,
    report: Callable[[int], None],
) -> torch.Tensor:
    """``simulate`` of one block in sub-blocks of ``step`` atoms consecutive in T2 (so that each
    keeps few EPG states where T2 is short); ``report(n)`` after each sub-block of ``n`` atoms."""
    n = t1_s.shape[0]
    cdtype = torch.complex64 if t1_s.dtype == torch.float32 else torch.complex128
    fingerprints = torch.empty(n, sequence.n_frames, dtype=cdtype, device=t1_s.device)
    order = torch.argsort(t2_s, stable=True)
    for start in range(0, n, step):
        idx = order[start : start + step]
        part_b1 = None if b1 is None else b1[idx]
        fingerprints[idx] = simulate(t1_s[idx], t2_s[idx], sequence, part_b1, chunk_size=chunk_size)
        report(int(idx.numel()))
    return fingerprints


def build_dictionary(
    sequence: MRFSequence,
    t1_s: torch.Tensor | None = None,
    t2_s: torch.Tensor | None = None,
    rank: int = 5,
    b1: torch.Tensor | None = None,
    keep_fingerprints: bool = False,
    device: torch.device | str = "cpu",
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    b1_values: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MRFDictionary:
    """Simulate a dictionary for ``sequence`` and compress it to a rank-``rank`` subspace.

    Args:
        sequence: the MRF schedule.
        t1_s, t2_s: atoms' T1 and T2 in seconds (N,); both None = :func:`t1t2_grid` defaults.
        rank: number of subspace components R kept.
        b1: relative B1 of each atom (N,), or None for B1 = 1.
        keep_fingerprints: also keep the raw (N, T) fingerprints.
        device: where to simulate and where the result lives.
        chunk_size: atoms per EPG chunk (None: chosen for the device).
        dtype: float32 (complex64 outputs, the default) or float64.
        b1_values: a B1 axis (e.g. :func:`b1_grid`): the (T1, T2) atoms are repeated for each
            value, B1-major (module docs); exclusive with ``b1``.
        progress: called as ``progress(atoms_done, atoms_total)`` after each simulated
            sub-block (module docs, "Progress"); None simulates each block in one call.

    Returns:
        :class:`MRFDictionary` with unit-norm compressed atoms, norms and the basis.
    """
    if (t1_s is None) != (t2_s is None):
        raise ValueError("give both t1_s and t2_s, or neither for the default grid")
    if t1_s is None:
        t1_s, t2_s = t1t2_grid(dtype=dtype)
    t1_s, t2_s = _as_atoms(t1_s, device, dtype), _as_atoms(t2_s, device, dtype)
    if t1_s.shape != t2_s.shape:
        raise ValueError(f"t1_s has {t1_s.numel()} values and t2_s {t2_s.numel()}; give one pair per atom")
    b1 = _as_atoms(b1, device, dtype)
    if b1 is not None and b1.shape != t1_s.shape:
        raise ValueError(f"b1 has {b1.numel()} values for {t1_s.numel()} atoms; give one per atom")
    if b1_values is not None:
        if b1 is not None:
            raise ValueError("give b1 (one value per atom) or b1_values (a B1 axis), not both")
        b1_values = _as_atoms(b1_values, device, dtype)
        if (
            b1_values.numel() == 0
            or bool((b1_values <= 0).any())
            or not bool(torch.isfinite(b1_values).all())
        ):
            raise ValueError(
                "b1_values must be positive relative transmit fields, e.g. b1_grid((0.6, 1.4), 0.05)"
            )
        if torch.unique(b1_values).numel() != b1_values.numel():
            raise ValueError("b1_values holds duplicates; give each B1 value once")
    if not 1 <= rank <= sequence.n_frames:
        raise ValueError(f"rank must lie in [1, {sequence.n_frames}] (the number of frames), got {rank}")

    # blocks of atoms simulated one after the other: one per B1 value, or all atoms at once
    if b1_values is None:
        blocks = [(t1_s, t2_s, b1)]
    else:
        blocks = [(t1_s, t2_s, torch.full_like(t1_s, float(v))) for v in b1_values]
    t = sequence.n_frames
    total = t1_s.numel() * len(blocks)
    done = 0

    def report(n_atoms: int) -> None:
        nonlocal done
        done += n_atoms
        progress(done, total)

    if progress is not None:
        least = PROGRESS_MIN_ATOMS if t1_s.device.type == "cpu" else PROGRESS_MIN_ATOMS_ACCELERATOR
        step = max(least, -(-total // PROGRESS_STEPS))
    units, norms_list, raws = [], [], []
    gram = None
    for bt1, bt2, bb1 in blocks:
        if progress is None:
            fingerprints = simulate(bt1, bt2, sequence, bb1, chunk_size=chunk_size)
        else:
            fingerprints = _simulate_in_steps(bt1, bt2, bb1, sequence, chunk_size, step, report)
        norms = torch.linalg.vector_norm(fingerprints, dim=1)
        inv = 1.0 / norms.clamp_min(torch.finfo(norms.dtype).tiny)[:, None]
        if keep_fingerprints:
            raws.append(fingerprints)
            unit = fingerprints * inv
        else:
            unit = fingerprints.mul_(inv)  # in place saves N x T
        if not bool(unit.real.any()):
            unit = unit.imag.clone()  # FISP atoms are purely imaginary: keep half the memory
        if gram is None:
            gram = torch.zeros(
                t, t, device=unit.device, dtype=torch.complex128 if unit.is_complex() else torch.float64
            )
        elif unit.is_complex() and not gram.is_complex():
            gram = gram.to(torch.complex128)
        _gram_add(gram, unit, 8192)
        units.append(unit)
        norms_list.append(norms)
        del fingerprints
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    basis, energy = _basis_from_gram(gram, rank, cdtype)
    conj = basis.conj().resolve_conj()
    compressed = torch.cat(
        [u @ conj if u.is_complex() else 1j * torch.complex(u @ conj.real, u @ conj.imag) for u in units]
    )
    del units
    if b1_values is not None:
        n_pairs = t1_s.numel()
        b1 = b1_values.repeat_interleave(n_pairs)
        t1_s, t2_s = t1_s.repeat(b1_values.numel()), t2_s.repeat(b1_values.numel())
    return MRFDictionary(
        t1_s=t1_s,
        t2_s=t2_s,
        b1=b1,
        basis=basis,
        compressed=compressed,
        norms=torch.cat(norms_list),
        fingerprints=torch.cat(raws) if keep_fingerprints else None,
        sequence=sequence,
        energy=energy,
    )
