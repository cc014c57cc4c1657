"""One policy for non-finite losses and gradient norms: stop, skip, or skip up to N in a row."""

from __future__ import annotations

from typing import Literal

from vitlab.errors import NonFiniteError


class NonFiniteGuard:
    """Decides what a non-finite step does. A skipped step's update is never applied.

    Args:
        mode: ``stop`` raises :class:`NonFiniteError` at once; ``skip`` drops the update.
        max_in_a_row: with ``skip``, this many bad steps in a row raise (None: never).
        in_a_row: bad steps in a row already seen (restored on resume).
    """

    def __init__(self, mode: Literal["stop", "skip"], max_in_a_row: int | None = None, in_a_row: int = 0) -> None:
        self.mode, self.max_in_a_row, self.in_a_row = mode, max_in_a_row, in_a_row

    def check(self, bad: str | None, step: int, epoch: int) -> bool:
        """True when the step may be applied; ``bad`` names the non-finite part (or None)."""
        if bad is None:
            self.in_a_row = 0
            return True
        if self.mode == "stop":
            raise NonFiniteError(f"step {step} (epoch {epoch}): {bad} is not finite; the update was not applied")
        self.in_a_row += 1
        if self.max_in_a_row is not None and self.in_a_row >= self.max_in_a_row:
            raise NonFiniteError(f"step {step} (epoch {epoch}): {self.in_a_row} steps in a row had a non-finite "
                                 "loss or gradient; stopping (no update of them was applied)")
        return False


def check_epoch(skipped: int, steps: int, max_fraction: float, epoch: int) -> None:
    """Raise when more than ``max_fraction`` of an epoch's steps were skipped: a run whose updates
    are mostly dropped is not training, whatever its exit code would say."""
    if steps and skipped / steps > max_fraction:
        raise NonFiniteError(f"epoch {epoch}: {skipped} of {steps} steps had a non-finite loss or gradient and were "
                             f"skipped (more than max_skipped_fraction={max_fraction:g}); stopping: lower the learning "
                             "rate or check the data")
