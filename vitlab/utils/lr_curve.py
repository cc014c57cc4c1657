"""The learning-rate series of a run, read from its metrics.jsonl records (for the lr plots).

The engine writes the rate each optimizer step used into its step records (``"lr"``); the plots
draw every step the log holds, so a warmup shows as the ramp it is. When the log holds only every
N-th step (``log_every``), :func:`lr_points` says so and the plots name the spacing in their title.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Records that carry the rate of one optimizer step (skipped steps keep their place in the schedule).
_STEP_KINDS = frozenset({"train", "skipped_step", "lr"})


def lr_points(records: Iterable[dict[str, Any]]) -> tuple[list[int], list[float], int]:
    """(steps, rates, spacing): one point per logged step, in step order (a resumed run's repeats
    keep their last value); ``spacing`` is the largest gap between logged steps (1 = every step)."""
    by_step: dict[int, float] = {}
    for r in records:
        if r.get("kind") in _STEP_KINDS and "lr" in r and "step" in r:
            by_step[int(r["step"])] = float(r["lr"])
    steps = sorted(by_step)
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    return steps, [by_step[s] for s in steps], max(gaps, default=1)


def lr_title(spacing: int) -> str:
    return "learning rate (every step)" if spacing <= 1 else f"learning rate (logged every {spacing} steps)"
