"""Compressed FISP fingerprints on a precomputed (T1, T2[, B1]) table, for training pairs.

:class:`CompressedSignalTable` holds ``basis^H EPG(T1, T2[, B1])`` on a fine log-spaced
(T1, T2) grid and interpolates it: bilinearly in ``(log T1, log T2)`` and, with a B1 axis,
linearly in B1 as well (trilinear). Both training-pair datasets
(:class:`~mrf_monai.simulation.pairs.SimulatedPairDataset`,
:class:`~mrf_monai.simulation.subject_pairs.SubjectPairDataset`) make their references with it.

Accuracy (compressed rank-5 fingerprints of the 200-frame protocol, relative 2-norm against the
exact EPG): at 1 % (T1, T2) steps about 1e-5. Linear interpolation in B1 is coarser: 300 random
(T1, T2, B1) with B1 in 0.75-1.25 give, at B1 steps of 0.05 (the dictionaries' B1 step), a median
error of 2.3e-4 and a maximum of 1.2e-2 (the largest errors come from long-T2 fluid, T2 about
1-2 s, whose signal oscillates in B1; below T2 = 0.2 s the full-fingerprint error is at most
4.1e-3); at 0.025:
median 5.9e-5, maximum 7.0e-3. A cubic (4-point) interpolation in B1 lowers the median 25x but
not the maximum, so the table stays linear. A B1 axis of ``n`` values costs ``n`` times the
plain table (time and memory).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from mrf_monai.io.atomic import atomic_write_path
from mrf_monai.phantoms.tissues import T1_RANGE_S, T2_RANGE_S
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import MRFSequence

__all__ = ["CompressedSignalTable"]


def _check_b1_values(b1_values: torch.Tensor | Sequence[float]) -> tuple[float, float, int]:
    """``(first, step, count)`` of an evenly spaced ascending B1 grid (at least two values)."""
    b = torch.as_tensor(b1_values, dtype=torch.float64).reshape(-1)
    if b.numel() < 2:
        raise ValueError(
            f"b1_values must hold at least two B1 values (a grid to interpolate), got {b.tolist()}"
        )
    if not bool(torch.isfinite(b).all()) or float(b.min()) <= 0:
        raise ValueError(f"b1_values must be positive finite relative B1 values, got {b.tolist()}")
    steps = b[1:] - b[:-1]
    step = float(steps.mean())
    if step <= 0 or float((steps - step).abs().max()) > 1e-6 * max(1.0, step):
        raise ValueError(
            "b1_values must be evenly spaced and ascending (e.g. mrf_monai.physics.dictionary.b1_grid), "
            f"got {b.tolist()}"
        )
    return round(float(b[0]), 6), round(step, 6), int(b.numel())  # float32 grids: 1.4, not 1.39999998


class CompressedSignalTable:
    """Compressed FISP fingerprints ``basis^H EPG(T1, T2[, B1])`` on a log-spaced (T1, T2) table.

    Nodes are ``T1 = t1_min * exp(step * i)`` and ``T2 = t2_min * exp(step * j)``; only nodes
    that some cell with ``T2 <= T1`` needs are simulated (the others stay 0). Lookups
    interpolate bilinearly in ``(log T1, log T2)`` and clamp to the table's range. With
    ``b1_values`` the table has a B1 axis too (every (T1, T2) node simulated at each B1, flip
    angles scaled by it) and lookups also interpolate linearly in B1, clamped to the grid.

    Args:
        sequence: the MRF sequence (T frames).
        basis: ``(T, R)`` complex temporal basis.
        step: spacing of the nodes in natural-log units (0.01 = 1 %).
        t1_range_s, t2_range_s: table range, seconds (default: the dictionary defaults).
        device: where the table is simulated and kept.
        cache_dir: optional folder: the table is saved there (keyed by the sequence, basis,
            step, ranges and B1 grid) and loaded instead of recomputed next time.
        b1_values: optional evenly spaced ascending relative B1 values (e.g.
            ``b1_grid((0.75, 1.25), 0.05)``); ``None``: B1 = 1 only (no B1 axis).
    """

    def __init__(
        self,
        sequence: MRFSequence,
        basis: torch.Tensor,
        step: float = 0.01,
        t1_range_s: tuple[float, float] = T1_RANGE_S,
        t2_range_s: tuple[float, float] = T2_RANGE_S,
        device: torch.device | str = "cpu",
        cache_dir: str | Path | None = None,
        b1_values: torch.Tensor | Sequence[float] | None = None,
    ) -> None:
        if not 0 < step <= 0.1:
            raise ValueError(f"step must be in (0, 0.1] (natural-log units; 0.01 = 1 %), got {step}")
        basis = torch.as_tensor(basis).to(device, torch.complex64)
        if basis.ndim != 2 or basis.shape[0] != sequence.n_frames:
            raise ValueError(
                f"basis must be (T, R) with T = {sequence.n_frames} frames of the sequence, "
                f"got {tuple(basis.shape)}"
            )
        self.step = float(step)
        self.log_t1_min = math.log(t1_range_s[0])
        self.log_t2_min = math.log(t2_range_s[0])
        self.n1 = int(math.ceil(math.log(t1_range_s[1] / t1_range_s[0]) / step)) + 1
        self.n2 = int(math.ceil(math.log(t2_range_s[1] / t2_range_s[0]) / step)) + 1
        self.rank = int(basis.shape[1])
        self.device = torch.device(device)
        #: ``(first, step, count)`` of the B1 axis, or ``None`` (B1 = 1 only).
        self.b1_axis = None if b1_values is None else _check_b1_values(b1_values)
        self.nb = 1 if self.b1_axis is None else self.b1_axis[2]
        described = repr((step, tuple(t1_range_s), tuple(t2_range_s)))
        if self.b1_axis is not None:  # the B1 = 1 table keeps its key (and its cached file)
            described += repr(("b1", *self.b1_axis))
        key = hashlib.sha1(
            (sequence.key() + described).encode() + basis.detach().cpu().numpy().tobytes()
        ).hexdigest()[:16]
        name = f"signal_table_{key}.pt" if self.b1_axis is None else f"signal_table_b1_{key}.pt"
        path = None if cache_dir is None else Path(cache_dir) / name
        if path is not None and path.exists():
            table = torch.load(path, map_location="cpu", weights_only=True)
        else:
            planes = [self._simulate(sequence, basis, b1) for b1 in self.b1_values]
            table = planes[0] if self.b1_axis is None else torch.stack(planes)
            if path is not None:
                with atomic_write_path(path) as tmp:
                    torch.save(table.cpu(), tmp)
        self.table = table.to(self.device).reshape(self.nb * self.n1 * self.n2, self.rank)

    @property
    def b1_values(self) -> list[float | None]:
        """The B1 values of the table's planes (``[None]``: one plane at the nominal flip angles)."""
        if self.b1_axis is None:
            return [None]
        first, step, count = self.b1_axis
        return [round(first + step * k, 6) for k in range(count)]

    def _simulate(self, sequence: MRFSequence, basis: torch.Tensor, b1: float | None) -> torch.Tensor:
        dev = basis.device
        lt1 = self.log_t1_min + self.step * torch.arange(self.n1, dtype=torch.float64)
        lt2 = self.log_t2_min + self.step * torch.arange(self.n2, dtype=torch.float64)
        g1, g2 = torch.meshgrid(lt1, lt2, indexing="ij")
        # nodes used by cells holding some T2 <= T1 (corner (i, j + 1) of a cell at the diagonal)
        need = g2 <= g1 + 2.0 * self.step + 1e-9
        t1 = g1[need].exp().to(dev, torch.float32)
        t2 = g2[need].exp().to(dev, torch.float32)
        table = torch.zeros(self.n1, self.n2, self.rank, dtype=torch.complex64, device=dev)
        comp = torch.empty(t1.shape[0], self.rank, dtype=torch.complex64, device=dev)
        chunk = 65536
        for s in range(0, t1.shape[0], chunk):
            sig = simulate_fisp(t1[s : s + chunk], t2[s : s + chunk], sequence, b1=b1)
            comp[s : s + chunk] = sig @ basis.conj()
        table[need.to(dev)] = comp
        return table

    def to(self, device: torch.device | str) -> CompressedSignalTable:
        """Move the table to ``device`` (in place); returns ``self``."""
        self.device = torch.device(device)
        self.table = self.table.to(self.device)
        return self

    def __call__(
        self, t1_s: torch.Tensor, t2_s: torch.Tensor, b1: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """Compressed fingerprints ``(..., R)`` complex64 of ``t1_s``, ``t2_s`` (seconds, same shape)
        and, for a table with a B1 axis, ``b1`` (relative B1, same shape or a number; default 1).

        Raises:
            ValueError: shapes that differ, or ``b1`` for a table without a B1 axis.
        """
        t1 = torch.as_tensor(t1_s, device=self.device).to(torch.float32)
        t2 = torch.as_tensor(t2_s, device=self.device).to(torch.float32)
        if t1.shape != t2.shape:
            raise ValueError(
                f"t1_s and t2_s must have one shape, got {tuple(t1.shape)} and {tuple(t2.shape)}"
            )
        if self.b1_axis is None and b1 is not None:
            raise ValueError(
                "this signal table has no B1 axis (B1 = 1 only); build it with b1_values to look up B1"
            )
        u = ((t1.clamp_min(1e-12).log() - self.log_t1_min) / self.step).clamp(0.0, self.n1 - 1 - 1e-4)
        v = ((t2.clamp_min(1e-12).log() - self.log_t2_min) / self.step).clamp(0.0, self.n2 - 1 - 1e-4)
        i0 = u.floor().long()
        j0 = v.floor().long()
        a = (u - i0).unsqueeze(-1)
        b = (v - j0).unsqueeze(-1)
        base = i0 * self.n2 + j0
        if self.b1_axis is None:
            return self._bilinear(base, a, b)
        first, step, count = self.b1_axis
        b1_t = torch.as_tensor(1.0 if b1 is None else b1, device=self.device).to(torch.float64)
        b1_t = b1_t.expand(t1.shape) if b1_t.ndim == 0 else b1_t
        if b1_t.shape != t1.shape:
            raise ValueError(f"b1 must have the shape of t1_s {tuple(t1.shape)}, got {tuple(b1_t.shape)}")
        w = ((b1_t - first) / step).clamp(0.0, count - 1 - 1e-4)
        k0 = w.floor().long()
        c = (w - k0).to(torch.float32).unsqueeze(-1)
        base = base + k0 * (self.n1 * self.n2)
        return (1 - c) * self._bilinear(base, a, b) + c * self._bilinear(base + self.n1 * self.n2, a, b)

    def _bilinear(self, base: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        tab = self.table
        c00, c01 = tab[base], tab[base + 1]
        c10, c11 = tab[base + self.n2], tab[base + self.n2 + 1]
        return (1 - a) * ((1 - b) * c00 + b * c01) + a * ((1 - b) * c10 + b * c11)
