"""The training engine shared by MRF-IDDPM and the U-Net baseline.

Sub-modules: ``trainer`` (:class:`Trainer`: loop, AMP, checkpoints, validation, export),
``data`` (per-step seeded batches and transforms, description of the training data),
``distributed`` (``torchrun`` set-up, NCCL-safe collectives), ``state`` (RNG states and
checkpoint files), ``scaling`` (per-component channel scale), ``schedules`` (learning-rate
schedules), ``validation`` (MAPE of matched maps). Names are imported lazily (on first attribute access).
"""

from __future__ import annotations

from mrf_monai._lazy import lazy_exports

_EXPORTS = {
    "trainer": ("Trainer",),
    "data": (
        "step_seed",
        "default_train_transforms",
        "SeededTransformDataset",
        "StepBatchSampler",
        "step_loader",
        "training_data_description",
        "sequence_key",
    ),
    "distributed": ("DistributedContext", "init_distributed", "training_device", "unwrap_network"),
    "state": ("rng_state", "set_rng_state", "checkpoint_name", "find_last_checkpoint", "prune_checkpoints"),
    "scaling": ("measure_channel_scale", "channel_scale_from_hyper_parameters"),
    "schedules": ("LR_SCHEDULES", "lr_factor"),
    "validation": ("mape", "nrmse", "map_errors", "display_image"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
