"""Learning-rate schedules as pure functions of the optimizer step."""

from __future__ import annotations

import math


def warmup_steps(total_steps: int, ratio: float, steps: int | None) -> int:
    return int(steps) if steps is not None else int(round(total_steps * ratio))


def lr_factor(step: int, total: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.0) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based) of ``total``.

    Linear warmup from ~0 to 1 over ``warmup`` steps, then decay to ``min_ratio``:
    cosine, linear, or none (constant). ``onecycle`` warms up over 30% when no warmup is set
    and anneals with a cosine to ``min_ratio``, like torch's OneCycleLR.
    """
    if kind == "onecycle" and warmup == 0:
        warmup = max(1, int(0.3 * total))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if kind == "linear":
        decay = 1.0 - progress
    else:  # cosine and onecycle
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay
