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

Protocols: ``SimulatedPairDataset(..., protocol=P)`` (a
:class:`~mrf_monai.acquisition.protocol.Protocol`, or the path of a raw file whose protocol to
use) takes the trajectory (any number of readouts per frame), matrix, FOV and coils from ``P``;
its sequence must be the dictionary's. The phantoms are drawn at the protocol's pixel size
(:func:`mrf_monai.simulation.subjects.protocol_slice_maps`), as ``simulate_subject`` does.

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
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.protocol import Protocol
from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
from mrf_monai.io.atomic import atomic_write_path
from mrf_monai.phantoms import FOV_MM, split_slices
from mrf_monai.phantoms.augment import SPLIT_CODE
from mrf_monai.phantoms.recipe import PhantomRecipe, check_training_seeds, is_validation_seed
from mrf_monai.phantoms.tissues import T1_RANGE_S, T2_RANGE_S
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.physics.sequence import MRFSequence
from mrf_monai.transforms.complex import complex_to_channels
from mrf_monai.transforms.intensity import condition_scale  # the same scale as at inference

from .subjects import DEFAULT_NOISE, SLICE_THICKNESS_MM, protocol_slice_maps

__all__ = ["CompressedSignalTable", "SimulatedPairDataset", "load_protocol"]


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


def _resolve_protocol(
    protocol: Protocol | str | PathLike | None, trajectory: Any, sequence: MRFSequence
) -> Protocol | None:
    """The protocol of ``SimulatedPairDataset(protocol=...)``, checked against the dictionary's sequence."""
    if protocol is None:
        if isinstance(trajectory, str | PathLike):
            raise ValueError("a trajectory file is the trajectory of a raw-file protocol: pass protocol= too")
        return None
    if not isinstance(protocol, Protocol):
        from mrf_monai.io.ismrmrd import read_raw

        protocol = Protocol.from_raw(read_raw(protocol, trajectory))
    elif trajectory is not None:
        raise ValueError("give the trajectory through the protocol, not as trajectory= as well")
    if protocol.sequence != sequence:
        raise ValueError(
            "the protocol's sequence differs from the dictionary's ("
            + ", ".join(protocol.sequence.differences(sequence))
            + "); build the dictionary for the protocol's sequence"
        )
    return protocol


def load_protocol(
    source: Protocol | str | PathLike | None, trajectory: str | PathLike | None = None
) -> Protocol | None:
    """The protocol of a training config's ``protocol`` key: a :class:`Protocol` as it is, the path
    of an ISMRMRD raw file (its sequence, trajectory, matrix, FOV and coils; ``trajectory``: the
    trajectory file of that raw file, data contract section 5), or ``None`` (the built-in one).

    Raises:
        ValueError: a trajectory file without a raw file, or a raw file the reader refuses (the
            message names the file and the problem).
    """
    if source is None or source == "":
        if trajectory not in (None, ""):
            raise ValueError(
                f"trajectory = {trajectory} is the trajectory file of a raw-file protocol: set protocol too"
            )
        return None
    if isinstance(source, Protocol):
        if trajectory not in (None, ""):
            raise ValueError("give the trajectory through the protocol, not as trajectory as well")
        return source
    from mrf_monai.io.ismrmrd import read_raw

    return Protocol.from_raw(read_raw(source, trajectory or None))


def _protocol_settings(
    protocol: Protocol, matrix: int | None, samples_per_readout: int | None, n_coils: int | None
) -> tuple[int, int, int, np.ndarray]:
    """``matrix``, ``samples_per_readout``, ``n_coils`` and the trajectory that a protocol sets."""
    nx, ny = protocol.matrix
    if nx != ny:
        raise ValueError(f"training pairs need a square matrix; the protocol has {nx} x {ny}")
    if matrix is not None and matrix != nx:
        raise ValueError(f"matrix = {matrix} contradicts the protocol's {nx} x {ny}; leave it out")
    if samples_per_readout is not None and samples_per_readout != protocol.samples_per_readout:
        raise ValueError(
            f"samples_per_readout = {samples_per_readout} contradicts the protocol's "
            f"{protocol.samples_per_readout} samples per readout; leave it out"
        )
    coils = protocol.n_coils if n_coils is None else int(n_coils)
    return nx, protocol.samples_per_readout, coils, protocol.trajectory


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
        matrix: image matrix (default 230, or the protocol's; field of view 230 mm).
        samples_per_readout: samples per spiral interleaf (default 920; not with a protocol).
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint slices and seeds).
        seed: dataset seed; item ``i`` is subject ``seed * 2**32 + i`` of ``split``.
        length: number of items (``__len__``).
        noise: relative k-space noise (:data:`mrf_monai.simulation.subjects.DEFAULT_NOISE`).
        n_coils: receive coils (:func:`simulate_coil_maps`, as in ``simulate_subject``; default 1, or
            the protocol's).
        device: where the reference, condition and Toeplitz kernels are computed.
        patch_size: if given, return a random ``patch_size`` x ``patch_size`` crop (the
            scale is still computed on the whole slice).
        augment: geometric augmentation of the phantoms.
        table_step: node spacing of :class:`CompressedSignalTable`.
        cache_dir: folder to cache the signal table in (optional).
        quantile: quantile of the normalisation scale.
        trajectory: optional ``(T, S, 2)`` trajectory (default: ``mrf_spiral_trajectory``); with a
            raw-file ``protocol``, the trajectory file of that raw file (data contract section 5).
        noise_eps: NUFFT accuracy of the noise gridding (the signal uses the exact Toeplitz
            kernels; a 1e-3 relative error on a white-noise realisation changes nothing
            statistically and halves the cost).
        protocol: a :class:`~mrf_monai.acquisition.protocol.Protocol` or the path of an ISMRMRD
            raw file (``Protocol.from_raw(read_raw(path, trajectory))``): its trajectory, square
            matrix, FOV and coils (``n_coils`` overrides the coils; ``matrix`` and
            ``samples_per_readout`` must be left out or agree). Its sequence must equal the dictionary's.
        recipe: the phantom world (:class:`~mrf_monai.phantoms.recipe.PhantomRecipe`, or its
            ``to_dict()`` form from a bundle config; ``None``: today's phantoms). Subjects of
            the reserved validation seeds (dataset seeds ``2**20`` to ``2**20 + 255``, refused
            for ``split="train"``) always get their validation kind's recipe.
        noise_range: ``(low, high)`` factors of ``noise``: item ``i`` is simulated at
            ``noise * f_i`` with ``f_i`` log-uniform in the range (e.g. ``(0.5, 5.0)``), drawn
            from the item's own stream (``None``: every item at ``noise``).

    Items are dicts: ``image`` and ``cond`` ``(2R, H, W)`` float32, ``scale`` (0-d float32),
    ``seed`` and ``slice_index`` (the phantom) and, with ``patch_size``, ``patch_origin``.
    """

    def __init__(
        self,
        dictionary: Any,
        rank: int | None = None,
        matrix: int | None = None,
        samples_per_readout: int | None = None,
        split: str = "train",
        seed: int = 0,
        length: int = 10000,
        noise: float = DEFAULT_NOISE,
        n_coils: int | None = None,
        device: torch.device | str = "cpu",
        patch_size: int | None = None,
        augment: bool = True,
        table_step: float = 0.01,
        cache_dir: str | Path | None = None,
        quantile: float = 0.99,
        trajectory: np.ndarray | str | PathLike | None = None,
        noise_eps: float = 1e-3,
        protocol: Protocol | str | PathLike | None = None,
        recipe: PhantomRecipe | dict | None = None,
        noise_range: tuple[float, float] | None = None,
    ) -> None:
        prot = _resolve_protocol(protocol, trajectory, dictionary.sequence)
        if prot is not None:
            matrix, samples_per_readout, n_coils, trajectory = _protocol_settings(
                prot, matrix, samples_per_readout, n_coils
            )
        matrix = 230 if matrix is None else matrix
        samples_per_readout = 920 if samples_per_readout is None else samples_per_readout
        n_coils = 1 if n_coils is None else n_coils
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
        self.recipe = PhantomRecipe.from_dict(recipe) if isinstance(recipe, dict) else recipe
        if noise_range is not None:
            lo, hi = (float(v) for v in noise_range)
            if not 0.0 < lo <= hi:
                raise ValueError(f"noise_range must be (low, high) with 0 < low <= high, got {noise_range}")
            noise_range = (lo, hi)
        self.noise_range = noise_range
        check_training_seeds(self.seed * 2**32, self.length, split)  # validation seeds are refused
        self.n_coils = int(n_coils)
        self.patch_size = patch_size
        self.augment = augment
        self.quantile = quantile
        self.protocol = prot
        self.fov_mm = prot.fov_mm if prot is not None else (FOV_MM, FOV_MM, SLICE_THICKNESS_MM)
        shape = (self.matrix, self.matrix)
        self._default_trajectory = trajectory is None
        self._samples_per_readout = int(samples_per_readout)
        if trajectory is None:
            trajectory, _ = mrf_spiral_trajectory(self.n_frames, self.matrix, self._samples_per_readout)
        self.traj = torch.as_tensor(np.array(trajectory, dtype=np.float32))
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

    @property
    def training_protocol(self) -> Protocol | None:
        """The protocol these pairs simulate: the given one (with this dataset's coil count), the
        built-in one (:meth:`Protocol.default`) at this matrix, samples per readout and coils, or
        ``None`` for a trajectory given as an array (no complete protocol is known). Written into
        the trained weights (``data.protocol``), where inference checks it against the raw data."""
        if self.protocol is not None:
            prot = self.protocol
            return prot if prot.n_coils == self.n_coils else prot.replace(n_coils=self.n_coils)
        if self._default_trajectory:
            return Protocol.default(self.n_frames, self.matrix, self._samples_per_readout, self.n_coils)
        return None

    def __len__(self) -> int:
        return self.length

    def item_phantom(self, index: int) -> tuple[int, int]:
        """``(subject seed, template slice)`` of item ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        rng = np.random.default_rng(np.random.SeedSequence([SPLIT_CODE[self.split], self.seed, index, 0x9A1]))
        return self.seed * 2**32 + int(index), int(rng.choice(self._slices))

    def item_noise(self, index: int) -> float:
        """Relative noise level of item ``index``: ``noise``, or ``noise * f`` with ``noise_range``."""
        if self.noise_range is None:
            return self.noise
        rng = np.random.default_rng(
            np.random.SeedSequence([SPLIT_CODE[self.split], self.seed, int(index), 0x9A3])
        )
        lo, hi = self.noise_range
        return self.noise * math.exp(rng.uniform(math.log(lo), math.log(hi)))

    def reference(self, maps: dict[str, np.ndarray]) -> torch.Tensor:
        """Compressed reference TSMI ``(R, Nx, Ny)`` complex64 of parameter maps."""
        pd = torch.as_tensor(maps["pd"]).to(self.device, torch.complex64)
        has = pd.abs() > 0
        t1 = torch.as_tensor(maps["t1_s"]).to(self.device)
        t2 = torch.as_tensor(maps["t2_s"]).to(self.device)
        c = torch.zeros(self.rank, *pd.shape, dtype=torch.complex64, device=self.device)
        c[:, has] = (self.table(t1[has], t2[has]) * pd[has][:, None]).T
        return c

    def noise_sigma(self, c: torch.Tensor, noise: float | None = None) -> float:
        """k-space noise sigma of a reference ``c`` (same definition as ``simulate_subject``) at
        relative level ``noise`` (default: the dataset's)."""
        if self.coil_maps is None:
            dc = c.sum(dim=(-2, -1))[None]  # (1, R)
        else:
            dc = torch.einsum("cxy,rxy->cr", self.coil_maps, c)
        level = self.noise if noise is None else float(noise)
        return float(level * (dc @ self.basis.T).abs().mean())

    def make_pair(
        self, seed: int, slice_index: int, index_seed: int | None = None, noise: float | None = None
    ) -> dict[str, Any]:
        """The (unpatched) pair of subject ``seed`` at template slice ``slice_index``.

        ``index_seed`` seeds the k-space noise (default: ``seed``); ``noise`` is its relative
        level (default: the dataset's ``noise``). Returns the normalised
        ``image``/``cond`` channels, ``scale`` and the complex ``reference``/``condition``
        before normalisation.
        """
        recipe = None if is_validation_seed(seed) else self.recipe  # validation seeds: fixed recipe
        maps, _ = protocol_slice_maps(
            seed,
            slice_index,
            (self.matrix, self.matrix),
            self.fov_mm,
            self.split,
            self.augment,
            recipe=recipe,
        )
        c = self.reference(maps)
        cond = self.toeplitz(c)
        level = self.noise if noise is None else float(noise)
        sigma = self.noise_sigma(c, level) if level > 0 else 0.0
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
            "noise": level,
            "seed": int(seed),
            "slice_index": int(slice_index),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        seed, z = self.item_phantom(int(index))
        pair = self.make_pair(seed, z, noise=self.item_noise(int(index)))
        out = {
            k: pair[k] for k in ("image", "cond", "scale", "seed", "slice_index")
        }  # SubjectPairDataset's keys
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
