"""The training engine shared by MRF-IDDPM and the U-Net baseline.

:class:`Trainer` owns everything both methods need: per-step seeded batches
(:mod:`mrf_monai.engines.data`), the ``torchrun`` + DDP set-up
(:mod:`mrf_monai.engines.distributed`), the loop with a step budget and a wall-clock budget
(``max_time_s``, agreed across processes), mixed precision (float16 with a gradient scaler, or
bfloat16), gradient clipping, linear learning-rate warm-up, logging and TensorBoard, periodic
validation that exports the best weights, checkpoints (save, prune, resume) and the export of
the final and best weights as a plain ``state_dict`` plus JSON hyper-parameters
(:mod:`mrf_monai.io.weights`). A subclass says what one step computes (:meth:`compute_loss`)
and how to validate (:meth:`validate`): :class:`mrf_monai.diffusion.training.DiffusionTrainer`
and :class:`mrf_monai.baselines.unet.UNetTrainer`.

Network, optimiser and loss are built outside (in the bundle config: ``network_def``,
``network``, ``optimizer``, ``loss``) and handed in. The network must carry its build
arguments as ``network.hyper_parameters`` (the project's factories ``build_model`` and
``build_unet`` set them), since they are stored with the weights so that inference rebuilds it.

Determinism and resuming: every random draw of step ``s`` on process ``process_rank`` derives
from ``(seed, process_rank, s)``: the batch and its transform seeds, what the subclass draws
with :meth:`step_generator` (diffusion timesteps and noise), and the global torch RNG used by
dropout (forked and seeded per step). A run resumed from the checkpoint of step ``k``
therefore continues exactly like the uninterrupted run.

Fine-tuning: ``init_from`` starts a new run from exported weights
(:mod:`mrf_monai.engines.initialise`); a run folder with checkpoints resumes from them instead.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from monai.utils import convert_to_tensor
from torch import nn

from mrf_monai.io.weights import load_training_checkpoint, save_training_checkpoint, save_weights

from .data import step_loader, step_seed, training_data_description
from .distributed import init_distributed, unwrap_network
from .initialise import init_description, read_init_weights, same_subspace
from .scaling import channel_scale_from_hyper_parameters, measure_channel_scale
from .schedules import lr_factor
from .state import checkpoint_name, find_last_checkpoint, prune_checkpoints, rng_state, set_rng_state

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Trainer:
    """Step-counted supervised training on ``{"image": reference, "cond": condition}`` pairs.

    Args:
        network: the network (built by ``build_model`` / ``build_unet``, which record
            ``network.hyper_parameters``); moved to the training device.
        optimizer: optimiser of ``network.parameters()`` (e.g. ``torch.optim.Adam``).
        train_dataset: map-style dataset of dicts with ``"image"`` and ``"cond"``, ``(2R, H, W)``
            float tensors, already normalised.
        output_dir: run folder: ``checkpoints/``, ``tensorboard/``, ``model_final.pt`` (+ ``.json``).
        train_transforms: applied to every training item (e.g. a MONAI ``Compose`` of
            ``RandSpatialCropd`` and ``RandFlipd``), seeded per item when randomizable.
        max_steps: total optimiser steps; ``batch_size``: items per step and process.
        lr_warmup_steps: linear warm-up of the learning rate over this many steps.
        lr_schedule: ``"constant"`` after the warm-up, or ``"cosine"`` down to ``lr_min_ratio``
            times the learning rate at ``max_steps`` (:mod:`mrf_monai.engines.schedules`).
        grad_clip: clip the global gradient norm to this (``None``/``0``: no clipping).
        num_workers: data-loader worker processes.
        seed: base seed (each process and step derive their own).
        amp: mixed precision on CUDA (ignored on CPU); ``amp_dtype``: ``"float16"`` (with a
            gradient scaler) or ``"bfloat16"``.
        device: ``"auto"`` (``cuda:LOCAL_RANK`` when available) or a device.
        log_every: steps between loss logs (TensorBoard and logger).
        checkpoint_every: steps between checkpoints (and one at the end; ``0``: none);
            ``keep_checkpoints`` most recent kept.
        resume: ``"auto"`` (latest checkpoint in ``output_dir/checkpoints`` if any), a path, or
            ``None``/``"none"`` (start from scratch).
        val_dataset: dataset of whole slices for validation (``None``: no validation).
        val_index: which item of ``val_dataset``; ``val_roi``: its centre crop ``(H, W)``
            (``None``: whole slice).
        val_every: steps between validations (and one at the end); ``0`` disables.
        dictionary: ``MRFDictionary`` of the training subspace: its basis and sequence are stored
            with the weights (checked at inference) and validation matches against it (the
            metric is then ``T1 MAPE + T2 MAPE`` in %, else the TSMI NRMSE).
        sequence: ``MRFSequence`` (or its key) of the training data; default: the dataset's,
            else the dictionary's.
        model_path: where the best (by validation metric) weights are exported; when no
            validation ever ran, the final weights.
        channel_scale: per-channel factors ``(2R,)`` applied to reference and condition
            (:mod:`mrf_monai.engines.scaling`): ``"auto"`` measures them on the first 32 training
            items (process 0's, broadcast), ``None`` disables scaling. Stored with the weights.
        progress: tqdm progress bar (process 0); ``tensorboard``: event files (process 0).
        extra_hyper_parameters: stored with the weights; a ``"data"`` mapping (e.g. matrix,
            noise, patch size) joins ``hyper_parameters["data"]``.
        num_threads: ``torch.set_num_threads`` for this process (``None``: unchanged).
        max_time_s: wall-clock budget of this run in seconds (``None``/``0``: none). When it is
            spent, the run ends as if ``max_steps`` were reached (validation, checkpoint,
            export); a later run with ``resume="auto"`` continues. All processes stop at the
            same step.
        init_from: weights file (``model.pt`` with its ``model.json``, as the trainers export) to
            start a *new* run from (fine-tuning): the network (and so the EMA of MRF-IDDPM) is
            initialised from it; optimiser, learning-rate schedule and step start afresh. The
            configured network must have the file's hyper-parameters (an error names what
            differs). With ``channel_scale="auto"`` the file's channel scale is used when the
            training subspace (rank, sequence, basis) is the file's, else it is measured on this
            run's data. Ignored (not read) when the run resumes from a checkpoint, which takes
            precedence. Stored as ``hyper_parameters["training"]["init_from"]`` (path, SHA-256,
            the file's step and best metric, the channel scale's source).
    """

    #: tag of this trainer's checkpoints and weights (``hyper_parameters["format"]``).
    format_tag = "mrf_monai.engines/1"
    #: progress-bar label.
    progress_label = "train"

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_dataset: Any,
        output_dir: str | os.PathLike = "runs/train",
        train_transforms: Callable | None = None,
        max_steps: int = 100_000,
        batch_size: int = 32,
        lr_warmup_steps: int = 0,
        lr_schedule: str = "constant",
        lr_min_ratio: float = 0.1,
        grad_clip: float | None = 1.0,
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
        dictionary: Any | None = None,
        sequence: Any = None,
        model_path: str | os.PathLike | None = None,
        channel_scale: Sequence[float] | str | None = "auto",
        progress: bool = True,
        tensorboard: bool = True,
        extra_hyper_parameters: Mapping[str, Any] | None = None,
        num_threads: int | None = None,
        max_time_s: float | None = None,
        init_from: str | os.PathLike | None = None,
    ) -> None:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_AMP_DTYPES)}, got {amp_dtype!r}")
        self.max_time_s = float(max_time_s) if max_time_s else None
        self.dist = init_distributed(device)
        self.device = self.dist.device
        self.process_rank, self.world_size = self.dist.process_rank, self.dist.world_size
        self.is_main = self.dist.is_main
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"

        bare = unwrap_network(network)
        model_hp = getattr(bare, "hyper_parameters", None)
        if not isinstance(model_hp, Mapping):
            raise TypeError(
                f"{type(bare).__name__} has no 'hyper_parameters' (its build arguments), which the exported "
                "weights need: build the network with mrf_monai.diffusion.model.build_model or "
                "mrf_monai.baselines.unet.build_unet"
            )
        self.model_hyper_parameters: dict[str, Any] = dict(model_hp)
        self.network = bare.to(self.device)
        self.resume = None if resume in (None, "", "none", "None", False) else resume
        self.init_from = None if init_from in (None, "", "none", "None", False) else Path(init_from)
        init_hp = self._start_from_weights()
        own = {id(p) for p in self.network.parameters()}
        if any(id(p) not in own for group in optimizer.param_groups for p in group["params"]):
            raise ValueError(
                "the optimizer must optimise the network's parameters (params: $@network.parameters())"
            )
        self.optimizer = optimizer
        self.lr_warmup_steps = int(lr_warmup_steps)
        self.lr_schedule, self.lr_min_ratio = str(lr_schedule), float(lr_min_ratio)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(self.lr_schedule, self.lr_warmup_steps, int(max_steps), self.lr_min_ratio)
        )
        self.amp = bool(amp) and self.device.type == "cuda"
        self.amp_dtype = _AMP_DTYPES[amp_dtype]
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_network: nn.Module = nn.parallel.DistributedDataParallel(self.network, device_ids=ids)
        else:
            self.ddp_network = self.network

        self.train_dataset, self.train_transforms = train_dataset, train_transforms
        self.max_steps, self.batch_size = int(max_steps), int(batch_size)
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.log_every, self.checkpoint_every = max(1, int(log_every)), int(checkpoint_every)
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        self.val_dataset, self.val_index, self.val_every = val_dataset, int(val_index), int(val_every)
        self.val_roi = tuple(int(v) for v in val_roi) if val_roi is not None else None
        self.dictionary = dictionary
        self.model_path = Path(model_path) if model_path else None
        self.progress, self.use_tensorboard = bool(progress), bool(tensorboard)

        extra = dict(extra_hyper_parameters or {})
        rank = self.model_hyper_parameters.get("rank")
        self.data_description = training_data_description(train_dataset, dictionary, sequence, rank)
        if self.data_description["rank"] not in (None, rank):
            raise ValueError(
                f"the training data have rank {self.data_description['rank']}, the network {rank}: "
                "set the network's rank to the data's"
            )
        data_extra = extra.pop("data", None)
        if isinstance(data_extra, Mapping):  # data settings (patch size, matrix, ...) join the description
            for key, value in data_extra.items():
                self.data_description.setdefault(str(key), value)
        self.channel_scale = self._channel_scale(channel_scale, init_hp)
        if self.init_from is not None and self.init_info is None:  # a new run from the file
            self.init_info = init_description(self.init_from, init_hp or {}, self._scale_source)
        if self.channel_scale is not None:
            self.data_description["channel_scale"] = [float(v) for v in self.channel_scale]
        self.extra_hyper_parameters = extra
        #: what is stored with the weights; subclasses complete it (``"model"``, ``"training"``, ...).
        self.hyper_parameters: dict[str, Any] = {"model": self.model_hyper_parameters}

        self.step = 0
        self.best_metric = math.inf
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ set-up helpers
    def _start_from_weights(self) -> dict[str, Any] | None:
        """``init_from``: load the file into the network (a new run), or note the resumed run's start.

        Returns the hyper-parameters whose channel scale ``"auto"`` may reuse: the file's for a new
        run, the checkpoint's when resuming (``None`` without ``init_from``).
        """
        self.init_info: dict[str, Any] | None = None
        self._scale_source, self._resuming = "measured", False
        if self.init_from is None:
            return None
        resume = self.resume_path()
        if resume is not None:  # bit-exact resuming takes precedence: the checkpoint has it all
            hp = dict(load_training_checkpoint(resume)["hyper_parameters"])
            self.init_info = (hp.get("training") or {}).get("init_from")
            self._resuming = True
            logger.info("init_from %s not used: resuming from %s", self.init_from, resume)
            return hp
        state, hp = read_init_weights(self.init_from, self.format_tag, self.model_hyper_parameters)
        self.network.load_state_dict(state)
        logger.info("new run initialised from %s (its step %s)", self.init_from, hp.get("step"))
        return hp

    def _channel_scale(
        self, channel_scale: Sequence[float] | str | None, init_hp: Mapping[str, Any] | None = None
    ) -> torch.Tensor | None:
        if channel_scale is None:
            self._scale_source = "none"
            return None
        if isinstance(channel_scale, str):
            if channel_scale != "auto":
                raise ValueError(f"channel_scale must be 'auto', a list or None, got {channel_scale!r}")
            stored = None if init_hp is None else channel_scale_from_hyper_parameters(init_hp)
            if stored is not None:
                same, what = same_subspace(init_hp.get("data") or {}, self.data_description)
                if same or self._resuming:
                    self._scale_source = "init_from"
                    return stored
                logger.info("init_from: the file's subspace differs (%s): channel scale measured", what)
            measured = measure_channel_scale(self.train_dataset)
            return self.dist.broadcast_from_main(measured).float()  # every process uses process 0's
        self._scale_source = "config"
        return torch.as_tensor(list(channel_scale), dtype=torch.float32)

    def training_hyper_parameters(self) -> dict[str, Any]:
        """The optimisation settings stored with the weights (``hyper_parameters["training"]``)."""
        defaults = self.optimizer.defaults
        return {
            "optimizer": type(self.optimizer).__name__,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "lr": float(defaults.get("lr", math.nan)),
            "lr_warmup_steps": self.lr_warmup_steps,
            "lr_schedule": self.lr_schedule,
            "lr_min_ratio": self.lr_min_ratio,
            "weight_decay": float(defaults.get("weight_decay", 0.0)),
            "grad_clip": self.grad_clip,
            "seed": self.seed,
            "amp": self.amp,
            "init_from": self.init_info,
        }

    def step_generator(self, stream: int) -> torch.Generator:
        """A CPU generator seeded with ``(seed, process_rank, step, stream)`` (1, 2 and 4 are taken)."""
        return torch.Generator().manual_seed(step_seed(self.seed, self.process_rank, self.step, stream))

    def autocast(self) -> AbstractContextManager:
        """Autocast to ``amp_dtype`` when mixed precision is on, else nothing."""
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()

    def scaled(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Apply (or undo) the per-channel scale on ``(..., 2R, H, W)``."""
        if self.channel_scale is None:
            return x
        w = self.channel_scale.to(x.device, x.dtype)[:, None, None]
        return x / w if inverse else x * w

    def prepare_batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target, cond)`` of a collated batch: float32 on the device, channel-scaled."""
        target = convert_to_tensor(batch["image"], track_meta=False).to(
            self.device, torch.float32, non_blocking=True
        )
        cond = convert_to_tensor(batch["cond"], track_meta=False).to(
            self.device, torch.float32, non_blocking=True
        )
        return self.scaled(target), self.scaled(cond)

    # ------------------------------------------------------------------ subclass hooks
    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch to back-propagate and scalars to log (run in :meth:`autocast` inside)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. an EMA update)."""

    def validate(self) -> dict[str, Any]:
        """Score the validation item; must return ``"metric"`` (lower is better)."""
        raise NotImplementedError

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights inference uses (default: the network's)."""
        return self.network.state_dict()

    def training_state(self) -> dict[str, Any]:
        """Extra entries of a training checkpoint (e.g. raw and EMA weights)."""
        return {}

    def load_training_state(self, ckpt: Mapping[str, Any]) -> None:
        """Restore the network (and what :meth:`training_state` saved) from a checkpoint."""
        self.network.load_state_dict(ckpt["state_dict"])

    def log_validation(self, writer: Any, result: Mapping[str, Any]) -> None:
        """Log the validation scalars (subclasses may add images)."""
        scalars = {k: v for k, v in result.items() if isinstance(v, float)}
        logger.info("step %d: validation %s", self.step, {k: round(v, 4) for k, v in scalars.items()})
        if writer is not None:
            for k, v in scalars.items():
                writer.add_scalar(f"val/{k}", v, self.step)

    def validation_item(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reference, condition)`` of the validation slice (centre crop ``val_roi``), unscaled."""
        item = self.val_dataset[self.val_index]
        ref = convert_to_tensor(item["image"], track_meta=False).float()
        cond = convert_to_tensor(item["cond"], track_meta=False).float()
        if self.val_roi is not None:
            h, w = ref.shape[-2:]
            rh, rw = min(self.val_roi[0], h), min(self.val_roi[1], w)
            top, left = (h - rh) // 2, (w - rw) // 2
            ref = ref[..., top : top + rh, left : left + rw]
            cond = cond[..., top : top + rh, left : left + rw]
        return ref, cond

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimiser step on a collated batch; returns the logged scalars, ``grad_norm`` and ``lr``."""
        self.network.train()
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            # dropout draws from the global RNG: seed it per step for exact resuming
            torch.manual_seed(step_seed(self.seed, self.process_rank, self.step, 4))
            loss, logs = self.compute_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(loss).backward()
        self.grad_scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), max_norm)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.lr_scheduler.step()
        self.after_step()
        self.step += 1
        return {**logs, "grad_norm": float(grad_norm), "lr": float(self.optimizer.param_groups[0]["lr"])}

    def loader(self) -> Any:
        """The data loader of the remaining steps (from :attr:`step` to ``max_steps``)."""
        return step_loader(
            self.train_dataset,
            self.train_transforms,
            self.batch_size,
            self.seed,
            self.process_rank,
            self.step,
            self.max_steps,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------------ checkpoints and weights
    def weights_hyper_parameters(self) -> dict[str, Any]:
        """What is written beside the weights: format, hyper-parameters and provenance."""
        return {
            "format": self.format_tag,
            **self.hyper_parameters,
            "step": self.step,
            "best_metric": self.best_metric,
        }

    def export_model(self, path: str | os.PathLike) -> Path:
        """Write the weights (:meth:`export_state_dict`) as ``path`` + ``path.with_suffix(".json")``."""
        return save_weights(path, self.export_state_dict(), self.weights_hyper_parameters())

    def checkpoint_dict(self) -> dict[str, Any]:
        """The training checkpoint of the current state (collective under DDP: every process calls it)."""
        return {
            "format": self.format_tag,
            "hyper_parameters": self.hyper_parameters,
            "step": self.step,
            "best_metric": self.best_metric,
            "state_dict": self.export_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict(),
            "rng": self.dist.gather_objects(rng_state()),
            "history": self.history,
            **self.training_state(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/checkpoint_<step>.pt`` (process 0) and prune old ones."""
        ckpt = self.checkpoint_dict()
        if not self.is_main:
            return None
        path = save_training_checkpoint(self.checkpoint_dir / checkpoint_name(self.step), ckpt)
        prune_checkpoints(self.checkpoint_dir, self.keep_checkpoints)
        logger.info("step %d: checkpoint %s", self.step, path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (read with ``weights_only=True``)."""
        ckpt = load_training_checkpoint(path)
        if ckpt.get("format") != self.format_tag:
            raise ValueError(
                f"checkpoint {path} has format {ckpt.get('format')!r}, "
                f"this trainer writes {self.format_tag!r}"
            )
        if ckpt["hyper_parameters"].get("model") != self.model_hyper_parameters:
            raise ValueError(
                f"checkpoint {path} was written for another network: {ckpt['hyper_parameters'].get('model')}"
            )
        self.load_training_state(ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.grad_scaler.load_state_dict(ckpt["grad_scaler"])
        self.step = int(ckpt["step"])
        self.best_metric = float(ckpt.get("best_metric", math.inf))
        self.history = list(ckpt.get("history", []))
        rng = ckpt.get("rng") or []
        if len(rng) == self.world_size:
            set_rng_state(rng[self.process_rank])
        logger.info("resumed from %s at step %d", path, self.step)

    def resume_path(self) -> Path | None:
        """The checkpoint :meth:`run` resumes from (``None``: start from scratch)."""
        if self.resume is None:
            return None
        if str(self.resume) == "auto":
            return find_last_checkpoint(self.checkpoint_dir)
        path = Path(self.resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint {path} does not exist.")
        return path

    # ------------------------------------------------------------------ loop
    def _validate_and_keep_best(self, writer: Any) -> None:
        result = self.validate()
        self.log_validation(writer, result)
        self.history.append(
            {"step": float(self.step), **{k: v for k, v in result.items() if isinstance(v, float)}}
        )
        if result["metric"] < self.best_metric:
            self.best_metric = float(result["metric"])
            self.export_model(self.checkpoint_dir / "best.pt")
            if self.model_path is not None:
                self.export_model(self.model_path)
            logger.info("step %d: new best validation metric %.4f", self.step, self.best_metric)

    def _log_step(self, writer: Any, last: Mapping[str, float], rate: float) -> None:
        if writer is not None:
            for k, v in last.items():
                writer.add_scalar(f"train/{k}", v, self.step)
            writer.add_scalar("train/steps_per_s", rate, self.step)
        if self.is_main:
            logger.info(
                "step %d: %s steps/s=%.3f", self.step, {k: round(v, 5) for k, v in last.items()}, rate
            )

    def time_up(self, t_start: float) -> bool:
        """Whether ``max_time_s`` is spent (agreed across processes)."""
        if not self.max_time_s:
            return False
        return self.dist.any_true(time.perf_counter() - t_start > self.max_time_s)

    def run(self) -> dict[str, Any]:
        """Train until ``max_steps`` or ``max_time_s`` (resuming first when configured).

        Returns:
            ``step``, ``last`` (the last step's scalars), ``losses`` (this run's per-step
            losses), ``best_metric``, ``final_model`` and ``model_path`` (paths written by
            process 0) and ``history`` (validation results).
        """
        path = self.resume_path()
        if path is not None:
            self.load_checkpoint(path)
        writer = None
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.use_tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=os.fspath(self.output_dir / "tensorboard"))
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
                total=self.max_steps,
                initial=self.step,
                desc=self.progress_label,
                unit="step",
                dynamic_ncols=True,
            )
        do_val = self.val_dataset is not None and self.val_every > 0
        last: dict[str, float] = {}
        losses: list[float] = []
        t_start, s_start = time.perf_counter(), self.step
        try:
            for batch in self.loader():
                last = self.train_step(batch)
                losses.append(last["loss"])
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{last['loss']:.4f}")
                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    self._log_step(
                        writer, last, (self.step - s_start) / max(time.perf_counter() - t_start, 1e-9)
                    )
                finished = self.step == self.max_steps or self.time_up(t_start)
                if do_val and (self.step % self.val_every == 0 or finished):
                    if self.is_main:
                        self._validate_and_keep_best(writer)
                    self.dist.barrier()
                if self.checkpoint_every > 0 and (self.step % self.checkpoint_every == 0 or finished):
                    self.save_checkpoint()
                    self.dist.barrier()
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
        self.dist.barrier()
        return {
            "step": self.step,
            "last": last,
            "losses": losses,
            "best_metric": self.best_metric,
            "final_model": final_path,
            "model_path": self.model_path,
            "history": self.history,
        }
