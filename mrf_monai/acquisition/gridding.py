"""The gridding front end: raw k-space of one slice -> subspace images and normal operators.

:class:`SubspaceGridder` is the one place where a slice's k-space meets the subspace operator:

* :meth:`~SubspaceGridder.grid`: the calibrated gridding ``A^H D y`` (SVD-MRF, and the
  condition of every learned method at inference and in dataset-folder training pairs);
* :meth:`~SubspaceGridder.problem` / :meth:`~SubspaceGridder.slice_problem`: the
  :class:`~mrf_monai.acquisition.problem.SliceProblem` (gridding image, right-hand side and
  Toeplitz normal operator with the slice's coil maps) of iterative reconstructions (LRTV, the
  diffusion model's data consistency);
* calling it as a :class:`mrf_monai.pipeline.Reconstructor`: the SVD-MRF image of a raw slice.

Steps, in order: (1) the scanner-data front end (:meth:`~SubspaceGridder.prepare_kspace`, the
one place of every pre-gridding k-space step): k-space to a ``(C, T, S)`` tensor on the
gridder's device, noise prewhitening ``W`` (from the raw file's noise scan with the dwell-time
and bandwidth scaling, or from a given covariance; :mod:`~mrf_monai.acquisition.prewhitening`)
and PCA coil compression to virtual coils (:mod:`~mrf_monai.acquisition.coil_compression`);
(2) the Pipe-Menon density compensation ``D`` of the slice's trajectory; (3) the per-coil
density-compensated subspace images; (4) coil maps (given, and then taken through the same
whitening and compression, or estimated from those images by
:meth:`~SubspaceGridder.estimate_coil_maps`) and their sensitivity-weighted combination;
(5) for problems, the Toeplitz kernels of ``A^H D A`` (or ``A^H A``). Gridding, the problem's
normal operator and the coil maps therefore all see the same whitened, compressed channels.
The density and the operator with its kernels depend only on the trajectory, the basis and
the matrix: they are cached and reused while consecutive slices share them; the whitening
matrix depends only on the noise scan: it is computed once per raw file. What the front end
did for the last slice is in :attr:`SubspaceGridder.last_info` (JSON-ready, for the sidecars).

Nothing assumes one readout per frame: ``S`` is whatever the frame holds (one interleaf, or
several readouts of a frame laid end to end), and the density is made unbiased per frame.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .coil_compression import coil_compression, compress
from .coils import COIL_MAP_METHODS, combine_coils, estimate_coil_maps
from .density import pipe_menon_dcf
from .operators import SubspaceNufftOperator, ToeplitzSubspaceNormal
from .prewhitening import NoiseCovarianceError, NoiseScan, prewhiten, whitening_matrix
from .problem import SliceProblem

__all__ = ["SubspaceGridder", "basis_tensor", "AUTO_VIRTUAL_COILS", "AUTO_COIL_ENERGY"]

ArrayLike = torch.Tensor | np.ndarray

#: ``n_virtual_coils="auto"``: data with more channels than this are compressed to at least this
#: many virtual coils (``docs/scanner-data.md``: 16 -> 8 virtual coils moves the maps by < 0.1 %).
AUTO_VIRTUAL_COILS = 8
#: ``n_virtual_coils="auto"``: more virtual coils than :data:`AUTO_VIRTUAL_COILS` when needed to
#: keep this fraction of the (whitened) k-space energy.
AUTO_COIL_ENERGY = 0.999


@dataclass
class _FrontEnd:
    """The prepared k-space of one slice, the channel matrix that made it, and the record."""

    kspace: torch.Tensor
    channels: torch.Tensor | None  # (N, C): virtual channel = channels @ physical channels
    info: dict


def basis_tensor(basis: Any) -> torch.Tensor:
    """A ``(T, R)`` complex64 basis from a tensor, an array or an object with ``.basis``
    (an ``MRFDictionary``)."""
    b = getattr(basis, "basis", basis)
    b = b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
    if b.ndim != 2:
        raise ValueError(
            f"basis must be (T, R) (or an object with a .basis of that shape), got {tuple(b.shape)}."
        )
    return b.to(torch.complex64)


def _digest(*tensors: torch.Tensor, extra: object = None) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))


class SubspaceGridder:
    """Density-compensated subspace gridding of MRF k-space, and the problems built on it.

    Callable as a :class:`mrf_monai.pipeline.Reconstructor` (``(raw, slice_index, dictionary)``
    -> ``{"tsmi": (R, Nx, Ny)}``): the SVD-MRF baseline, the diffusion model's and the U-Net's
    condition, and the condition of training pairs from dataset folders all come from here.

    Args:
        device: where the NUFFTs, the density and the kernels are computed (``"cpu"``,
            ``"cuda"``); default CPU. The array-level methods take a ``device`` override.
        dcf_iter: Pipe-Menon iterations of the density compensation.
        eps: NUFFT accuracy.
        backend: NUFFT backend (see ``acquisition.nufft.make_nufft``).
        coil_maps: coil-map estimator used when several coils come without maps, one of
            ``acquisition.coils.COIL_MAP_METHODS`` (``"inati"``, the default: as accurate as
            Walsh and 2-3x faster at 16 coils, ``docs/scanner-data.md``; ``"walsh"``):
            :func:`~mrf_monai.acquisition.coils.estimate_coil_maps` of the per-coil gridded
            subspace images.
        coil_kernel_size: neighbourhood (odd side, pixels) of the coil-map estimate.
        prewhiten: noise prewhitening of multi-channel data. ``"auto"`` (default): whiten when
            there are several channels and a noise scan (or ``noise_covariance``), else record
            why not (a warning for several channels without one); ``True``: always (an error
            without a noise scan or covariance); ``False``: never.
        noise_covariance: ``(C, C)`` noise covariance of the imaging data to whiten with
            instead of the raw file's noise scan (taken as is: no bandwidth scaling).
        n_virtual_coils: PCA coil compression after prewhitening: ``None`` (none), a number of
            virtual coils (data with fewer channels are not compressed), or ``"auto"``
            (default): data with more than :data:`AUTO_VIRTUAL_COILS` channels are compressed to
            the fewest virtual coils, at least that many, that keep :data:`AUTO_COIL_ENERGY`
            (``coil_energy``) of the slice's k-space energy.
        coil_energy: the energy fraction of ``n_virtual_coils="auto"``.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        dcf_iter: int = 15,
        eps: float = 1e-6,
        backend: str = "auto",
        coil_maps: str = "inati",
        coil_kernel_size: int = 7,
        prewhiten: bool | str = "auto",
        noise_covariance: ArrayLike | None = None,
        n_virtual_coils: int | str | None = "auto",
        coil_energy: float = AUTO_COIL_ENERGY,
    ) -> None:
        if coil_maps not in COIL_MAP_METHODS:
            raise ValueError(
                f"coil_maps must be one of {list(COIL_MAP_METHODS)} (estimated from the data); "
                f"got {coil_maps!r}"
            )
        if prewhiten not in ("auto", True, False):
            raise ValueError(f"prewhiten must be 'auto', true or false; got {prewhiten!r}")
        if n_virtual_coils is not None and n_virtual_coils != "auto":
            if isinstance(n_virtual_coils, bool) or not isinstance(n_virtual_coils, int | np.integer):
                raise ValueError(
                    f"n_virtual_coils must be null (no compression), 'auto' or a positive number of "
                    f"virtual coils; got {n_virtual_coils!r}"
                )
            if int(n_virtual_coils) < 1:
                raise ValueError(f"n_virtual_coils must be at least 1, got {n_virtual_coils}")
            n_virtual_coils = int(n_virtual_coils)
        if not 0 < float(coil_energy) <= 1:
            raise ValueError(f"coil_energy must lie in (0, 1], got {coil_energy}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dcf_iter = int(dcf_iter)
        self.eps = float(eps)
        self.backend = backend
        self.coil_maps = coil_maps
        self.coil_kernel_size = int(coil_kernel_size)
        self.prewhiten = prewhiten
        self.noise_covariance = None if noise_covariance is None else _as_tensor(noise_covariance)
        self.n_virtual_coils = n_virtual_coils
        self.coil_energy = float(coil_energy)
        #: What the front end did for the last slice (``NoisePrewhitening``, ``CoilCompression``,
        #: ``CoilMaps``; JSON-ready), or ``None`` before the first one.
        self.last_info: dict | None = None
        self._dcf_cache: tuple[str, torch.Tensor] | None = None
        self._op_cache: tuple[str, SubspaceNufftOperator] | None = None
        self._white_cache: tuple[str, torch.Tensor | None, dict] | None = None
        self._warned_no_noise = False

    def __repr__(self) -> str:
        return (
            f"SubspaceGridder(device={str(self.device)!r}, dcf_iter={self.dcf_iter}, eps={self.eps}, "
            f"backend={self.backend!r}, coil_maps={self.coil_maps!r}, prewhiten={self.prewhiten!r}, "
            f"n_virtual_coils={self.n_virtual_coils!r})"
        )

    # ------------------------------------------------------------------ building blocks
    def density(
        self, traj: ArrayLike, image_shape: Sequence[int], device: str | torch.device | None = None
    ) -> torch.Tensor:
        """Pipe-Menon density compensation ``(T, S)`` of ``traj`` on ``device`` (cached)."""
        device = self._device(device)
        t = _as_tensor(traj)
        shape = (int(image_shape[0]), int(image_shape[1]))
        key = _digest(t, extra=shape)
        if self._dcf_cache is None or self._dcf_cache[0] != key:
            dcf = pipe_menon_dcf(t.to(device), shape, n_iter=self.dcf_iter, backend=self.backend)
            self._dcf_cache = (key, dcf)
        return self._dcf_cache[1].to(device)

    def operator(
        self,
        traj: ArrayLike,
        basis: Any,
        image_shape: Sequence[int],
        device: str | torch.device | None = None,
        dcf: ArrayLike | None = None,
    ) -> SubspaceNufftOperator:
        """The slice's subspace operator without coil maps, with its density compensation.

        Cached (with its NUFFT plans and Toeplitz kernels) per trajectory, basis, matrix and
        device; a given ``dcf`` replaces the gridder's own and bypasses the cache.
        """
        device = self._device(device)
        t = _as_tensor(traj)
        b = basis_tensor(basis)
        shape = (int(image_shape[0]), int(image_shape[1]))
        if t.ndim != 3 or t.shape[-1] != 2:
            raise ValueError(
                f"traj must be (T, S, 2) for one slice, got {tuple(t.shape)}; select a slice first."
            )
        if b.shape[0] != t.shape[0]:
            raise ValueError(
                f"the basis has {b.shape[0]} frames but the trajectory {t.shape[0]}; "
                "use the dictionary/basis of the acquired (truncated) sequence."
            )
        if dcf is not None:
            return self._new_operator(t, b, shape, device, _as_tensor(dcf).to(device))
        key = _digest(t, b, extra=(shape, str(device)))
        if self._op_cache is None or self._op_cache[0] != key:
            self._op_cache = (key, self._new_operator(t, b, shape, device, self.density(t, shape, device)))
        return self._op_cache[1]

    def _new_operator(
        self, traj: torch.Tensor, basis: torch.Tensor, shape: tuple[int, int], device: torch.device, dcf
    ) -> SubspaceNufftOperator:
        return SubspaceNufftOperator(
            traj.to(device), basis, shape, None, dcf, eps=self.eps, backend=self.backend, device=device
        )

    def prepare_kspace(
        self,
        kspace: ArrayLike,
        device: str | torch.device | None = None,
        noise: NoiseScan | ArrayLike | None = None,
    ) -> torch.Tensor:
        """k-space of one slice as a ``(N, T, S)`` tensor on ``device``: the front end's channels.

        Every pre-gridding k-space step of the front end happens here: the ``(C, T, S)`` (or
        ``(T, S)``: one coil) samples are moved to ``device``, prewhitened (``prewhiten``, from
        ``noise`` or the gridder's ``noise_covariance``) and compressed to ``N`` virtual coils
        (``n_virtual_coils``); :attr:`last_info` records what was done.

        Args:
            kspace: ``(C, T, S)`` or ``(T, S)`` complex samples of one slice.
            device: override of the gridder's device.
            noise: the raw file's noise scan (:class:`~mrf_monai.acquisition.prewhitening.NoiseScan`,
                or its ``(C, M)`` samples with equal dwell times), or ``None``.
        """
        return self._front_end(kspace, self._device(device), noise).kspace

    def estimate_coil_maps(self, coil_images: torch.Tensor) -> torch.Tensor:
        """Coil maps ``(C, Nx, Ny)`` from per-coil subspace images ``(C, R, Nx, Ny)``
        with the gridder's estimator (``coil_maps``)."""
        return estimate_coil_maps(coil_images, method=self.coil_maps, kernel_size=self.coil_kernel_size)

    # ------------------------------------------------------------------ array level
    def grid(
        self,
        kspace: ArrayLike,
        traj: ArrayLike,
        basis: Any,
        image_shape: Sequence[int],
        coil_maps: ArrayLike | None = None,
        dcf: ArrayLike | None = None,
        device: str | torch.device | None = None,
        noise: NoiseScan | ArrayLike | None = None,
    ) -> torch.Tensor:
        """Calibrated gridding ``A^H D y`` of one slice: ``(R, Nx, Ny)`` complex64 on ``device``.

        Args:
            kspace: ``(C, T, S)`` or ``(T, S)`` (one coil) complex samples.
            traj: ``(T, S, 2)`` cycles per pixel.
            basis: ``(T, R)`` temporal basis (or an object with ``.basis``).
            image_shape: ``(Nx, Ny)``.
            coil_maps: ``(C, Nx, Ny)`` sensitivities of the physical channels (taken through the
                front end's whitening and compression, then normalised per pixel); ``None``:
                estimated when there are several (virtual) coils.
            dcf: ``(T, S)`` density compensation replacing the gridder's own (optional).
            device: override of the gridder's device.
            noise: the raw file's noise scan (see :meth:`prepare_kspace`).
        """
        device = self._device(device)
        op = self.operator(traj, basis, image_shape, device, dcf)
        front = self._front_end(kspace, device, noise)
        coil_images = op.grid_coils(front.kspace)
        maps = self._coil_maps(coil_images, coil_maps, front)
        return coil_images[0] if maps is None else combine_coils(coil_images, maps)

    def problem(
        self,
        kspace: ArrayLike,
        traj: ArrayLike,
        basis: Any,
        image_shape: Sequence[int],
        coil_maps: ArrayLike | None = None,
        density_compensated: bool = True,
        device: str | torch.device | None = None,
        noise: NoiseScan | ArrayLike | None = None,
    ) -> SliceProblem:
        """The :class:`SliceProblem` of one slice (arguments as :meth:`grid`).

        ``grid`` is :meth:`grid`'s image; ``rhs`` is ``grid`` when ``density_compensated``, else
        the exact adjoint ``A^H y`` combined with the same coil maps; ``normal`` is the Toeplitz
        ``A^H D A`` (or ``A^H A``) with those maps, its kernels cached with the operator. All of
        them act on the front end's (whitened, compressed) channels, whose maps the problem holds.
        """
        device = self._device(device)
        op = self.operator(traj, basis, image_shape, device)
        front = self._front_end(kspace, device, noise)
        k = front.kspace
        coil_images = op.grid_coils(k)
        maps = self._coil_maps(coil_images, coil_maps, front)
        grid = coil_images[0] if maps is None else combine_coils(coil_images, maps)
        if density_compensated:
            rhs = grid
        else:
            adjoint = op.adjoint_coils(k)
            rhs = adjoint[0] if maps is None else combine_coils(adjoint, maps)
        kernel_hat = op.toeplitz(density_compensated).kernel_hat
        normal = ToeplitzSubspaceNormal(kernel_hat, op.image_shape, maps)
        return SliceProblem(grid, rhs, normal, maps, bool(density_compensated))

    # ------------------------------------------------------------------ raw level
    def slice_problem(
        self, raw: Any, slice_index: int, basis: Any, density_compensated: bool = True
    ) -> SliceProblem:
        """:meth:`problem` of slice ``slice_index`` of a ``RawSubject`` on the gridder's device
        (prewhitened with the raw file's noise scan, see ``prewhiten``)."""
        b = self._raw_basis(raw, basis)
        return self.problem(
            raw.kspace[slice_index],
            raw.traj[slice_index],
            b,
            raw.matrix,
            density_compensated=density_compensated,
            noise=NoiseScan.from_raw(raw),
        )

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Compressed TSMI ``(R, Nx, Ny)`` of slice ``slice_index`` of ``raw`` (on the gridder's device)."""
        b = self._raw_basis(raw, dictionary)
        tsmi = self.grid(
            raw.kspace[slice_index], raw.traj[slice_index], b, raw.matrix, noise=NoiseScan.from_raw(raw)
        )
        return {"tsmi": tsmi}

    # ------------------------------------------------------------------ the front end
    def _front_end(
        self, kspace: ArrayLike, device: torch.device, noise: NoiseScan | ArrayLike | None
    ) -> _FrontEnd:
        k = _as_tensor(kspace).to(device)
        if k.ndim == 2:
            k = k[None]
        if k.ndim != 3:
            raise ValueError(
                f"kspace must be (C, T, S) or (T, S) for one slice, got {tuple(k.shape)}; "
                "select a slice first."
            )
        n_channels = int(k.shape[0])
        whitening, white_info = self._whitening(n_channels, noise)
        channels = None
        if whitening is not None:
            whitening = whitening.to(device)
            k = prewhiten(k, whitening)
            channels = whitening
        k, matrix, cc_info = self._compression(k)
        if matrix is not None:
            channels = matrix if channels is None else matrix @ channels
        info = {"NoisePrewhitening": white_info, "CoilCompression": cc_info}
        self.last_info = info
        return _FrontEnd(k, channels, info)

    def _whitening(
        self, n_channels: int, noise: NoiseScan | ArrayLike | None
    ) -> tuple[torch.Tensor | None, dict]:
        """The whitening matrix of the imaging noise (or ``None``) and its record (cached)."""
        if self.prewhiten is False:
            return None, {"Applied": False, "Reason": "prewhitening switched off (prewhiten=false)"}
        if self.noise_covariance is not None:
            key = _digest(self.noise_covariance, extra=("covariance", n_channels))
            if self._white_cache is None or self._white_cache[0] != key:
                cov = self.noise_covariance
                if tuple(cov.shape) != (n_channels, n_channels):
                    raise ValueError(
                        f"noise_covariance is {tuple(cov.shape)} but the k-space has {n_channels} channels; "
                        "give the (C, C) covariance of the same receive channels"
                    )
                info = {"Applied": True, "Source": "given noise covariance", "Channels": n_channels}
                self._white_cache = (key, whitening_matrix(cov), info)
            return self._white_cache[1], dict(self._white_cache[2])
        scan = noise if isinstance(noise, NoiseScan) or noise is None else NoiseScan(_as_tensor(noise))
        if scan is not None and scan.n_samples == 0:
            scan = None
        if scan is None:
            reason = (
                "no noise scan in the raw data (ISMRMRD ACQ_IS_NOISE_MEASUREMENT) and no noise_covariance"
            )
            if self.prewhiten is True:
                raise ValueError(
                    f"prewhiten=true but there is {reason}; give a noise covariance, or set prewhiten to "
                    "'auto' or false to reconstruct without prewhitening"
                )
            if n_channels > 1 and not self._warned_no_noise:
                self._warned_no_noise = True
                warnings.warn(
                    f"{n_channels}-channel data without a noise scan: not prewhitened (correlated "
                    "channel noise lowers the SNR of the coil combination)",
                    stacklevel=4,
                )
            return None, {"Applied": False, "Reason": reason}
        if scan.n_channels != n_channels:
            raise ValueError(
                f"the noise scan has {scan.n_channels} channels but the k-space {n_channels}; the noise "
                "scan must record the same receive channels"
            )
        if n_channels == 1 and self.prewhiten == "auto":
            return None, {"Applied": False, "Reason": "one receive channel: nothing to decorrelate"}
        samples = _as_tensor(scan.samples)
        key = _digest(samples, extra=("scan", scan.dwell_us, scan.data_dwell_us, scan.relative_bandwidth))
        if self._white_cache is None or self._white_cache[0] != key:
            info = {
                "Applied": True,
                "Source": "noise scan",
                "Channels": n_channels,
                "NoiseSamplesPerChannel": scan.n_samples,
                "NoiseDwellTime_us": scan.dwell_us,
                "DataDwellTime_us": scan.data_dwell_us,
                "RelativeNoiseBandwidth": scan.relative_bandwidth,
                "BandwidthScale": scan.bandwidth_scale,
            }
            if not scan.dwell_times_known:
                info["Note"] = "dwell times unknown: the noise scan is taken to use the imaging bandwidth"
            try:
                w = scan.whitening()
            except NoiseCovarianceError as err:
                if self.prewhiten is True:
                    raise
                warnings.warn(f"not prewhitened: {err}", stacklevel=4)
                w, info = None, {"Applied": False, "Reason": str(err)}
            self._white_cache = (key, w, info)
        return self._white_cache[1], dict(self._white_cache[2])

    def _compression(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """PCA compression of the (whitened) slice to virtual coils: data, ``(N, C)`` matrix, record."""
        n_channels = int(k.shape[0])
        if self.n_virtual_coils is None:
            return k, None, {"Applied": False, "Channels": n_channels, "Reason": "switched off"}
        target = AUTO_VIRTUAL_COILS if self.n_virtual_coils == "auto" else int(self.n_virtual_coils)
        if n_channels <= target:
            return (
                k,
                None,
                {
                    "Applied": False,
                    "Channels": n_channels,
                    "Reason": f"{n_channels} channel(s), not more than {target} virtual coils",
                },
            )
        cc = coil_compression(k, n_virtual=n_channels)  # every component, to choose N from
        if self.n_virtual_coils == "auto":
            keep = (
                int(
                    torch.searchsorted(
                        cc.cumulative_energy(),
                        torch.tensor([self.coil_energy * (1 - 1e-12)], dtype=torch.float64),
                    )[0]
                )
                + 1
            )
            n_virtual = min(n_channels, max(target, keep))
        else:
            n_virtual = target
        info = {
            "Applied": n_virtual < n_channels,
            "Method": "PCA (SVD) of the slice's k-space after prewhitening",
            "Channels": n_channels,
            "VirtualCoils": n_virtual,
            "KeptEnergy": float(cc.energy_fraction[:n_virtual].sum()),
        }
        if n_virtual == n_channels:
            return k, None, info
        matrix = cc.matrix[:n_virtual]
        return compress(k, matrix), matrix, info

    # ------------------------------------------------------------------ helpers
    def _device(self, device: str | torch.device | None) -> torch.device:
        return self.device if device is None else torch.device(device)

    @staticmethod
    def _raw_basis(raw: Any, basis: Any) -> torch.Tensor:
        b = basis_tensor(basis)
        if b.shape[0] != raw.n_frames:
            raise ValueError(
                f"the dictionary's basis has {b.shape[0]} frames but the raw data has {raw.n_frames}; "
                "use a dictionary of the raw data's sequence"
            )
        return b

    def _coil_maps(
        self, coil_images: torch.Tensor, coil_maps: ArrayLike | None, front: _FrontEnd
    ) -> torch.Tensor | None:
        n_coils = int(coil_images.shape[0])
        if coil_maps is None:
            maps = self.estimate_coil_maps(coil_images) if n_coils > 1 else None
            front.info["CoilMaps"] = (
                {"Method": self.coil_maps, "KernelSize": self.coil_kernel_size, "Coils": n_coils}
                if maps is not None
                else {"Method": None, "Reason": "one coil"}
            )
            return maps
        maps = _as_tensor(coil_maps).to(coil_images.device, torch.complex64)
        n_given = n_coils if front.channels is None else int(front.channels.shape[1])
        if tuple(maps.shape) != (n_given, *coil_images.shape[-2:]):
            raise ValueError(
                f"coil_maps must be (C, Nx, Ny) = {(n_given, *coil_images.shape[-2:])} for this k-space, "
                f"got {tuple(maps.shape)}."
            )
        if front.channels is not None:  # the sensitivities of the whitened, compressed channels
            maps = (front.channels.to(maps.device) @ maps.reshape(n_given, -1)).reshape(
                n_coils, *maps.shape[1:]
            )
            maps = maps / torch.linalg.vector_norm(maps, dim=0, keepdim=True).clamp_min(1e-30)
        front.info["CoilMaps"] = {"Method": "given", "Coils": n_coils}
        return maps
