"""Per-step seeded training data: batches, per-item transform seeds, the description of the data.

Every random draw of step ``s`` on process ``process_rank`` derives from
``(seed, process_rank, s)`` (:func:`step_seed`): the items of the batch and the seed of each
item's (MONAI, randomizable) transform (:class:`StepBatchSampler`), so a run resumed at step
``k`` sees exactly the batches of the uninterrupted run, whatever the number of data-loader
workers. Items are drawn uniformly with replacement at every step (training counts steps,
not epochs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate
from monai.transforms import Compose, RandFlipd, Randomizable, RandSpatialCropd, apply_transform
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "step_seed",
    "default_train_transforms",
    "SeededTransformDataset",
    "StepBatchSampler",
    "step_loader",
    "training_data_description",
    "sequence_key",
]


def step_seed(*keys: int) -> int:
    """A 31-bit seed derived from integers (e.g. ``(seed, process_rank, step, stream)``)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


def default_train_transforms(
    keys: Sequence[str] = ("image", "cond"),
    patch_size: Sequence[int] | None = (64, 64),
    random_flip: bool = True,
) -> Compose:
    """Random ``patch_size`` crop (``None``: whole item) and random flips, both axes, jointly on ``keys``.

    The bundles write the same ``Compose`` in their config (``train#preprocessing``).
    """
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
    generator seeded with ``(seed, process_rank, s)``.
    """

    def __init__(
        self, n_items: int, batch_size: int, seed: int, process_rank: int, start_step: int, max_steps: int
    ) -> None:
        if n_items < 1:
            raise ValueError("the training dataset is empty.")
        self.n_items, self.batch_size = int(n_items), int(batch_size)
        self.seed, self.process_rank = int(seed), int(process_rank)
        self.start_step, self.max_steps = int(start_step), int(max_steps)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The keys of the batch of ``step``."""
        rng = np.random.default_rng(step_seed(self.seed, self.process_rank, step, 1))
        idx = rng.integers(0, self.n_items, self.batch_size)
        seeds = rng.integers(0, 2**31 - 1, self.batch_size)
        return [(int(i), int(s)) for i, s in zip(idx, seeds)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.max_steps):
            yield self.batch(step)


def step_loader(
    dataset: Any,
    transform: Callable | None,
    batch_size: int,
    seed: int,
    process_rank: int,
    start_step: int,
    max_steps: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The data loader of steps ``start_step .. max_steps - 1`` (one batch per step, MONAI collation)."""
    sampler = StepBatchSampler(len(dataset), batch_size, seed, process_rank, start_step, max_steps)
    gen = torch.Generator().manual_seed(step_seed(seed, process_rank, start_step, 2))
    return DataLoader(
        SeededTransformDataset(dataset, transform),
        batch_sampler=sampler,
        num_workers=int(num_workers),
        collate_fn=list_data_collate,
        pin_memory=pin_memory,
        generator=gen,
    )


def sequence_key(sequence: Any) -> str | None:
    """The key of an ``MRFSequence`` (a string is taken as a key already; ``None`` stays ``None``)."""
    if sequence is None:
        return None
    if isinstance(sequence, str):
        return sequence
    return str(sequence.key())


def training_data_description(
    dataset: Any = None, dictionary: Any = None, sequence: Any = None, rank: int | None = None
) -> dict[str, Any]:
    """What a network was trained on: basis, sequence, its key and the rank (stored with the weights).

    Inference checks them against the raw data and the dictionary
    (:func:`mrf_monai.transforms.subspace.check_model_subspace`).

    Args:
        dataset: training dataset; its ``basis`` (``(T, R)`` complex), ``sequence`` and ``rank``
            are used when it has them (e.g. :class:`~mrf_monai.simulation.pairs.SimulatedPairDataset`).
        dictionary: ``MRFDictionary`` of the training subspace, used for what the dataset lacks
            (its basis is cut to ``rank`` columns).
        sequence: an ``MRFSequence`` or its key; overrides the dataset's and dictionary's.
        rank: the network's subspace rank (cuts a dictionary basis of higher rank).

    Returns:
        ``{"basis": (T, R) complex64 CPU tensor | None, "sequence": dict | None,
        "sequence_key": str | None, "rank": int | None}``.
    """
    basis = getattr(dataset, "basis", None)
    if basis is None and dictionary is not None:
        basis = torch.as_tensor(dictionary.basis)
        cut = getattr(dataset, "rank", None) or rank
        if cut is not None:
            basis = basis[:, : int(cut)]
    if sequence is None:
        sequence = getattr(dataset, "sequence", None)
    if sequence is None:
        sequence = getattr(dictionary, "sequence", None)
    data: dict[str, Any] = {
        "basis": None
        if basis is None
        else torch.as_tensor(basis).detach().to("cpu", torch.complex64).clone(),
        "sequence": None if sequence is None or isinstance(sequence, str) else sequence.to_dict(),
        "sequence_key": sequence_key(sequence),
    }
    data["rank"] = None if data["basis"] is None else int(data["basis"].shape[1])
    return data
