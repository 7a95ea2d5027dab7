"""On-the-fly training pairs: (reference compressed TSMI, aliased gridding condition).

Every item is a fresh simulated subject slice (:func:`mrf_monai.phantoms.sample_subject_maps`)
whose seed and template slice derive from the item index, so the dataset is reproducible,
needs no disk and never repeats a subject of another split.

For a slice with maps (T1, T2, PD):

* **reference** ``c = basis^H x`` with ``x[t] = PD * EPG(T1, T2)[t]`` the exact time series:
  ``c[r] = PD * sum_t conj(basis[t, r]) EPG(T1, T2)[t]``. The compressed fingerprint
  ``basis^H EPG(T1, T2)`` of every voxel is interpolated from a table
  (:class:`CompressedSignalTable`) precomputed once per dataset on a fine log-spaced grid
  (default 1 % steps in T1 and T2), bilinearly in ``(log T1, log T2)``: its largest error
  against the exact EPG is about 1e-5 relative at 1 % steps (2.6e-6 at 0.5 %, 4e-5 at
  2 %), far below the noise and the subspace error; ``tests/simulation`` checks it.
* **condition** ``cond = A^H D A c + A^H D n``: the Toeplitz-embedded normal operator of
  the density-compensated subspace gridding (:meth:`SubspaceNufftOperator.grid_normal`,
  kernels computed once per dataset for the protocol's trajectory) plus the gridding of
  complex white k-space noise ``n`` (:meth:`SubspaceNufftOperator.grid`), with the noise
  level of :func:`mrf_monai.simulation.subjects.simulate_subject`
  (``sigma = noise * mean_{coil, t} |sum_ij S_coil x_t|``, here with ``x_t`` expanded from
  the subspace). Apart from the (small) part of the time series outside the subspace,
  this is what gridding the ``raw.h5`` of the same slice gives: the same trajectory,
  density compensation, coil combination and noise statistics.
* **normalisation** (``docs/interfaces.md``): ``scale = quantile(|cond[0]|, 0.99)`` over
  the whole slice; both tensors are divided by it and returned as real channels
  ``[Re c_0..Re c_{R-1}, Im c_0..Im c_{R-1}]`` (float32, ``(2R, H, W)``).

The reference, condition and scale are computed on ``device`` (the phantom itself is drawn
with numpy on the CPU). With ``device="cuda"`` use ``num_workers=0`` in the DataLoader; on
the CPU, worker processes parallelise the generation, each with one torch thread (the
DataLoader's default in workers; in the main process call ``torch.set_num_threads(1)``:
the per-pair kernels are small, and on a loaded machine several threads per process made
them up to 30 times slower).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
from mrf_monai.io.atomic import atomic_write_path
from mrf_monai.phantoms import sample_subject_maps, split_slices
from mrf_monai.phantoms.augment import SPLIT_CODE
from mrf_monai.phantoms.tissues import T1_RANGE_S, T2_RANGE_S
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import MRFSequence
from mrf_monai.transforms.complex import complex_to_channels
from mrf_monai.transforms.intensity import condition_scale  # the same scale as at inference

from .subjects import DEFAULT_NOISE

__all__ = ["CompressedSignalTable", "SimulatedPairDataset"]


def normalised_pair(
    reference: torch.Tensor, condition: torch.Tensor, quantile: float
) -> dict[str, torch.Tensor]:
    """The network's view of a training pair: ``image`` and ``cond`` as ``(2R, H, W)`` float32
    real channels divided by the condition's scale (:func:`condition_scale`, as at inference),
    the 0-d ``scale``, and the complex ``reference`` and ``condition`` ``(R, H, W)`` themselves."""
    scale = condition_scale(condition, quantile)
    return {
        "image": (complex_to_channels(reference) / scale).float(),
        "cond": (complex_to_channels(condition) / scale).float(),
        "scale": scale.float(),
        "reference": reference,
        "condition": condition,
    }


class CompressedSignalTable:
    """Compressed FISP fingerprints ``basis^H EPG(T1, T2)`` on a log-spaced (T1, T2) table.

    Nodes are ``T1 = t1_min * exp(step * i)`` and ``T2 = t2_min * exp(step * j)``; only nodes
    that some cell with ``T2 <= T1`` needs are simulated (the others stay 0). Lookups
    interpolate bilinearly in ``(log T1, log T2)`` and clamp to the table's range.

    Args:
        sequence: the MRF sequence (T frames).
        basis: ``(T, R)`` complex temporal basis.
        step: spacing of the nodes in natural-log units (0.01 = 1 %).
        t1_range_s, t2_range_s: table range, seconds (default: the dictionary defaults).
        device: where the table is simulated and kept.
        cache_dir: optional folder: the table is saved there (keyed by the sequence, basis,
            step and ranges) and loaded instead of recomputed next time.
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
        key = hashlib.sha1(
            (sequence.key() + repr((step, tuple(t1_range_s), tuple(t2_range_s)))).encode()
            + basis.detach().cpu().numpy().tobytes()
        ).hexdigest()[:16]
        path = None if cache_dir is None else Path(cache_dir) / f"signal_table_{key}.pt"
        if path is not None and path.exists():
            table = torch.load(path, map_location="cpu", weights_only=True)
        else:
            table = self._simulate(sequence, basis)
            if path is not None:
                with atomic_write_path(path) as tmp:
                    torch.save(table.cpu(), tmp)
        self.table = table.to(self.device).reshape(self.n1 * self.n2, self.rank)

    def _simulate(self, sequence: MRFSequence, basis: torch.Tensor) -> torch.Tensor:
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
            sig = simulate_fisp(t1[s : s + chunk], t2[s : s + chunk], sequence)
            comp[s : s + chunk] = sig @ basis.conj()
        table[need.to(dev)] = comp
        return table

    def to(self, device: torch.device | str) -> CompressedSignalTable:
        """Move the table to ``device`` (in place); returns ``self``."""
        self.device = torch.device(device)
        self.table = self.table.to(self.device)
        return self

    def __call__(self, t1_s: torch.Tensor, t2_s: torch.Tensor) -> torch.Tensor:
        """Compressed fingerprints ``(..., R)`` complex64 of ``t1_s``, ``t2_s`` (seconds, same shape)."""
        t1 = torch.as_tensor(t1_s, device=self.device).to(torch.float32)
        t2 = torch.as_tensor(t2_s, device=self.device).to(torch.float32)
        if t1.shape != t2.shape:
            raise ValueError(
                f"t1_s and t2_s must have one shape, got {tuple(t1.shape)} and {tuple(t2.shape)}"
            )
        u = ((t1.clamp_min(1e-12).log() - self.log_t1_min) / self.step).clamp(0.0, self.n1 - 1 - 1e-4)
        v = ((t2.clamp_min(1e-12).log() - self.log_t2_min) / self.step).clamp(0.0, self.n2 - 1 - 1e-4)
        i0 = u.floor().long()
        j0 = v.floor().long()
        a = (u - i0).unsqueeze(-1)
        b = (v - j0).unsqueeze(-1)
        base = i0 * self.n2 + j0
        tab = self.table
        c00, c01 = tab[base], tab[base + 1]
        c10, c11 = tab[base + self.n2], tab[base + self.n2 + 1]
        return (1 - a) * ((1 - b) * c00 + b * c01) + a * ((1 - b) * c10 + b * c11)


class SimulatedPairDataset(torch.utils.data.Dataset):
    """Training pairs generated on the fly (see the module docstring).

    Args:
        dictionary: the :class:`~mrf_monai.physics.dictionary.MRFDictionary` used at
            inference (its ``basis`` and ``sequence``: training and inference share the same
            subspace).
        rank: leading basis components to keep (default: all of the dictionary's).
        matrix: image matrix (field of view 230 mm).
        n_samples: samples per spiral interleaf.
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint slices and seeds).
        seed: dataset seed; item ``i`` is subject ``seed * 2**32 + i`` of ``split``.
        length: number of items (``__len__``).
        noise: relative k-space noise (:data:`mrf_monai.simulation.subjects.DEFAULT_NOISE`).
        n_coils: receive coils (:func:`simulate_coil_maps`, as in ``simulate_subject``).
        device: where the reference, condition and Toeplitz kernels are computed.
        patch_size: if given, return a random ``patch_size`` x ``patch_size`` crop (the
            scale is still computed on the whole slice).
        augment: geometric augmentation of the phantoms.
        table_step: node spacing of :class:`CompressedSignalTable`.
        cache_dir: folder to cache the signal table in (optional).
        quantile: quantile of the normalisation scale.
        trajectory: optional ``(T, S, 2)`` trajectory (default: ``mrf_spiral_trajectory``).
        noise_eps: NUFFT accuracy of the noise gridding (the signal uses the exact Toeplitz
            kernels; a 1e-3 relative error on a white-noise realisation changes nothing
            statistically and halves the cost).

    Items are dicts: ``image`` and ``cond`` ``(2R, H, W)`` float32, ``scale`` (0-d float32),
    ``seed`` and ``slice_index`` (the phantom) and, with ``patch_size``, ``patch_origin``.
    """

    def __init__(
        self,
        dictionary: Any,
        rank: int | None = None,
        matrix: int = 230,
        n_samples: int = 920,
        split: str = "train",
        seed: int = 0,
        length: int = 10000,
        noise: float = DEFAULT_NOISE,
        n_coils: int = 1,
        device: torch.device | str = "cpu",
        patch_size: int | None = None,
        augment: bool = True,
        table_step: float = 0.01,
        cache_dir: str | Path | None = None,
        quantile: float = 0.99,
        trajectory: np.ndarray | None = None,
        noise_eps: float = 1e-3,
    ) -> None:
        basis = torch.as_tensor(dictionary.basis)
        rank = basis.shape[1] if rank is None else int(rank)
        if not 1 <= rank <= basis.shape[1]:
            raise ValueError(f"rank must be between 1 and the dictionary's rank {basis.shape[1]}, got {rank}")
        if patch_size is not None and not 1 <= patch_size <= matrix:
            raise ValueError(f"patch_size must be between 1 and matrix = {matrix}, got {patch_size}")
        if length < 1 or seed < 0:
            raise ValueError(f"length must be positive and seed non-negative, got {length}, {seed}")
        split_slices(split)  # validates the split
        self.sequence: MRFSequence = dictionary.sequence
        self.device = torch.device(device)
        self.basis = basis[:, :rank].to(self.device, torch.complex64)
        self.rank = rank
        self.matrix = int(matrix)
        self.n_frames = int(self.basis.shape[0])
        self.split = split
        self.seed = int(seed)
        self.length = int(length)
        self.noise = float(noise)
        self.n_coils = int(n_coils)
        self.patch_size = patch_size
        self.augment = augment
        self.quantile = quantile
        shape = (self.matrix, self.matrix)
        if trajectory is None:
            trajectory, _ = mrf_spiral_trajectory(self.n_frames, self.matrix, n_samples)
        self.traj = torch.as_tensor(np.asarray(trajectory), dtype=torch.float32)
        dcf = pipe_menon_dcf(self.traj, shape)
        self.coil_maps = (
            None if self.n_coils == 1 else simulate_coil_maps(self.n_coils, shape, device=self.device)
        )
        self.operator = SubspaceNufftOperator(
            self.traj.to(self.device),
            self.basis,
            shape,
            self.coil_maps,
            dcf.to(self.device),
            device=self.device,
        )
        self.toeplitz = self.operator.toeplitz(True)  # kernels once per dataset
        # noise is gridded at lower NUFFT accuracy (1e-3 relative: irrelevant for white noise)
        self.noise_operator = SubspaceNufftOperator(
            self.traj.to(self.device),
            self.basis,
            shape,
            self.coil_maps,
            dcf.to(self.device),
            eps=noise_eps,
            device=self.device,
        )
        self.table = CompressedSignalTable(
            self.sequence, self.basis, table_step, device=self.device, cache_dir=cache_dir
        )
        self._slices = split_slices(split)

    def __len__(self) -> int:
        return self.length

    def item_phantom(self, index: int) -> tuple[int, int]:
        """``(subject seed, template slice)`` of item ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        rng = np.random.default_rng(np.random.SeedSequence([SPLIT_CODE[self.split], self.seed, index, 0x9A1]))
        return self.seed * 2**32 + int(index), int(rng.choice(self._slices))

    def reference(self, maps: dict[str, np.ndarray]) -> torch.Tensor:
        """Compressed reference TSMI ``(R, Nx, Ny)`` complex64 of parameter maps."""
        pd = torch.as_tensor(maps["pd"]).to(self.device, torch.complex64)
        has = pd.abs() > 0
        t1 = torch.as_tensor(maps["t1_s"]).to(self.device)
        t2 = torch.as_tensor(maps["t2_s"]).to(self.device)
        c = torch.zeros(self.rank, *pd.shape, dtype=torch.complex64, device=self.device)
        c[:, has] = (self.table(t1[has], t2[has]) * pd[has][:, None]).T
        return c

    def noise_sigma(self, c: torch.Tensor) -> float:
        """k-space noise sigma of a reference ``c`` (same definition as ``simulate_subject``)."""
        if self.coil_maps is None:
            dc = c.sum(dim=(-2, -1))[None]  # (1, R)
        else:
            dc = torch.einsum("cxy,rxy->cr", self.coil_maps, c)
        return float(self.noise * (dc @ self.basis.T).abs().mean())

    def make_pair(self, seed: int, slice_index: int, index_seed: int | None = None) -> dict[str, Any]:
        """The (unpatched) pair of subject ``seed`` at template slice ``slice_index``.

        ``index_seed`` seeds the k-space noise (default: ``seed``). Returns the normalised
        ``image``/``cond`` channels, ``scale`` and the complex ``reference``/``condition``
        before normalisation.
        """
        maps = sample_subject_maps(seed, slice_index, self.matrix, self.split, self.augment)
        c = self.reference(maps)
        cond = self.toeplitz(c)
        sigma = self.noise_sigma(c) if self.noise > 0 else 0.0
        if sigma > 0:
            g = torch.Generator(device=self.device).manual_seed(
                int(seed if index_seed is None else index_seed) % 2**63
            )
            shape = (self.n_coils, self.n_frames, self.traj.shape[1])
            n = torch.randn(*shape, dtype=torch.complex64, generator=g, device=self.device) * sigma
            cond = cond + self.noise_operator.grid(n)
        return {
            **normalised_pair(c, cond, self.quantile),
            "sigma": sigma,
            "seed": int(seed),
            "slice_index": int(slice_index),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        seed, z = self.item_phantom(int(index))
        pair = self.make_pair(seed, z)
        out = {k: pair[k] for k in ("image", "cond", "scale", "seed", "slice_index")}
        if self.patch_size is not None:
            p = self.patch_size
            rng = np.random.default_rng(
                np.random.SeedSequence([SPLIT_CODE[self.split], self.seed, int(index), 0x9A2])
            )
            i0, j0 = (int(rng.integers(0, self.matrix - p + 1)) for _ in range(2))
            out["image"] = out["image"][:, i0 : i0 + p, j0 : j0 + p].contiguous()
            out["cond"] = out["cond"][:, i0 : i0 + p, j0 : j0 + p].contiguous()
            out["patch_origin"] = (i0, j0)
        return out
