# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Training loop of MRF-IDDPM, instantiated from a MONAI bundle config.

:class:`DiffusionTrainer` trains the conditional noise predictor of
:mod:`mrf_monai.diffusion.model` on ``{"image": reference, "cond": condition}`` pairs
(``(2R, H, W)`` float32 each) with Adam, EMA weights, gradient clipping, optional AMP (CUDA),
periodic checkpoints, DDIM validation with dictionary matching (T1/T2 MAPE), TensorBoard
logging and ``torchrun`` + DDP.

Determinism and resuming: every random draw of step ``s`` on process ``rank`` is derived from
``(seed, rank, s)``: the items and the seeds of the (MONAI, randomizable) training transforms of
the batch (:class:`StepBatchSampler`), the diffusion timesteps and noise, and the global torch RNG
used by dropout (forked per step). A run resumed from the checkpoint of step ``k`` therefore
continues exactly like the uninterrupted run, independently of the number of data-loader
workers. Items are drawn uniformly with replacement at every step (training is counted in
steps, not epochs).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import list_data_collate
from monai.transforms import Compose, RandFlipd, Randomizable, RandSpatialCropd, apply_transform
from monai.utils import convert_to_tensor
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .ema import ExponentialMovingAverage
from .losses import DiffusionLoss
from .model import (
    CHECKPOINT_FORMAT,
    build_model,
    build_scheduler,
    model_hyper_parameters,
    predict_eps_and_var,
)

__all__ = [
    "DiffusionTrainer",
    "StepBatchSampler",
    "SeededTransformDataset",
    "default_train_transforms",
    "step_seed",
    "mape",
    "channels_to_complex_tsmi",
    "init_distributed",
    "find_last_checkpoint",
]

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")


def step_seed(*keys: int) -> int:
    """A 31-bit seed derived from integers (e.g. ``(seed, rank, step, stream)``)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


def default_train_transforms(
    keys: Sequence[str] = ("image", "cond"),
    patch_size: Sequence[int] | None = (64, 64),
    random_flip: bool = True,
) -> Compose:
    """Random ``patch_size`` crop (``None``: whole item) and random flips, both axes, jointly on ``keys``."""
    xforms: list[Callable] = []
    if patch_size is not None:
        xforms.append(RandSpatialCropd(keys=list(keys), roi_size=list(patch_size), random_size=False))
    if random_flip:
        xforms += [
            RandFlipd(keys=list(keys), prob=0.5, spatial_axis=0),
            RandFlipd(keys=list(keys), prob=0.5, spatial_axis=1),
        ]
    return Compose(xforms)


class SeededTransformDataset(Dataset):
    """Applies ``transform`` to ``dataset[index]`` after seeding it with a per-item seed.

    Indexed with ``(index, seed)`` pairs (see :class:`StepBatchSampler`); a randomizable
    transform (e.g. a MONAI ``Compose``) gets ``set_random_state(seed)`` before each item, so the
    result depends only on the key, not on worker processes or the history of draws.
    """

    def __init__(self, dataset: Any, transform: Callable | None = None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        item = self.dataset[int(index)]
        if self.transform is None:
            return item
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=int(seed))
        return apply_transform(self.transform, item)


class StepBatchSampler:
    """Batches of ``(index, item_seed)`` for steps ``start_step .. max_steps - 1``.

    The batch of step ``s`` is drawn uniformly with replacement from ``range(n_items)`` by a
    generator seeded with ``(seed, rank, s)``.
    """

    def __init__(
        self, n_items: int, batch_size: int, seed: int, rank: int, start_step: int, max_steps: int
    ) -> None:
        if n_items < 1:
            raise ValueError("the training dataset is empty.")
        self.n_items, self.batch_size = int(n_items), int(batch_size)
        self.seed, self.rank = int(seed), int(rank)
        self.start_step, self.max_steps = int(start_step), int(max_steps)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The keys of the batch of ``step``."""
        rng = np.random.default_rng(step_seed(self.seed, self.rank, step, 1))
        idx = rng.integers(0, self.n_items, self.batch_size)
        seeds = rng.integers(0, 2**31 - 1, self.batch_size)
        return [(int(i), int(s)) for i, s in zip(idx, seeds)]

    def __iter__(self):
        for step in range(self.start_step, self.max_steps):
            yield self.batch(step)


def channels_to_complex_tsmi(x: torch.Tensor) -> torch.Tensor:
    """``(2R, ...)`` real ``[Re, Im]`` channels -> ``(R, ...)`` complex."""
    r = x.shape[0] // 2
    return torch.complex(x[:r].float(), x[r:].float())


def mape(estimate: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute percentage error (%) over ``mask & (reference > 0)``."""
    m = mask.bool() & (reference > 0)
    if not bool(m.any()):
        return float("nan")
    return float(((estimate[m] - reference[m]).abs() / reference[m]).mean() * 100.0)


def init_distributed(backend: str = "auto") -> tuple[int, int, int, torch.device]:
    """Initialise ``torch.distributed`` from ``torchrun``'s environment when ``WORLD_SIZE > 1``.

    Returns:
        ``(rank, world_size, local_rank, device)``; ``device`` is ``cuda:local_rank`` when CUDA
        is available, else CPU. ``backend="auto"``: NCCL on CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=("nccl" if cuda else "gloo") if backend == "auto" else backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank, device
    return 0, 1, local_rank, device


def find_last_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint_<step>.pt`` with the largest step in a folder (``None`` if none)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (global state is what is saved)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _display(x: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` -> ``(1, H, W)`` scaled to ``[0, 1]`` by its 99.5th percentile."""
    x = x.detach().float().cpu()
    hi = torch.quantile(x.flatten(), 0.995).clamp(min=1e-12)
    return (x / hi).clamp(0, 1)[None]


class DiffusionTrainer:
    """Trains MRF-IDDPM; build it from a bundle config and call :meth:`run`.

    Args:
        train_dataset: map-style dataset of dicts with ``"image"`` (reference) and ``"cond"``
            (condition), ``(2R, H, W)`` float tensors, already normalised (whole slices or patches).
        output_dir: run folder: ``checkpoints/``, ``tensorboard/``, ``model_final.pt``.
        model_kwargs: keyword arguments of :func:`~mrf_monai.diffusion.model.build_model`
            (stored in every checkpoint).
        scheduler_kwargs: keyword arguments of :func:`~mrf_monai.diffusion.model.build_scheduler`.
        loss_type: ``"hybrid"`` (improved DDPM, needs ``learn_sigma``) or ``"mse"``.
        vlb_weight: ``lambda`` of the hybrid loss.
        decoder_nll: ``"gaussian"`` or ``"discretized"`` (see :mod:`mrf_monai.diffusion.losses`).
        max_steps: total optimiser steps.
        batch_size: items per step and process.
        lr: Adam learning rate; ``lr_warmup_steps`` linear warm-up.
        weight_decay: Adam (L2) weight decay.
        grad_clip: clip the global gradient norm to this (``None``/``0``: no clipping).
        ema_decay: EMA decay; ``ema_warmup``: ADM-style warm-up of the decay.
        train_transforms: applied to every training item (e.g. :func:`default_train_transforms`);
            seeded per item when randomizable. ``None``: items used as they are.
        num_workers: data-loader worker processes.
        seed: base seed (each process and step derive their own).
        amp: mixed precision on CUDA (ignored on CPU); ``amp_dtype``: ``"float16"`` (with a
            gradient scaler) or ``"bfloat16"``.
        device: ``"auto"`` (CUDA if available) or a device.
        log_every: steps between loss logs (TensorBoard and logger).
        checkpoint_every: steps between checkpoints (and one at the end); ``keep_checkpoints``
            most recent kept.
        resume: ``"auto"`` (latest checkpoint in ``output_dir/checkpoints`` if any), a path, or
            ``None``/``"none"`` (start from scratch).
        val_dataset: dataset of whole slices for validation (``None``: no validation).
        val_index: which item of ``val_dataset``.
        val_roi: centre crop ``(H, W)`` of the validation slice (``None``: whole slice; must be
            divisible by ``2 ** (levels - 1)``).
        val_every: steps between validations (and one at the end); ``0`` disables.
        val_ddim_steps: DDIM steps of the validation sample; ``val_num_samples`` samples averaged.
        dictionary: ``MRFDictionary`` of the training subspace: its ``basis[:, :R]``, ``sequence``
            and sequence key are stored in the checkpoints (``hyper_parameters["data"]``, checked at
            inference), and validation matches against it: the validation metric is then
            ``T1 MAPE + T2 MAPE`` (%), else the TSMI NRMSE of the EMA sample.
        model_path: where the best (by validation metric) EMA weights + hyper-parameters are
            exported; when no validation ever ran, the final EMA weights are exported there.
        progress: tqdm progress bar (rank 0).
        tensorboard: write TensorBoard event files (rank 0).
        extra_hyper_parameters: stored in the checkpoints' ``hyper_parameters``; a ``"data"``
            entry is merged into ``hyper_parameters["data"]`` (e.g. matrix, noise, patch size).
        num_threads: ``torch.set_num_threads`` for this process (``None``: unchanged); on shared
            or small CPUs one thread per process is often fastest.
        max_time_s: wall-clock budget of this run in seconds (``None``/``0``: none). When it is
            spent, the run ends as if ``max_steps`` were reached (validation, checkpoint,
            export); a later run with ``resume="auto"`` continues from there. All ranks stop
            at the same step.
        channel_scale: per-channel factors ``(2R,)`` applied to reference and condition inside
            the diffusion process (:mod:`mrf_monai.diffusion.scaling`): ``"auto"`` measures them on
            the first 32 training items, ``None`` disables scaling. Stored in the checkpoints.
    """

    def __init__(
        self,
        train_dataset: Any,
        output_dir: str | os.PathLike = "runs/mrf_iddpm",
        model_kwargs: Mapping[str, Any] | None = None,
        scheduler_kwargs: Mapping[str, Any] | None = None,
        loss_type: str = "hybrid",
        vlb_weight: float = 0.001,
        decoder_nll: str = "gaussian",
        max_steps: int = 100_000,
        batch_size: int = 32,
        lr: float = 1e-4,
        lr_warmup_steps: int = 0,
        weight_decay: float = 0.0,
        grad_clip: float | None = 1.0,
        ema_decay: float = 0.9999,
        ema_warmup: bool = False,
        train_transforms: Callable | None = None,
        num_workers: int = 0,
        seed: int = 0,
        amp: bool = False,
        amp_dtype: str = "float16",
        device: str | torch.device = "auto",
        log_every: int = 50,
        checkpoint_every: int = 5000,
        keep_checkpoints: int = 3,
        resume: str | os.PathLike | None = "auto",
        val_dataset: Any | None = None,
        val_index: int = 0,
        val_roi: Sequence[int] | None = None,
        val_every: int = 5000,
        val_ddim_steps: int = 50,
        val_num_samples: int = 1,
        dictionary: Any | None = None,
        model_path: str | os.PathLike | None = None,
        progress: bool = True,
        tensorboard: bool = True,
        extra_hyper_parameters: Mapping[str, Any] | None = None,
        num_threads: int | None = None,
        max_time_s: float | None = None,
        channel_scale: Sequence[float] | str | None = "auto",
    ) -> None:
        self.max_time_s = float(max_time_s) if max_time_s else None
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.rank, self.world_size, self.local_rank, auto_device = init_distributed()
        self.device = auto_device if str(device) == "auto" else torch.device(device)
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.model_kwargs = model_hyper_parameters(**dict(model_kwargs or {}))
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        if loss_type == "hybrid" and not self.model_kwargs["learn_sigma"]:
            raise ValueError("loss_type='hybrid' needs model_kwargs learn_sigma=True (use 'mse' otherwise).")
        self.max_steps, self.batch_size = int(max_steps), int(batch_size)
        self.lr, self.lr_warmup_steps, self.weight_decay = (
            float(lr),
            int(lr_warmup_steps),
            float(weight_decay),
        )
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.seed, self.num_workers = int(seed), int(num_workers)
        self.log_every, self.checkpoint_every = max(1, int(log_every)), int(checkpoint_every)
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        self.resume = None if resume in (None, "", "none", "None", False) else resume
        self.val_dataset, self.val_index = val_dataset, int(val_index)
        self.val_roi = tuple(int(v) for v in val_roi) if val_roi is not None else None
        self.val_every, self.val_ddim_steps = int(val_every), int(val_ddim_steps)
        self.val_num_samples = max(1, int(val_num_samples))
        self.dictionary = dictionary
        self.model_path = Path(model_path) if model_path else None
        self.progress, self.use_tensorboard = bool(progress), bool(tensorboard)
        self.train_dataset = train_dataset
        self.train_transforms = train_transforms
        self.is_main = self.rank == 0

        if self.val_dataset is not None and self.val_every > 0 and self.dictionary is not None:
            try:
                from mrf_monai.matching.match import match_dictionary  # noqa: F401
            except ImportError as e:  # pragma: no cover - depends on the installed package
                raise ImportError(
                    "validation with a dictionary needs mrf_monai.matching.match.match_dictionary; "
                    "set dictionary to null to validate on the TSMI NRMSE instead."
                ) from e

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed(self.seed, 0))  # same initial weights on every rank and run
            self.network = build_model(**self.model_kwargs).to(self.device)
        self.scheduler = build_scheduler(**self.scheduler_kwargs)
        self.loss_fn = DiffusionLoss(
            self.scheduler,
            loss_type=loss_type,
            vlb_weight=vlb_weight,
            decoder_nll=decoder_nll,
            prediction_type=self.model_kwargs["prediction_type"],
        )
        self.ema = ExponentialMovingAverage(self.network, decay=ema_decay, warmup=ema_warmup)
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        warm = self.lr_warmup_steps
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm > 0 else 1.0
        )
        self.amp = bool(amp) and self.device.type == "cuda"
        self.amp_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[amp_dtype]
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_network: nn.Module = nn.parallel.DistributedDataParallel(self.network, device_ids=ids)
        else:
            self.ddp_network = self.network
        self.step = 0
        self.best_metric = math.inf
        self.history: list[dict[str, float]] = []
        self.hyper_parameters: dict[str, Any] = {
            "model": self.model_kwargs,
            "scheduler": self.scheduler_kwargs,
            "loss": {"loss_type": loss_type, "vlb_weight": float(vlb_weight), "decoder_nll": decoder_nll},
            "training": {
                "max_steps": self.max_steps,
                "batch_size": self.batch_size,
                "world_size": self.world_size,
                "lr": self.lr,
                "lr_warmup_steps": self.lr_warmup_steps,
                "weight_decay": self.weight_decay,
                "grad_clip": self.grad_clip,
                "ema_decay": float(ema_decay),
                "seed": self.seed,
                "amp": self.amp,
            },
            "normalisation": "per-slice scale = quantile(|cond[0]|, 0.99) (docs/interfaces.md)",
        }
        extra = dict(extra_hyper_parameters or {})
        data_info: dict[str, Any] = {}
        if dictionary is not None:  # the subspace the network is trained in (checked at inference)
            rank = self.model_kwargs["rank"]
            data_info["basis"] = torch.as_tensor(dictionary.basis)[:, :rank].detach().cpu().clone()
            sequence = getattr(dictionary, "sequence", None)
            if sequence is not None:
                data_info["sequence"] = sequence.to_dict()
                data_info["sequence_key"] = sequence.key()
        data_info.update(dict(extra.pop("data", None) or {}))
        if isinstance(channel_scale, str):
            if channel_scale != "auto":
                raise ValueError(f"channel_scale must be 'auto', a list or None, got {channel_scale!r}")
            from mrf_monai.diffusion.scaling import measure_channel_scale

            measured = measure_channel_scale(self.train_dataset).to(self.device)
            if self.world_size > 1 and torch.distributed.is_initialized():
                torch.distributed.broadcast(measured, src=0)  # every rank uses rank 0's factors
            channel_scale = measured.cpu().tolist()
        self.channel_scale = None
        if channel_scale is not None:
            self.channel_scale = torch.as_tensor(list(channel_scale), dtype=torch.float32)
            data_info["channel_scale"] = [float(v) for v in self.channel_scale]
        if data_info:
            self.hyper_parameters["data"] = data_info
        self.hyper_parameters.update(extra)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dict(self, full: bool = True) -> dict[str, Any]:
        """The checkpoint of the current state (``full=False``: only EMA weights + hyper-parameters)."""
        ckpt: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "hyper_parameters": self.hyper_parameters,
            "state_dict": self.ema.module.state_dict(),
            "step": self.step,
            "best_metric": self.best_metric,
        }
        if full:
            ckpt.update(
                {
                    "model": self.network.state_dict(),
                    "ema": self.ema.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "lr_scheduler": self.lr_scheduler.state_dict(),
                    "grad_scaler": self.grad_scaler.state_dict(),
                    "rng": self._gather_rng(),
                    "history": self.history,
                }
            )
        return ckpt

    def _gather_rng(self) -> list[dict[str, Any]]:
        state = _rng_state()
        if self.world_size > 1:
            states: list[Any] = [None] * self.world_size
            dist.all_gather_object(states, state)
            return states
        return [state]

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/checkpoint_<step>.pt`` (rank 0) and prune old ones."""
        ckpt = self.checkpoint_dict(full=True)  # collective under DDP: every rank calls it
        if not self.is_main:
            return None
        path = self.checkpoint_dir / f"checkpoint_{self.step:08d}.pt"
        _atomic_save(ckpt, path)
        found = sorted(p for p in self.checkpoint_dir.iterdir() if _CKPT_RE.match(p.name))
        for old in found[: -self.keep_checkpoints]:
            old.unlink(missing_ok=True)
        logger.info("step %d: checkpoint %s", self.step, path)
        return path

    def export_model(self, path: str | os.PathLike) -> Path:
        """Write the EMA weights with the hyper-parameters (what inference loads)."""
        path = Path(path)
        _atomic_save(self.checkpoint_dict(full=False), path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a training checkpoint written by :meth:`save_checkpoint`."""
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
        if ckpt.get("hyper_parameters", {}).get("model") != self.model_kwargs:
            raise ValueError(
                f"checkpoint {path} was written for another network: {ckpt['hyper_parameters']['model']}."
            )
        self.network.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.ema.to(self.device)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.grad_scaler.load_state_dict(ckpt["grad_scaler"])
        self.step = int(ckpt["step"])
        self.best_metric = float(ckpt.get("best_metric", math.inf))
        self.history = list(ckpt.get("history", []))
        rng = ckpt.get("rng") or []
        if len(rng) == self.world_size:
            _set_rng_state(rng[self.rank])
        logger.info("resumed from %s at step %d", path, self.step)

    def _resume_path(self) -> Path | None:
        if self.resume is None:
            return None
        if str(self.resume) == "auto":
            return find_last_checkpoint(self.checkpoint_dir)
        path = Path(self.resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint {path} does not exist.")
        return path

    # ------------------------------------------------------------------ data
    def _loader(self) -> DataLoader:
        sampler = StepBatchSampler(
            len(self.train_dataset), self.batch_size, self.seed, self.rank, self.step, self.max_steps
        )
        data = SeededTransformDataset(self.train_dataset, self.train_transforms)
        gen = torch.Generator().manual_seed(step_seed(self.seed, self.rank, self.step, 2))
        return DataLoader(
            data,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=list_data_collate,
            generator=gen,
        )

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimiser step on a collated batch; returns scalar losses and the gradient norm."""
        x0 = convert_to_tensor(batch["image"], track_meta=False).to(
            self.device, torch.float32, non_blocking=True
        )
        cond = convert_to_tensor(batch["cond"], track_meta=False).to(
            self.device, torch.float32, non_blocking=True
        )
        x0, cond = self._scaled(x0), self._scaled(cond)
        gen = torch.Generator().manual_seed(step_seed(self.seed, self.rank, self.step, 3))
        t = torch.randint(0, self.scheduler.num_train_timesteps, (x0.shape[0],), generator=gen).to(
            self.device
        )
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        x_t = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
        self.network.train()
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            # dropout draws from the global RNG: seed it per step for exact resuming
            torch.manual_seed(step_seed(self.seed, self.rank, self.step, 4))
            autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()
            with autocast:
                eps, v = predict_eps_and_var(self.ddp_network, x_t, t, cond, self.scheduler.alphas_cumprod)
            losses = self.loss_fn(eps.float(), noise, t, x0, x_t, None if v is None else v.float())
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(losses["loss"]).backward()
        self.grad_scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), max_norm)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.lr_scheduler.step()
        self.ema.update(self.network)
        self.step += 1
        return {
            "loss": float(losses["loss"].detach()),
            "mse": float(losses["mse"].detach()),
            "vlb": float(losses["vlb"].detach()),
            "grad_norm": float(grad_norm),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    # ------------------------------------------------------------------ validation
    def _scaled(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Apply (or undo) the per-channel scale on ``(..., 2R, H, W)``."""
        if self.channel_scale is None:
            return x
        w = self.channel_scale.to(x.device, x.dtype)[:, None, None]
        return x / w if inverse else x * w

    def _val_item(self) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.val_dataset[self.val_index]
        ref = convert_to_tensor(item["image"], track_meta=False).float()
        cond = convert_to_tensor(item["cond"], track_meta=False).float()
        if self.val_roi is not None:
            h, w = ref.shape[-2:]
            rh, rw = min(self.val_roi[0], h), min(self.val_roi[1], w)
            top, left = (h - rh) // 2, (w - rw) // 2
            ref = ref[..., top : top + rh, left : left + rw]
            cond = cond[..., top : top + rh, left : left + rw]
        factor = 2 ** (len(self.model_kwargs["channels"]) - 1)
        if ref.shape[-1] % factor or ref.shape[-2] % factor:
            raise ValueError(
                f"validation image {tuple(ref.shape[-2:])} must be divisible by {factor}; set val_roi."
            )
        return ref, cond

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """DDIM-sample the validation slice with the EMA network and score it (rank 0)."""
        from mrf_monai.diffusion.sampling import sample

        ref, cond = self._val_item()
        net = self.ema.module.eval()
        gen = torch.Generator().manual_seed(step_seed(self.seed, 0, 5))
        cond_b = self._scaled(cond[None].expand(self.val_num_samples, *cond.shape).to(self.device))
        samples = sample(
            net, cond_b, n_steps=self.val_ddim_steps, method="ddim", generator=gen, scheduler=self.scheduler
        )
        est = self._scaled(samples.mean(0).float(), inverse=True).cpu()
        out: dict[str, Any] = {
            "nrmse": float(
                torch.linalg.vector_norm(est - ref) / torch.linalg.vector_norm(ref).clamp(min=1e-12)
            ),
            "images": {"condition": cond, "sample": est, "reference": ref},
        }
        if self.dictionary is not None:
            from mrf_monai.matching.match import match_dictionary

            m_ref = match_dictionary(channels_to_complex_tsmi(ref), self.dictionary)
            m_est = match_dictionary(channels_to_complex_tsmi(est), self.dictionary, mask=m_ref["mask"])
            m_cond = match_dictionary(channels_to_complex_tsmi(cond), self.dictionary, mask=m_ref["mask"])
            mask = m_ref["mask"]
            out["t1_mape"] = mape(m_est["t1_s"], m_ref["t1_s"], mask)
            out["t2_mape"] = mape(m_est["t2_s"], m_ref["t2_s"], mask)
            out["cond_t1_mape"] = mape(m_cond["t1_s"], m_ref["t1_s"], mask)
            out["cond_t2_mape"] = mape(m_cond["t2_s"], m_ref["t2_s"], mask)
            out["metric"] = out["t1_mape"] + out["t2_mape"]
            out["maps"] = {
                "t1_sample": m_est["t1_s"],
                "t1_reference": m_ref["t1_s"],
                "t2_sample": m_est["t2_s"],
                "t2_reference": m_ref["t2_s"],
            }
        else:
            out["metric"] = out["nrmse"]
        return out

    def _log_validation(self, writer: Any, result: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in result.items() if isinstance(v, float)}
        logger.info("step %d: validation %s", self.step, {k: round(v, 4) for k, v in scalars.items()})
        if writer is None:
            return
        for k, v in scalars.items():
            writer.add_scalar(f"val/{k}", v, self.step)
        for k, img in result["images"].items():
            writer.add_image(f"val/{k}", _display(channels_to_complex_tsmi(img)[0].abs()), self.step)
        for k, img in result.get("maps", {}).items():
            writer.add_image(f"val/{k}", _display(img), self.step)

    def _validate_and_keep_best(self, writer: Any) -> None:
        result = self.validate()
        self._log_validation(writer, result)
        self.history.append(
            {"step": float(self.step), **{k: v for k, v in result.items() if isinstance(v, float)}}
        )
        if result["metric"] < self.best_metric:
            self.best_metric = float(result["metric"])
            self.export_model(self.checkpoint_dir / "best.pt")
            if self.model_path is not None:
                self.export_model(self.model_path)
            logger.info("step %d: new best validation metric %.4f", self.step, self.best_metric)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        """Train until ``max_steps`` (resuming first when configured); returns a summary."""
        resume_path = self._resume_path()
        if resume_path is not None:
            self.load_checkpoint(resume_path)
        writer = None
        if self.is_main and self.use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=os.fspath(self.output_dir / "tensorboard"))
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            n_params = sum(p.numel() for p in self.network.parameters())
            logger.info(
                "training %.2fM parameters on %s x%d from step %d to %d",
                n_params / 1e6,
                self.device,
                self.world_size,
                self.step,
                self.max_steps,
            )
        pbar = None
        if self.is_main and self.progress:
            from tqdm import tqdm

            pbar = tqdm(
                total=self.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True
            )
        do_val = self.val_dataset is not None and self.val_every > 0
        last: dict[str, float] = {}
        t_start, s_start = time.perf_counter(), self.step
        try:
            for batch in self._loader():
                last = self.train_step(batch)
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{last['loss']:.4f}", mse=f"{last['mse']:.4f}")
                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    rate = (self.step - s_start) / max(time.perf_counter() - t_start, 1e-9)
                    if writer is not None:
                        for k, v in last.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                        writer.add_scalar("train/steps_per_s", rate, self.step)
                    if self.is_main:
                        logger.info(
                            "step %d: %s steps/s=%.3f",
                            self.step,
                            {k: round(v, 5) for k, v in last.items()},
                            rate,
                        )
                finished = self.step == self.max_steps or self._time_up(t_start)
                if do_val and (self.step % self.val_every == 0 or finished):
                    if self.is_main:
                        self._validate_and_keep_best(writer)
                    self._barrier()
                if self.checkpoint_every > 0 and (self.step % self.checkpoint_every == 0 or finished):
                    self.save_checkpoint()
                    self._barrier()
                if finished:
                    break
        finally:
            if pbar is not None:
                pbar.close()
            if writer is not None:
                writer.flush()
                writer.close()
        final_path = None
        if self.is_main:
            final_path = self.export_model(self.output_dir / "model_final.pt")
            if self.model_path is not None and not math.isfinite(self.best_metric):
                self.export_model(self.model_path)  # never validated: the final weights
        self._barrier()
        return {
            "step": self.step,
            "last": last,
            "best_metric": self.best_metric,
            "final_model": final_path,
            "model_path": self.model_path,
            "history": self.history,
        }

    def _time_up(self, t_start: float) -> bool:
        """Whether ``max_time_s`` is spent (agreed across ranks)."""
        if not self.max_time_s:
            return False
        flag = torch.tensor([float(time.perf_counter() - t_start > self.max_time_s)], device=self.device)
        if self.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _barrier(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
