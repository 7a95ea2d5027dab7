# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""MRF-IDDPM as a reconstruction method of the shared pipeline (``--method iddpm``).

Per slice: raw k-space -> aliased gridding image in the model's subspace (the SVD-MRF baseline,
:class:`mrf_monai.acquisition.gridding.SubspaceGridder`) -> divide by the per-slice scale
``quantile(|cond[0]|, 0.99)`` (``docs/interfaces.md``) -> K samples with
:class:`~mrf_monai.diffusion.inferer.SlidingWindowDiffusionSampler` -> multiply by the scale ->
``tsmi`` = mean over samples ``(R, Nx, Ny)`` complex, ``samples`` ``(K, R, Nx, Ny)``. The pipeline
(:func:`mrf_monai.pipeline.reconstruct_dataset`) matches the mean and the samples (std maps).

The model only understands TSMIs in the subspace it was trained in. The checkpoint's
``hyper_parameters["data"]`` (``extra_hyper_parameters`` of the trainer) may hold
``"basis"`` (``(T, R)`` complex), ``"sequence"`` (``MRFSequence.to_dict()``), ``"sequence_key"``
and ``"rank"``; whatever is stored is checked against the raw data and the dictionary and a
mismatch is an error that says what differs. When the basis is stored, the condition is gridded
with *that* basis and the result is expressed in the dictionary's basis by the ``R x R`` matrix
``Q = B_dict^H B_model``; this is exact when both span the same subspace (e.g. the same SVD with
different column phases, as happens between machines) and an error otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from mrf_monai.diffusion.inferer import SlidingWindowDiffusionSampler, derive_seed
from mrf_monai.diffusion.model import load_checkpoint, load_checkpoint_model, scheduler_from_checkpoint
from mrf_monai.diffusion.scaling import channel_scale_from_hyper_parameters
from mrf_monai.transforms.complex import channels_to_complex, complex_to_channels
from mrf_monai.transforms.intensity import condition_scale

__all__ = ["IDDPMReconstructor", "resolve_device", "subjects_for_rank", "raise_on_failure"]

logger = logging.getLogger(__name__)

#: default location of the shipped weights (relative to the repository root).
DEFAULT_MODEL_PATH = "bundles/mrf_iddpm/models/model.pt"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None``: ``cuda:<LOCAL_RANK>`` when CUDA is available (torchrun), else CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(device)


def subjects_for_rank(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    rank: int | None = None,
    world_size: int | None = None,
) -> list[Path]:
    """This process's share of the subjects of ``inputs`` (dataset or subject folders).

    Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment, or given explicitly) rank
    ``r`` takes subjects ``r, r + W, r + 2W, ...`` of the sorted list; otherwise all of them.
    """
    from mrf_monai.io.subjects import find_subjects

    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
    paths = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    subjects = sorted(Path(p) for p in find_subjects(paths))
    if not subjects:
        raise FileNotFoundError(f"no subjects (sub-<label>/raw.h5) in {', '.join(str(p) for p in paths)}.")
    return subjects[rank::world_size]


def raise_on_failure(status: int) -> int:
    """Turn the exit status of :func:`mrf_monai.pipeline.reconstruct_dataset` into an exception
    (so that ``monai.bundle run`` exits non-zero when a subject failed)."""
    if int(status) != 0:
        raise RuntimeError("reconstruction failed for at least one subject (see the messages above).")
    return 0


class IDDPMReconstructor:
    """MRF-IDDPM reconstruction of one slice (a :class:`mrf_monai.pipeline.Reconstructor`).

    Args:
        model_path: checkpoint written by the trainer (``DiffusionTrainer.export_model``).
        n_samples: samples ``K`` per slice (the paper: 10); ``tsmi`` is their mean.
        n_steps: reverse steps per sample (the paper: 50 DDIM steps).
        overlap: sliding-window overlap (0.5 = stride 32 for 64-pixel windows).
        device: ``"auto"`` (CUDA when available, ``cuda:LOCAL_RANK`` under torchrun) or a device.
        seed: base seed; slice ``s`` uses the seed ``(seed, s)`` and sample ``k`` ``(seed, s, k)``.
        method: ``"ddim"`` or ``"ddpm"``.
        eta: DDIM stochasticity.
        mode: ``"whole"`` (whole slice at once; the default of the shipped CPU model, which
            the data-consistency step needs) or ``"patch"`` (sliding window, the paper's setting).
        roi_size: window size; ``None``: the training patch size stored in the checkpoint
            (``hyper_parameters["data"]["patch_size"]``), else 64.
        sw_batch_size: windows per network call; ``None``: 256 on CUDA (lower it on small
            GPUs), 8 on CPU.
        sample_batch_size: samples processed together (``None``: all ``K``).
        blend_every_step: blend network outputs of windows at every step (see the inferer).
        clip: clamp ``x0_hat`` to ``[-clip, clip]``; ``None`` = off.
        spacing: timestep spacing (``"linspace"`` or ``"leading"``).
        weights: ``"auto"``, ``"ema"`` or ``"model"`` (see ``load_checkpoint_model``).
        amp: run the network in autocast (float16 on CUDA, bfloat16 on CPU).
        gridding_device: device of the gridding NUFFTs (``None``: CPU, which always works).
        gridding_options: extra keyword arguments of ``SubspaceGridder`` (``dcf_iter``, ...).
        subspace_tolerance: largest accepted ``1 - sigma_min(B_dict^H B_model)``.
        num_threads: ``torch.set_num_threads`` for this process (``None``: unchanged).
        progress: ``tqdm`` bars over samples.
        dc_steps: conjugate-gradient iterations of a proximal k-space data-consistency step
            applied to ``x0_hat`` at every reverse step (0 = the paper's unconstrained sampling):
            ``x0 <- argmin_x ||D^1/2 (A x - y)||^2 + lam ||x - x0_hat||^2`` with the slice's
            density-compensated Toeplitz normal operator (the LRTV data term), in the spirit of
            MRF-DiPh's proximal steps. Needs ``mode="whole"``. The paper's sampler is
            ``mode="patch", dc_steps=0``.
        dc_lambda: ``lam`` relative to ``||A^H D A||`` (larger: closer to the network's estimate).
    """

    def __init__(
        self,
        model_path: str | os.PathLike = DEFAULT_MODEL_PATH,
        n_samples: int = 10,
        n_steps: int = 50,
        overlap: float = 0.5,
        device: str | torch.device | None = "auto",
        seed: int = 0,
        method: str = "ddim",
        eta: float = 0.0,
        mode: str = "whole",
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int | None = None,
        sample_batch_size: int | None = None,
        blend_every_step: bool = False,
        clip: float | None = None,
        spacing: str = "linspace",
        weights: str = "auto",
        amp: bool = False,
        gridding_device: str | torch.device | None = None,
        gridding_options: Mapping[str, Any] | None = None,
        subspace_tolerance: float = 1e-3,
        num_threads: int | None = None,
        progress: bool = True,
        dc_steps: int = 5,
        dc_lambda: float = 0.1,
    ) -> None:
        if dc_steps < 0:
            raise ValueError(f"dc_steps must be >= 0, got {dc_steps}.")
        if dc_steps and mode != "whole":
            raise ValueError("data consistency (dc_steps > 0) acts on the whole slice: use mode='whole'.")
        self.dc_steps = int(dc_steps)
        self.dc_lambda = float(dc_lambda)
        self._dc_problem: Any = None
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        if num_threads:
            torch.set_num_threads(int(num_threads))
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no MRF-IDDPM weights at {path}: train them (`python -m monai.bundle run training ...`) or "
                "pass model_path=<checkpoint.pt>"
            )
        self.model_path = path
        self.device = resolve_device(device)
        ckpt = load_checkpoint(path)
        self.hyper_parameters: dict[str, Any] = dict(ckpt["hyper_parameters"])
        self.model = load_checkpoint_model(ckpt, map_location=self.device, weights=weights)
        self.rank = int(self.hyper_parameters["model"]["rank"])
        data = dict(self.hyper_parameters.get("data") or {})
        basis = data.get("basis", ckpt.get("basis"))
        self.model_basis = None if basis is None else torch.as_tensor(basis).to(torch.complex128)
        if self.model_basis is not None and self.model_basis.shape[1] != self.rank:
            raise ValueError(
                f"{path}: stored basis has rank {self.model_basis.shape[1]}, the network {self.rank}."
            )
        self.sequence_key = data.get("sequence_key")
        if self.sequence_key is None and data.get("sequence") is not None:
            from mrf_monai.physics.sequence import MRFSequence

            self.sequence_key = MRFSequence.from_dict(dict(data["sequence"])).key()
        if self.model_basis is None and self.sequence_key is None:
            logger.warning(
                "%s stores neither the subspace basis nor the sequence it was trained with; only the rank "
                "(%d) can be checked against the dictionary.",
                path,
                self.rank,
            )
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.amp = bool(amp)
        self.subspace_tolerance = float(subspace_tolerance)
        if sw_batch_size is None:
            sw_batch_size = 256 if self.device.type == "cuda" else 8
        self.sampler = SlidingWindowDiffusionSampler(
            roi_size=data.get("patch_size", 64) if roi_size is None else roi_size,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
            n_steps=n_steps,
            method=method,
            eta=eta,
            clip=clip,
            mode=mode,
            blend_every_step=blend_every_step,
            sample_batch_size=sample_batch_size,
            scheduler=scheduler_from_checkpoint(ckpt),
            spacing=spacing,
            progress=progress,
        )
        from mrf_monai.acquisition.gridding import SubspaceGridder

        self.gridder = SubspaceGridder(device=gridding_device, **dict(gridding_options or {}))

    def __repr__(self) -> str:
        s = self.sampler
        return (
            f"IDDPMReconstructor(model_path={str(self.model_path)!r}, n_samples={self.n_samples}, "
            f"n_steps={s.n_steps}, method={s.process.method!r}, mode={s.mode!r}, overlap={s.overlap}, "
            f"device={str(self.device)!r}, seed={self.seed})"
        )

    def check_compatible(self, raw: Any, dictionary: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check that the network, the raw data and the dictionary share one subspace; see
        :func:`mrf_monai.transforms.subspace.check_model_subspace` (returns ``(basis, Q)``)."""
        from mrf_monai.transforms.subspace import check_model_subspace

        return check_model_subspace(
            raw,
            dictionary,
            self.rank,
            self.model_basis,
            self.sequence_key,
            f"the model {self.model_path}",
            self.subspace_tolerance,
        )

    def condition(self, raw: Any, slice_index: int, basis: torch.Tensor) -> torch.Tensor:
        """The aliased gridding image ``(R, Nx, Ny)`` complex of one slice in ``basis`` (SVD-MRF)."""
        return torch.as_tensor(self.gridder(raw, slice_index, SimpleNamespace(basis=basis))["tsmi"])

    def sample(self, cond: torch.Tensor, seed: int, normal: Any = None) -> torch.Tensor:
        """``K`` restored TSMIs ``(K, R, Nx, Ny)`` complex64 (CPU) of a complex condition ``(R, Nx, Ny)``.

        ``normal``: the slice's density-compensated normal operator ``A^H D A`` (for which
        ``cond = A^H D y``); with ``dc_steps > 0`` every ``x0_hat`` is pulled towards the data.
        """
        scale = float(condition_scale(cond))  # raises for an empty / broken condition
        x = complex_to_channels(cond.to(torch.complex64) / scale)
        w = channel_scale_from_hyper_parameters(self.hyper_parameters)
        w = torch.ones(x.shape[0]) if w is None else w
        x = x * w[:, None, None]
        transform = None
        if self.dc_steps and normal is not None:
            transform = self._data_consistency(normal, cond.to(torch.complex64) / scale, w)
        if self.amp:
            dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
            with torch.autocast(self.device.type, dtype=dtype):
                out = self.sampler.sample_slice(self.model, x, self.n_samples, seed, transform)
        else:
            out = self.sampler.sample_slice(self.model, x, self.n_samples, seed, transform)
        return channels_to_complex(out.float().cpu() / w[:, None, None], dim=1) * scale

    def _data_consistency(self, normal: Any, rhs: torch.Tensor, w: torch.Tensor) -> Any:
        """``x0_hat`` correction: a proximal k-space data-consistency step.

        Solves ``(A^H D A + lam I) x = A^H D y + lam x0_hat`` with ``dc_steps`` conjugate-gradient
        iterations started at ``x0_hat`` (``lam = dc_lambda * ||A^H D A||``): the closest image to
        the network's estimate that also agrees with the measured k-space (MRF-DiPh's proximal
        step, without its dictionary projection).
        """
        from mrf_monai.baselines.lrtv import power_iteration

        lipschitz = power_iteration(normal, rhs, n_iter=15, generator=torch.Generator().manual_seed(0))
        lam = self.dc_lambda * lipschitz
        wc = w[:, None, None]

        def op(x: torch.Tensor) -> torch.Tensor:
            return normal(x) + lam * x

        def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a.conj() * b).real.sum(dim=(-3, -2, -1), keepdim=True)

        def transform(x0: torch.Tensor, i: int) -> torch.Tensor:
            x = channels_to_complex(x0.float().cpu() / wc, dim=1)
            b = rhs + lam * x
            r = b - op(x)
            p, rs = r, dot(r, r)
            for _ in range(self.dc_steps):
                ap = op(p)
                alpha = rs / dot(p, ap).clamp(min=1e-30)
                x = x + alpha * p
                r = r - alpha * ap
                rs_new = dot(r, r)
                p = r + (rs_new / rs.clamp(min=1e-30)) * p
                rs = rs_new
            return (complex_to_channels(x, dim=1) * wc).to(device=x0.device, dtype=x0.dtype)

        return transform

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Reconstruct one slice: ``{"tsmi": (R, Nx, Ny), "samples": (K, R, Nx, Ny)}`` complex64."""
        basis, q = self.check_compatible(raw, dictionary)
        normal = None
        if self.dc_steps:
            if self._dc_problem is None:  # caches the density and Toeplitz kernels across slices
                from mrf_monai.baselines.lrtv import LRTVReconstructor

                self._dc_problem = LRTVReconstructor(preconditioned=True)
            normal, _, cond = self._dc_problem.problem(raw, slice_index, basis)
        else:
            cond = self.condition(raw, slice_index, basis)
        samples = self.sample(cond, derive_seed(self.seed, slice_index), normal)
        if q is not None:
            samples = torch.einsum("dr,kr...->kd...", q.cpu(), samples)
        return {"tsmi": samples.mean(dim=0), "samples": samples}
