"""Learning-rate schedules of the training engine: a factor of the configured learning rate per step.

``"constant"`` (the default, as before): a linear warm-up over ``warmup_steps``, then 1.
``"cosine"``: the same warm-up, then a half cosine from 1 down to ``min_ratio`` at
``decay_steps`` (default: ``max_steps``), and ``min_ratio`` after that. A fine-tuning run whose
budget is known (``max_steps``) ends on a small learning rate, where the weights settle instead
of wandering with the last batches (the usual last-phase gain of diffusion training).

The factor depends only on the step, so a resumed run continues exactly (``LambdaLR`` keeps the
step count in its state).
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["LR_SCHEDULES", "lr_factor"]

#: the schedule names :func:`lr_factor` knows.
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(
    schedule: str = "constant",
    warmup_steps: int = 0,
    decay_steps: int | None = None,
    min_ratio: float = 0.1,
) -> Callable[[int], float]:
    """The factor ``f(step)`` of the base learning rate (``torch.optim.lr_scheduler.LambdaLR``).

    Args:
        schedule: ``"constant"`` or ``"cosine"`` (module docstring).
        warmup_steps: linear warm-up from ``1 / warmup_steps`` to 1 over this many steps.
        decay_steps: the step at which the cosine reaches ``min_ratio`` (required with
            ``"cosine"``; the trainer passes ``max_steps``); it must exceed ``warmup_steps``.
        min_ratio: the final factor of the cosine, in ``[0, 1]``.

    Raises:
        ValueError: an unknown schedule, a negative warm-up, a ``min_ratio`` outside ``[0, 1]``
            or a cosine that would end before its warm-up does.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {schedule!r}")
    warm = int(warmup_steps)
    if warm < 0:
        raise ValueError(f"lr_warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= float(min_ratio) <= 1.0:
        raise ValueError(f"lr_min_ratio must be in [0, 1], got {min_ratio}")
    low = float(min_ratio)
    if schedule == "cosine":
        if decay_steps is None or int(decay_steps) <= warm:
            raise ValueError(
                f"the cosine schedule needs max_steps ({decay_steps}) above lr_warmup_steps ({warm}): "
                "raise max_steps or shorten the warm-up"
            )
        end = int(decay_steps)

    def factor(step: int) -> float:
        if warm > 0 and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / (end - warm))
        return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
