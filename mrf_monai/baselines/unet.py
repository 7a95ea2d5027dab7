"""U-Net baseline: a residual U-Net that de-aliases the gridded compressed TSMI in one pass.

The network (DRUNet-like, Zhang et al. 2021) is MONAI's :class:`~monai.networks.nets.UNet`
built from residual units, without normalisation layers and without biases, and it predicts
a *residual* that is added to its input::

    x_ref ~ f(x_c) = x_c + UNet(x_c)

on ``2R`` real channels (``[Re c_0..Re c_{R-1}, Im c_0..Im c_{R-1}]``). It is trained on the
same simulated pairs and 64 x 64 patches as MRF-IDDPM (:mod:`mrf_monai.simulation.pairs`) with
an L1 (default) or MSE loss, and applied to the whole slice at once (zero-padded to a
multiple of the network's down-sampling factor, at least 16). Intensities are normalised as
for MRF-IDDPM (``docs/interfaces.md``, "Intensity normalisation"): divide by the 0.99
quantile of ``|cond[0]|`` over the whole slice, multiply the output by it again.

Checkpoints are plain dictionaries (as in :mod:`mrf_monai.diffusion.model`)::

    {"format": "mrf_monai.baselines.unet/1",
     "hyper_parameters": {"model": build_unet kwargs, "rank": R, "quantile": 0.99,
                          "sequence_key": str | None,
                          "data": {"basis": (T, R) complex | None, "sequence": dict | None,
                                   "sequence_key": str | None, "rank": R},
                          "training": {...}},
     "state_dict": weights, ...}

so :func:`load_unet_checkpoint` rebuilds the network without configuration, and the
reconstructor refuses (with a message saying what differs) raw data of another sequence or
a dictionary of another rank or subspace. As for MRF-IDDPM
(:mod:`mrf_monai.diffusion.reconstructor`), when the training basis is stored the condition
is gridded with *that* basis and the output is rotated into the dictionary's basis by
``Q = B_dict^H B_model`` (exact when both span the same subspace, e.g. an SVD with other
column phases).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = [
    "UNET_CHECKPOINT_FORMAT",
    "ResidualUNet",
    "build_unet",
    "unet_hyper_parameters",
    "pad_to_multiple",
    "training_data_description",
    "save_unet_checkpoint",
    "load_unet_checkpoint",
    "predict_padded",
    "UNetTrainer",
    "UNetReconstructor",
]

#: tag stored in every U-Net baseline checkpoint.
UNET_CHECKPOINT_FORMAT = "mrf_monai.baselines.unet/1"


class ResidualUNet(nn.Module):
    """``x + UNet(x)`` on ``2R`` real channels (residual learning of the aliasing artefact).

    Args:
        rank: subspace rank ``R``; input and output have ``2R`` channels.
        channels: feature channels per resolution level (DRUNet: 64, 128, 256, 512).
        strides: down-sampling strides between levels (``len(channels) - 1`` entries).
        num_res_units: residual units per level (MONAI :class:`~monai.networks.blocks.ResidualUnit`).
        act: activation (MONAI name or ``(name, kwargs)``).
        norm: normalisation layer, ``None`` for none (DRUNet has none, which keeps the map
            ``x -> f(x)`` positively homogeneous without biases).
        bias: convolution biases.
        dropout: dropout probability.
    """

    def __init__(
        self,
        rank: int = 5,
        channels: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 2,
        act: str | tuple = "RELU",
        norm: str | tuple | None = None,
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if len(strides) != len(channels) - 1:
            raise ValueError(
                f"need len(strides) == len(channels) - 1, got {len(strides)} and {len(channels)}"
            )
        self.rank = int(rank)
        self.unet = UNet(
            spatial_dims=2,
            in_channels=2 * rank,
            out_channels=2 * rank,
            channels=tuple(int(c) for c in channels),
            strides=tuple(int(s) for s in strides),
            num_res_units=int(num_res_units),
            act=act,
            norm=norm,  # type: ignore[arg-type]
            bias=bias,
            dropout=dropout,
        )
        #: spatial sizes must be multiples of this (product of the strides).
        self.divisor = int(math.prod(int(s) for s in strides))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2R, H, W) -> (B, 2R, H, W)``; ``H`` and ``W`` multiples of :attr:`divisor`."""
        if x.shape[1] != 2 * self.rank:
            raise ValueError(f"expected {2 * self.rank} channels (rank {self.rank}), got {x.shape[1]}")
        return x + self.unet(x)


def unet_hyper_parameters(
    rank: int = 5,
    channels: Sequence[int] = (64, 128, 256, 512),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    act: str | Sequence = "RELU",
    norm: str | Sequence | None = None,
    bias: bool = False,
    dropout: float = 0.0,
) -> dict[str, Any]:
    """The keyword arguments of :func:`build_unet` as a plain, JSON-compatible dictionary."""
    return {
        "rank": int(rank),
        "channels": [int(c) for c in channels],
        "strides": [int(s) for s in strides],
        "num_res_units": int(num_res_units),
        "act": act if isinstance(act, str) else list(act),
        "norm": norm if (norm is None or isinstance(norm, str)) else list(norm),
        "bias": bool(bias),
        "dropout": float(dropout),
    }


def build_unet(**kwargs: Any) -> ResidualUNet:
    """Build the residual U-Net baseline from :func:`unet_hyper_parameters` keyword arguments."""
    hp = unet_hyper_parameters(**kwargs)
    act = hp["act"] if isinstance(hp["act"], str) else tuple(hp["act"])
    norm = hp["norm"] if (hp["norm"] is None or isinstance(hp["norm"], str)) else tuple(hp["norm"])
    return ResidualUNet(
        rank=hp["rank"],
        channels=hp["channels"],
        strides=hp["strides"],
        num_res_units=hp["num_res_units"],
        act=act,
        norm=norm,
        bias=hp["bias"],
        dropout=hp["dropout"],
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Zero-pad the last two axes symmetrically to multiples of ``multiple``.

    Returns:
        the padded tensor and the two slices that crop it back to the input size.
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    top, left = ph // 2, pw // 2
    padded = torch.nn.functional.pad(x, (left, pw - left, top, ph - top))
    return padded, (slice(top, top + h), slice(left, left + w))


def training_data_description(
    dataset: Any = None, dictionary: Any = None, sequence: Any = None
) -> dict[str, Any]:
    """What the network was trained on: basis, sequence, its key and the rank (stored in checkpoints).

    Taken from ``dataset`` (e.g. :class:`~mrf_monai.simulation.pairs.SimulatedPairDataset`, which
    has ``basis``, ``sequence`` and ``rank``), else from ``dictionary``; ``sequence`` (an
    ``MRFSequence`` or its key) overrides the sequence.
    """
    basis = getattr(dataset, "basis", None)
    if basis is None and dictionary is not None:
        basis = dictionary.basis
        rank = getattr(dataset, "rank", None)
        if rank is not None:
            basis = torch.as_tensor(basis)[:, : int(rank)]
    if sequence is None:
        sequence = getattr(dataset, "sequence", None)
    if sequence is None:
        sequence = getattr(dictionary, "sequence", None)
    data: dict[str, Any] = {
        "basis": None if basis is None else torch.as_tensor(basis).detach().to("cpu", torch.complex64),
        "sequence": None if sequence is None or isinstance(sequence, str) else sequence.to_dict(),
        "sequence_key": _sequence_key(sequence),
    }
    data["rank"] = None if data["basis"] is None else int(data["basis"].shape[1])
    return data


def save_unet_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    hyper_parameters: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    quantile: float = 0.99,
    training: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a U-Net baseline checkpoint (atomically: temporary name, then rename).

    Args:
        path: output file (``.pt``).
        model: the trained :class:`ResidualUNet` (DDP/compile wrappers are unwrapped).
        hyper_parameters: :func:`unet_hyper_parameters` of the network.
        data: :func:`training_data_description` of the training data (basis, sequence);
            ``None`` disables the subspace and sequence checks at inference (only the rank
            is checked).
        quantile: intensity-normalisation quantile used in training.
        training: training settings (loss, steps, learning rate, data), stored for the record.
        extra: further entries (e.g. ``"step"``, ``"optimizer"``).
    """
    model = _unwrap(model)
    hp = dict(hyper_parameters)
    data = dict(data or {})
    if data.get("rank") is not None and int(data["rank"]) != int(hp["rank"]):
        raise ValueError(f"the training data have rank {data['rank']} but the network rank {hp['rank']}")
    ckpt: dict[str, Any] = {
        "format": UNET_CHECKPOINT_FORMAT,
        "hyper_parameters": {
            "model": hp,
            "rank": int(hp["rank"]),
            "sequence_key": data.get("sequence_key"),
            "data": data,
            "quantile": float(quantile),
            "training": dict(training or {}),
        },
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if extra:
        ckpt.update(dict(extra))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_unet_checkpoint(
    path: str | os.PathLike | Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> tuple[ResidualUNet, dict[str, Any]]:
    """Rebuild the network of a U-Net baseline checkpoint and load its weights.

    Returns:
        ``(model, checkpoint)`` with the model in eval mode on ``map_location``.
    """
    if isinstance(path, Mapping):
        ckpt = dict(path)
        where = "checkpoint"
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"U-Net baseline checkpoint {path} not found; train it with `python -m monai.bundle run "
                "training --meta_file bundles/unet_baseline/configs/metadata.json --config_file "
                "bundles/unet_baseline/configs/train.json`"
            )
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
        where = os.fspath(path)
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != UNET_CHECKPOINT_FORMAT:
        raise ValueError(f"{where} is not a U-Net baseline checkpoint (format {UNET_CHECKPOINT_FORMAT!r})")
    model = build_unet(**ckpt["hyper_parameters"]["model"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), dict(ckpt)


def predict_padded(model: nn.Module, x: torch.Tensor, multiple: int | None = None) -> torch.Tensor:
    """Apply the network to whole images of any size: zero-pad to ``multiple``, run, crop back.

    Args:
        model: a :class:`ResidualUNet` (or a wrapper of one).
        x: ``(B, 2R, H, W)`` normalised channels.
        multiple: padding multiple; default ``max(16, model.divisor)`` rounded up to a
            multiple of the divisor.

    Returns:
        ``(B, 2R, H, W)``.
    """
    if multiple is None:
        divisor = int(getattr(_unwrap(model), "divisor", 16))
        multiple = divisor * math.ceil(16 / divisor)
    padded, (sx, sy) = pad_to_multiple(x, multiple)
    return model(padded)[..., sx, sy]


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _sequence_key(sequence: Any) -> str | None:
    if sequence is None:
        return None
    if isinstance(sequence, str):
        return sequence
    return str(sequence.key())


class UNetTrainer:
    """Supervised training of the U-Net baseline; build it from a bundle config and call :meth:`run`.

    It shares the data pipeline of MRF-IDDPM (:class:`mrf_monai.diffusion.training.DiffusionTrainer`):
    the same ``{"image": reference, "cond": condition}`` pairs, the same per-step seeded
    batches drawn with replacement (:class:`~mrf_monai.diffusion.training.StepBatchSampler`),
    the same random 64 x 64 patches and flips
    (:func:`~mrf_monai.diffusion.training.default_train_transforms`), the same checkpoint
    folder layout (``checkpoints/checkpoint_<step>.pt``, ``model_final.pt``, ``best.pt``),
    exact resuming and ``torchrun`` + DDP.

    Args:
        train_dataset: map-style dataset of dicts ``{"image", "cond"}`` ``(2R, H, W)`` float.
        output_dir: run folder.
        model_kwargs: :func:`build_unet` keyword arguments (stored in the checkpoints).
        loss: ``"l1"`` or ``"mse"`` between the network output and the reference.
        max_steps, batch_size, lr, weight_decay, grad_clip, lr_warmup_steps: optimisation (Adam).
        train_transforms: per-item (seeded) transforms, e.g. ``default_train_transforms()``.
        num_workers: data-loader workers.
        seed: base seed.
        amp: mixed precision on CUDA (bfloat16).
        device: ``"auto"`` or a device.
        log_every, checkpoint_every, keep_checkpoints, resume: as in ``DiffusionTrainer``.
        val_dataset, val_index, val_every: whole-slice validation (one forward pass); the
            metric is ``T1 MAPE + T2 MAPE`` (%) with ``dictionary``, else the TSMI NRMSE.
        dictionary: ``MRFDictionary`` for the validation matching.
        model_path: where the best (or, without validation, the final) weights are exported.
        sequence: the ``MRFSequence`` (or its key) of the training data; default
            ``train_dataset.sequence``, else the dictionary's. It and the training basis
            (``train_dataset.basis``, else the dictionary's) are stored in the checkpoint
            (:func:`training_data_description`) so that inference refuses other data.
        quantile: intensity-normalisation quantile of the data (stored).
        progress, tensorboard: tqdm bar and TensorBoard events (rank 0).
        extra_hyper_parameters: stored with the training settings in the checkpoints; a ``"data"``
            mapping (e.g. ``patch_size``, ``matrix``) is merged into ``hyper_parameters["data"]``.
        num_threads: ``torch.set_num_threads`` for this process (``None``: unchanged).
    """

    def __init__(
        self,
        train_dataset: Any,
        output_dir: str | os.PathLike = "runs/unet_baseline",
        model_kwargs: Mapping[str, Any] | None = None,
        loss: str = "l1",
        max_steps: int = 50_000,
        batch_size: int = 32,
        lr: float = 1e-4,
        lr_warmup_steps: int = 0,
        weight_decay: float = 0.0,
        grad_clip: float | None = 1.0,
        train_transforms: Any = None,
        num_workers: int = 0,
        seed: int = 0,
        amp: bool = False,
        device: str | torch.device = "auto",
        log_every: int = 50,
        checkpoint_every: int = 5000,
        keep_checkpoints: int = 3,
        resume: str | os.PathLike | None = "auto",
        val_dataset: Any | None = None,
        val_index: int = 0,
        val_every: int = 5000,
        dictionary: Any | None = None,
        model_path: str | os.PathLike | None = None,
        sequence: Any = None,
        quantile: float = 0.99,
        progress: bool = True,
        tensorboard: bool = True,
        extra_hyper_parameters: Mapping[str, Any] | None = None,
        num_threads: int | None = None,
        channel_scale: Sequence[float] | str | None = "auto",
    ) -> None:
        from mrf_monai.diffusion.training import init_distributed

        if num_threads:
            torch.set_num_threads(int(num_threads))
        if loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
        self.rank, self.world_size, self.local_rank, auto_device = init_distributed()
        self.device = auto_device if str(device) == "auto" else torch.device(device)
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.model_kwargs = unet_hyper_parameters(**dict(model_kwargs or {}))
        self.loss_name = loss
        self.max_steps, self.batch_size = int(max_steps), int(batch_size)
        self.lr, self.lr_warmup_steps = float(lr), int(lr_warmup_steps)
        self.weight_decay = float(weight_decay)
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.train_dataset, self.train_transforms = train_dataset, train_transforms
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.log_every, self.checkpoint_every = max(1, int(log_every)), int(checkpoint_every)
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        self.resume = None if resume in (None, "", "none", "None", False) else resume
        self.val_dataset, self.val_index, self.val_every = val_dataset, int(val_index), int(val_every)
        self.dictionary = dictionary
        self.model_path = Path(model_path) if model_path else None
        self.data_description = training_data_description(train_dataset, dictionary, sequence)
        extra = dict(extra_hyper_parameters or {})
        data_extra = extra.pop("data", None)
        if isinstance(data_extra, Mapping):  # data settings (patch size, matrix, ...) join the description
            for key, value in data_extra.items():
                self.data_description.setdefault(str(key), value)
        if self.data_description["rank"] not in (None, self.model_kwargs["rank"]):
            raise ValueError(
                f"the training data have rank {self.data_description['rank']}, the network "
                f"{self.model_kwargs['rank']}: set model_kwargs rank to the data's"
            )
        self.quantile = float(quantile)
        self.progress, self.use_tensorboard = bool(progress), bool(tensorboard)
        self.is_main = self.rank == 0
        # the same per-component scaling as MRF-IDDPM (mrf_monai.diffusion.scaling): without it the
        # loss is dominated by component 0 and the small components, which carry T1/T2, are ignored
        if isinstance(channel_scale, str):
            from mrf_monai.diffusion.scaling import measure_channel_scale

            measured = measure_channel_scale(train_dataset)
            if self.world_size > 1 and torch.distributed.is_initialized():
                torch.distributed.broadcast(measured, src=0)
            channel_scale = measured.tolist()
        self.channel_scale = None if channel_scale is None else torch.as_tensor(list(channel_scale)).float()
        if self.channel_scale is not None:
            self.data_description["channel_scale"] = [float(v) for v in self.channel_scale]

        self.network = build_unet(**self.model_kwargs).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        warm = self.lr_warmup_steps
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm > 0 else 1.0
        )
        self.amp = bool(amp) and self.device.type == "cuda"
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_network: nn.Module = nn.parallel.DistributedDataParallel(self.network, device_ids=ids)
        else:
            self.ddp_network = self.network
        self.step = 0
        self.best_metric = math.inf
        self.history: list[dict[str, float]] = []
        self.training_hyper_parameters: dict[str, Any] = {
            "loss": loss,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "lr": self.lr,
            "lr_warmup_steps": self.lr_warmup_steps,
            "weight_decay": self.weight_decay,
            "grad_clip": self.grad_clip,
            "seed": self.seed,
            "amp": self.amp,
            **extra,
        }

    # ------------------------------------------------------------------ checkpoints
    def _save(self, path: Path, full: bool) -> Path:
        extra: dict[str, Any] = {"step": self.step, "best_metric": self.best_metric}
        if full:
            from mrf_monai.diffusion.training import _rng_state

            extra.update(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "lr_scheduler": self.lr_scheduler.state_dict(),
                    "rng": [_rng_state()],
                    "history": self.history,
                }
            )
        return save_unet_checkpoint(
            path,
            self.network,
            self.model_kwargs,
            self.data_description,
            self.quantile,
            training=self.training_hyper_parameters,
            extra=extra,
        )

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/checkpoint_<step>.pt`` (rank 0) and prune old ones."""
        if not self.is_main:
            return None
        path = self._save(self.checkpoint_dir / f"checkpoint_{self.step:08d}.pt", full=True)
        found = sorted(p for p in self.checkpoint_dir.iterdir() if p.name.startswith("checkpoint_"))
        for old in found[: -self.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def export_model(self, path: str | os.PathLike) -> Path:
        """Write the weights with the hyper-parameters (what :class:`UNetReconstructor` loads)."""
        return self._save(Path(path), full=False)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a training checkpoint written by :meth:`save_checkpoint`."""
        from mrf_monai.diffusion.training import _set_rng_state

        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
        hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, Mapping) else {}
        if ckpt.get("format") != UNET_CHECKPOINT_FORMAT or hp.get("model") != self.model_kwargs:
            raise ValueError(f"checkpoint {path} was written for another network or format")
        self.network.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.step = int(ckpt["step"])
        self.best_metric = float(ckpt.get("best_metric", math.inf))
        self.history = list(ckpt.get("history", []))
        rng = ckpt.get("rng") or []
        if len(rng) == 1 and self.world_size == 1:
            _set_rng_state(rng[0])

    # ------------------------------------------------------------------ training
    def _loader(self) -> Any:
        from monai.data import list_data_collate
        from torch.utils.data import DataLoader

        from mrf_monai.diffusion.training import SeededTransformDataset, StepBatchSampler, step_seed

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
            pin_memory=self.device.type == "cuda",
            generator=gen,
        )

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 or squared error over all channels and pixels."""
        diff = prediction.float() - target.float()
        return diff.abs().mean() if self.loss_name == "l1" else diff.pow(2).mean()

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimiser step on a collated batch; returns the loss, gradient norm and lr."""
        from monai.utils import convert_to_tensor

        target = convert_to_tensor(batch["image"], track_meta=False).to(self.device, torch.float32)
        cond = convert_to_tensor(batch["cond"], track_meta=False).to(self.device, torch.float32)
        target, cond = self._scaled(target), self._scaled(cond)
        self.network.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            pred = predict_padded(self.ddp_network, cond)
        loss = self.loss(pred, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.grad_clip if self.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), max_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.step += 1
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    def _scaled(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Apply (or undo) the per-channel scale on ``(..., 2R, H, W)``."""
        if self.channel_scale is None:
            return x
        w = self.channel_scale.to(x.device, x.dtype)[:, None, None]
        return x / w if inverse else x * w

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Whole-slice prediction of the validation item; NRMSE and (with a dictionary) MAPEs."""
        from monai.utils import convert_to_tensor

        from mrf_monai.diffusion.training import channels_to_complex_tsmi, mape

        item = self.val_dataset[self.val_index]
        ref = convert_to_tensor(item["image"], track_meta=False).float()
        cond = convert_to_tensor(item["cond"], track_meta=False).float()
        self.network.eval()
        est = predict_padded(self.network, self._scaled(cond[None].to(self.device)))
        est = self._scaled(est, inverse=True)[0].float().cpu()
        nrmse = torch.linalg.vector_norm(est - ref) / torch.linalg.vector_norm(ref).clamp(min=1e-12)
        out = {"nrmse": float(nrmse)}
        if self.dictionary is not None:
            from mrf_monai.matching.match import match_dictionary

            m_ref = match_dictionary(channels_to_complex_tsmi(ref), self.dictionary)
            m_est = match_dictionary(channels_to_complex_tsmi(est), self.dictionary, mask=m_ref["mask"])
            out["t1_mape"] = mape(m_est["t1_s"], m_ref["t1_s"], m_ref["mask"])
            out["t2_mape"] = mape(m_est["t2_s"], m_ref["t2_s"], m_ref["mask"])
            out["metric"] = out["t1_mape"] + out["t2_mape"]
        else:
            out["metric"] = out["nrmse"]
        return out

    def run(self) -> dict[str, Any]:
        """Train until ``max_steps`` (resuming first when configured); returns a summary with the
        per-step training losses (``"losses"``)."""
        import logging

        from mrf_monai.diffusion.training import find_last_checkpoint

        log = logging.getLogger(__name__)
        if self.resume is not None:
            path = (
                find_last_checkpoint(self.checkpoint_dir) if str(self.resume) == "auto" else Path(self.resume)
            )
            if path is not None:
                self.load_checkpoint(path)
        writer = None
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.use_tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=os.fspath(self.output_dir / "tensorboard"))
        pbar = None
        if self.is_main and self.progress:
            from tqdm import tqdm

            pbar = tqdm(total=self.max_steps, initial=self.step, desc="unet", unit="step", dynamic_ncols=True)
        do_val = self.val_dataset is not None and self.val_every > 0
        losses: list[float] = []
        try:
            for batch in self._loader():
                last = self.train_step(batch)
                losses.append(last["loss"])
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{last['loss']:.4f}")
                finished = self.step == self.max_steps
                if self.step % self.log_every == 0 or finished:
                    if writer is not None:
                        for k, v in last.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                    if self.is_main:
                        log.info("step %d: %s", self.step, {k: round(v, 5) for k, v in last.items()})
                if do_val and self.is_main and (self.step % self.val_every == 0 or finished):
                    result = self.validate()
                    self.history.append({"step": float(self.step), **result})
                    if writer is not None:
                        for k, v in result.items():
                            writer.add_scalar(f"val/{k}", v, self.step)
                    log.info("step %d: validation %s", self.step, result)
                    if result["metric"] < self.best_metric:
                        self.best_metric = float(result["metric"])
                        self.export_model(self.checkpoint_dir / "best.pt")
                        if self.model_path is not None:
                            self.export_model(self.model_path)
                if self.checkpoint_every > 0 and (self.step % self.checkpoint_every == 0 or finished):
                    self.save_checkpoint()
                self._barrier()
        finally:
            if pbar is not None:
                pbar.close()
            if writer is not None:
                writer.close()
        final_path = None
        if self.is_main:
            final_path = self.export_model(self.output_dir / "model_final.pt")
            if self.model_path is not None and not do_val:
                self.export_model(self.model_path)
        self._barrier()
        return {
            "step": self.step,
            "losses": losses,
            "best_metric": self.best_metric,
            "final_model": final_path,
            "model_path": self.model_path,
            "history": self.history,
        }

    def _barrier(self) -> None:
        import torch.distributed as dist

        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()


class UNetReconstructor:
    """U-Net baseline reconstruction of one slice (a :class:`mrf_monai.pipeline.Reconstructor`).

    The slice is gridded exactly like the SVD-MRF baseline (the network's condition) in the
    training subspace, divided by its per-slice scale, passed through the network as a whole
    (zero-padded to a multiple of 16), rescaled and expressed in the dictionary's basis.

    Args:
        model_path: checkpoint written by :class:`UNetTrainer` (the bundle's ``models/model.pt``).
        device: where the network runs (``None``: CPU; ``"auto"``: CUDA when available).
        gridding_device: device of the gridding NUFFTs (``None``: CPU, which always works).
        subspace_tolerance: largest accepted ``1 - sigma_min(B_dict^H B_model)``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike = "bundles/unet_baseline/models/model.pt",
        device: str | torch.device | None = None,
        gridding_device: str | torch.device | None = None,
        subspace_tolerance: float = 1e-3,
    ) -> None:
        from mrf_monai.acquisition.gridding import SubspaceGridder

        if device is None or str(device) == "auto":
            device = "cuda" if (device is not None and torch.cuda.is_available()) else "cpu"
        self.device = torch.device(device)
        self.model, ckpt = load_unet_checkpoint(model_path, map_location=self.device)
        hp = ckpt["hyper_parameters"]
        data = dict(hp.get("data") or {})
        self.model_path = os.fspath(model_path)
        self.rank = int(hp["rank"])
        self.sequence_key = data.get("sequence_key", hp.get("sequence_key"))
        basis = data.get("basis")
        self.model_basis = None if basis is None else torch.as_tensor(basis).to(torch.complex128)
        self.quantile = float(hp.get("quantile", 0.99))
        scale = data.get("channel_scale")
        self.channel_scale = None if scale is None else torch.as_tensor(list(scale)).float().to(self.device)
        self.subspace_tolerance = float(subspace_tolerance)
        self.gridder = SubspaceGridder(device=gridding_device)

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
            f"the U-Net {self.model_path}",
            self.subspace_tolerance,
        )

    @torch.no_grad()
    def denoise(self, cond: torch.Tensor) -> torch.Tensor:
        """Network estimate ``(R, Nx, Ny)`` complex64 (network basis) of a gridding image ``(R, Nx, Ny)``."""
        from mrf_monai.transforms.complex import channels_to_complex, complex_to_channels
        from mrf_monai.transforms.intensity import condition_scale

        cond = torch.as_tensor(cond).to(self.device, torch.complex64)
        scale = condition_scale(cond, self.quantile).to(self.device)
        x = complex_to_channels(cond / scale)[None].float()
        w = 1.0 if self.channel_scale is None else self.channel_scale[:, None, None]
        y = predict_padded(self.model, x * w)[0].float() / w
        return channels_to_complex(y) * scale

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Reconstruct slice ``slice_index`` of ``raw``: ``{"tsmi": (R, Nx, Ny) complex64}`` on the CPU."""
        from types import SimpleNamespace

        basis, q = self.check_compatible(raw, dictionary)
        cond = torch.as_tensor(self.gridder(raw, slice_index, SimpleNamespace(basis=basis))["tsmi"])
        tsmi = self.denoise(cond).cpu()
        if q is not None:
            tsmi = torch.einsum("dr,r...->d...", q.cpu(), tsmi)
        return {"tsmi": tsmi.to(torch.complex64)}
