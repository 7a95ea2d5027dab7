"""Checkpoint bookkeeping of the training engine: RNG states that load safely, checkpoint files.

The RNG states of torch, numpy and Python's ``random`` are stored as tensors, numbers and
lists only (numpy's state holds an ndarray, Python's a tuple), so training checkpoints load
with ``torch.load(..., weights_only=True)`` (:mod:`mrf_monai.io.weights`).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "rng_state",
    "set_rng_state",
    "checkpoint_name",
    "find_last_checkpoint",
    "prune_checkpoints",
]

_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """The global RNG states of this process as tensors, numbers and lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state is saved)
    version, mt, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(v) for v in mt], "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = np.asarray(torch.as_tensor(n["keys"]).numpy(), dtype=np.uint32)
    np.random.set_state(  # noqa: NPY002
        (n["bit_generator"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"]), p["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_name(step: int) -> str:
    """``checkpoint_<step>.pt`` with the step on 8 digits (names sort by step)."""
    return f"checkpoint_{int(step):08d}.pt"


def find_last_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint_<step>.pt`` with the largest step in a folder (``None`` if none)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


def prune_checkpoints(checkpoint_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` latest ``checkpoint_<step>.pt``; returns the deleted paths."""
    folder = Path(checkpoint_dir)
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name)))
    old = [p for _, p in found[: -max(1, int(keep))]]
    for p in old:
        p.unlink(missing_ok=True)
    return old
