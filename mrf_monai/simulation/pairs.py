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

Scanner conditions (:mod:`mrf_monai.simulation.scanner`; off by default, and then the pairs are
those of earlier versions bit for bit), drawn per subject exactly as ``simulate_subject`` draws
them, from the subject seed's own random streams (so an item does not depend on the order of
access):

* **B1+ field** (``b1``: an amplitude or ``"random"``): the slice's field
  (:func:`~mrf_monai.simulation.scanner.b1_field`) scales every voxel's flip angles, so the
  reference is ``c = PD * basis^H EPG(T1, T2, B1)``, interpolated from a table with a B1 axis
  (:class:`CompressedSignalTable` with ``b1_values``: nodes ``1 +- k * table_b1_step`` covering
  ``1 +- a``, linear in B1), and the condition is the gridding of that k-space. The equivalence
  with gridding ``raw.h5`` above holds unchanged (``simulate_subject(..., b1=...)``).
* **correlated channel noise** (``noise_covariance``: ``"realistic"`` or a matrix ``Psi``,
  several coils): the k-space noise of the coils is the white draw times the Cholesky factor
  ``L`` of ``Psi`` (``E[n n^H] = sigma^2 Psi``), as in ``simulate_subject``. The condition is
  what the gridder makes of such data at inference with a noise scan
  (:class:`~mrf_monai.acquisition.gridding.SubspaceGridder`, ``prewhiten="auto"``): the channels
  are whitened with ``W = L^{-1}`` (the known covariance: the limit of a long noise scan; the
  overall scale of ``W`` cancels in the normalisation) and combined with the whitened maps
  ``S' = W S / |W S|``. The signal of the combined image is then ``g * c`` with the gain
  ``g = |W S|`` (1 without whitening, where ``sum |S|^2 = 1``; with realistic covariances it
  varies by 7-20 % over the brain), so the reference is ``g * c``: the coil combination of
  noise-free, alias-free data, the image whose maps every method of the pipeline estimates from
  such data (matching is scale invariant; the PD carries ``g``, a receive weighting, which the
  network is not asked to remove). The condition is ``A^H D A (g c)`` with the maps ``S'`` plus the
  gridding of the whitened noise ``W n`` (white again). With ``prewhiten=False`` (inference on
  data without a noise scan) the correlated noise is gridded with the maps ``S`` and the
  reference stays ``c``. One coil is never whitened (as ``prewhiten="auto"``). Inference
  compresses more than 8 channels to virtual coils after whitening; the pairs do not (a change
  of < 0.1 % in the maps, ``docs/scanner-data.md``).

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

import math
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrf_monai.acquisition.coils import combine_coils, simulate_coil_maps
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.prewhitening import prewhiten, whitening_matrix
from mrf_monai.acquisition.protocol import Protocol
from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
from mrf_monai.phantoms import FOV_MM, split_slices
from mrf_monai.phantoms.anatomy import slice_position_mm
from mrf_monai.phantoms.augment import SPLIT_CODE
from mrf_monai.phantoms.recipe import PhantomRecipe, check_training_seeds, is_validation_seed
from mrf_monai.physics.dictionary import b1_grid
from mrf_monai.physics.sequence import MRFSequence
from mrf_monai.transforms.complex import complex_to_channels
from mrf_monai.transforms.intensity import condition_scale  # the same scale as at inference

from .scanner import B1_AMPLITUDE_RANGE, b1_field, draw_b1_field, noise_covariance_matrix
from .signal_table import CompressedSignalTable
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


def _check_b1(b1: float | str | None) -> float | str | None:
    """``SimulatedPairDataset(b1=...)``: ``None``, ``"random"`` or an amplitude in ``[0, 1)``."""
    if b1 is None or b1 == "random":
        return b1
    if isinstance(b1, str) or isinstance(b1, bool):
        raise ValueError(f"b1 must be null, 'random' or an amplitude a in [0, 1) (B1 = 1 +- a), got {b1!r}")
    a = float(b1)
    if not 0.0 <= a < 1.0:
        raise ValueError(f"the B1 amplitude must lie in [0, 1) (B1 = 1 +- a), got {b1}")
    return a


def _b1_nodes(b1: float | str, step: float) -> torch.Tensor:
    """B1 nodes ``1 +- k step`` (``k >= 1``) of the signal table, covering ``1 +- a``."""
    if not 0 < float(step) <= 0.25:
        raise ValueError(f"table_b1_step must be in (0, 0.25], got {step}")
    a = B1_AMPLITUDE_RANGE[1] if b1 == "random" else float(b1)
    k = max(1, math.ceil(a / float(step) - 1e-6))
    return b1_grid((1.0 - k * float(step), 1.0 + k * float(step)), float(step), dtype=torch.float64)


def _covariance_spec(spec: Any, n_coils: int) -> str | np.ndarray | None:
    """``SimulatedPairDataset(noise_covariance=...)``: ``None`` (white), ``"realistic"`` (drawn per
    subject) or the checked ``(C, C)`` matrix (a nested list from a config is accepted)."""
    if isinstance(spec, str):
        return None if noise_covariance_matrix(spec, n_coils) is None else spec  # checks the name
    if spec is None:
        return None
    return noise_covariance_matrix(spec if isinstance(spec, torch.Tensor) else np.asarray(spec), n_coils)


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
        b1: a B1+ field per subject, as ``simulate_subject(b1=...)`` draws it
            (:mod:`mrf_monai.simulation.scanner`, from the subject's own random stream):
            ``None`` (B1 = 1, the default), an amplitude ``a`` (B1 = 1 +- a over the brain) or
            ``"random"`` (``a`` drawn per subject from 0.10-0.25). The reference is then the
            compressed fingerprint at each voxel's B1 (flip angles scaled by it).
        noise_covariance: channel noise covariance, as ``simulate_subject(noise_covariance=...)``:
            ``None`` / ``"white"`` (the default white noise), ``"realistic"``
            (:func:`~mrf_monai.acquisition.coils.realistic_noise_covariance` of the subject seed)
            or a ``(C, C)`` matrix: each coil's k-space noise has covariance ``sigma^2 Psi``.
        prewhiten: with a ``noise_covariance`` and several coils, grid the prewhitened channels
            as inference does with a noise scan (module docstring; default), or (``False``) the
            raw correlated channels, as inference does without one.
        table_b1_step: B1 spacing of the signal table's B1 axis with ``b1`` (nodes ``1 +- k
            step`` covering the field's range).

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
        b1: float | str | None = None,
        noise_covariance: str | np.ndarray | torch.Tensor | list | None = None,
        prewhiten: bool = True,
        table_b1_step: float = 0.05,
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
        self.b1 = _check_b1(b1)
        self.noise_covariance = _covariance_spec(noise_covariance, self.n_coils)
        self.prewhiten = bool(prewhiten)
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
            self.sequence,
            self.basis,
            table_step,
            device=self.device,
            cache_dir=cache_dir,
            b1_values=None if self.b1 is None else _b1_nodes(self.b1, table_b1_step),
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

    def reference(self, maps: dict[str, np.ndarray], b1: np.ndarray | None = None) -> torch.Tensor:
        """Compressed reference TSMI ``(R, Nx, Ny)`` complex64 of parameter maps, at the relative
        transmit field ``b1`` (``(Nx, Ny)``; ``None``: B1 = 1)."""
        pd = torch.as_tensor(maps["pd"]).to(self.device, torch.complex64)
        has = pd.abs() > 0
        t1 = torch.as_tensor(maps["t1_s"]).to(self.device)
        t2 = torch.as_tensor(maps["t2_s"]).to(self.device)
        c = torch.zeros(self.rank, *pd.shape, dtype=torch.complex64, device=self.device)
        if b1 is None:
            comp = self.table(t1[has], t2[has])
        else:
            comp = self.table(t1[has], t2[has], torch.as_tensor(b1).to(self.device)[has])
        c[:, has] = (comp * pd[has][:, None]).T
        return c

    def b1_map(self, seed: int, mask: np.ndarray, z_mm: float) -> np.ndarray | None:
        """The B1+ field ``(Nx, Ny)`` of subject ``seed``'s slice at ``z_mm`` with brain ``mask``,
        drawn as ``simulate_subject`` draws it (``None`` without ``b1``)."""
        if self.b1 is None:
            return None
        return b1_field(mask, z_mm, draw_b1_field(int(seed), self.split, self.b1))

    def subject_covariance(self, seed: int) -> torch.Tensor | None:
        """The ``(C, C)`` channel noise covariance of subject ``seed`` (``None``: white noise)."""
        if self.noise_covariance is None:
            return None
        cov = (
            noise_covariance_matrix(self.noise_covariance, self.n_coils, int(seed))
            if isinstance(self.noise_covariance, str)
            else self.noise_covariance
        )
        return torch.as_tensor(cov).to(self.device, torch.complex128)

    def coil_noise(self, seed: int, sigma: float, covariance: torch.Tensor | None = None) -> torch.Tensor:
        """k-space noise ``(C, T, S)`` complex64 of noise seed ``seed``: white with ``E|n|^2 =
        sigma^2``, or, with ``covariance = L L^H``, that draw times ``L`` (``E[n n^H] = sigma^2 Psi``)."""
        g = torch.Generator(device=self.device).manual_seed(int(seed) % 2**63)
        shape = (self.n_coils, self.n_frames, self.traj.shape[1])
        n = torch.randn(*shape, dtype=torch.complex64, generator=g, device=self.device) * sigma
        if covariance is None:
            return n
        chol = torch.linalg.cholesky(covariance.to(self.device, torch.complex128)).to(torch.complex64)
        return (chol @ n.reshape(self.n_coils, -1)).reshape(shape)

    def whitened_coils(
        self, covariance: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """What prewhitening with a known ``covariance`` makes of the coils (module docstring): the
        whitening matrix ``W``, the whitened maps ``W S / |W S|`` ``(C, Nx, Ny)`` and the gain
        ``g = |W S|`` ``(Nx, Ny)``; ``None`` when nothing is whitened (white noise, one coil, or
        ``prewhiten=False``)."""
        if covariance is None or self.coil_maps is None or not self.prewhiten:
            return None
        w = whitening_matrix(covariance).to(self.device)
        ws = (w @ self.coil_maps.reshape(self.n_coils, -1)).reshape(self.coil_maps.shape)
        gain = torch.linalg.vector_norm(ws, dim=0)
        return w, ws / gain.clamp_min(1e-30), gain

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
        level (default: the dataset's ``noise``). The B1 field and the noise covariance are the
        subject's (:meth:`b1_map`, :meth:`subject_covariance`). Returns the normalised
        ``image``/``cond`` channels, ``scale`` and the complex ``reference``/``condition``
        before normalisation.
        """
        recipe = None if is_validation_seed(seed) else self.recipe  # validation seeds: fixed recipe
        maps, m = protocol_slice_maps(
            seed,
            slice_index,
            (self.matrix, self.matrix),
            self.fov_mm,
            self.split,
            self.augment,
            recipe=recipe,
        )
        field = self.b1_map(seed, maps["mask"], float(slice_position_mm(int(slice_index), m)[2]))
        c = self.reference(maps, field)
        level = self.noise if noise is None else float(noise)
        sigma = self.noise_sigma(c, level) if level > 0 else 0.0  # of the raw (unwhitened) k-space
        cov = self.subject_covariance(seed)
        white = self.whitened_coils(cov)
        if white is None:
            cond = self.toeplitz(c)
        else:  # the coil combination of the whitened channels: gain g = |W S| on the image
            c = c * white[2]
            cond = self.toeplitz(c, white[1])
        if sigma > 0:
            n = self.coil_noise(seed if index_seed is None else index_seed, sigma, cov)
            if white is None:
                cond = cond + self.noise_operator.grid(n)
            else:
                cond = cond + combine_coils(self.noise_operator.grid_coils(prewhiten(n, white[0])), white[1])
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
