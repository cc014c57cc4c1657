"""Restore a run from its newest valid checkpoint pair, applying the run's current settings.

The optimizer's moments, the scaler, the EMA, the RNG streams, the sampler position and the
epoch's running totals come from the checkpoint. The hyperparameters (learning rate, weight
decay, betas, the schedule) come from the optimizer and schedule just built from the current
config, so a field changed with ``--allow-change`` applies from the resume step on; with an
unchanged config the values are identical to the uninterrupted run's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vitlab.engine.loop import EpochTotals
from vitlab.engine.parallel import load_optimizer_state
from vitlab.engine.resume import Resumable, find_resumable
from vitlab.engine.rundir import RunDir
from vitlab.engine.session import Session
from vitlab.engine.tracking import truncate_records
from vitlab.errors import CheckpointError, ConfigError, DataError
from vitlab.engine.task import fingerprint_changes, minimises


@dataclass
class Restored:
    """Where a run stands: next epoch, global batches done in it, global step, best so far."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best: tuple[float, int] = (-math.inf, -1)
    last: dict[str, float] = field(default_factory=dict)
    rng: dict[str, Any] | None = None
    totals: EpochTotals = field(default_factory=EpochTotals)
    in_a_row: int = 0

    @classmethod
    def fresh(cls, best_metric: str) -> Restored:
        return cls(best=(math.inf if minimises(best_metric) else -math.inf, -1))


def find_checkpoint(run: RunDir) -> Resumable:
    """The newest checkpoint pair that loads; CheckpointError when there is none."""
    found = find_resumable(run)
    if found is None:
        raise CheckpointError(f"{run.checkpoints}: no valid checkpoint to resume from")
    return found


def _reapply(ss: Session, fresh: list[dict[str, Any]], step: int) -> None:
    """Put the current config's hyperparameters back and set each group's rate for ``step``."""
    sched = ss.scheduler
    for group, values in zip(ss.optimizer.param_groups, fresh):
        group.update(values)
    sched.last_epoch = step
    lrs = [base * fn(step) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
    for group, lr in zip(ss.optimizer.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = lrs  # what get_last_lr() reports; LambdaLR keeps no other copy


def _totals(state: dict[str, Any], is_main: bool, echo: Any) -> EpochTotals:
    if "totals" not in state:
        if int(state.get("batch_in_epoch", 0)):
            echo("this checkpoint predates epoch totals: the resumed epoch's summary covers the steps after it only")
        return EpochTotals()
    totals = EpochTotals.from_state(state["totals"])
    if not is_main:  # the saved totals are summed over ranks already: one rank carries them
        totals.images, totals.loss_sum = 0, 0.0
        totals.sums = {k: 0.0 for k in totals.sums}
    return totals


def position_of(ss: Session) -> dict[str, int]:
    """What a mid-epoch position (global batches into an epoch) means: its batch size, order and
    accumulation. Saved with every checkpoint; a mid-epoch resume needs the same values."""
    return {"data.batch_size x processes": ss.s.batch_size * ss.info.world_size, "seed": ss.s.seed,
            "optim.accum_steps": ss.s.accum_steps}


def _check_position(ss: Session, found: Resumable, batch_in_epoch: int) -> None:
    saved = found.state.get("position")
    if not batch_in_epoch or saved is None:
        return  # an epoch end: the next epoch starts afresh, whatever the batch size
    now = position_of(ss)
    changed = [f"{k} {saved[k]} -> {now[k]}" for k in now if k in saved and int(saved[k]) != now[k]]
    if changed:
        raise ConfigError(f"{found.weights_path}: a mid-epoch checkpoint (batch {batch_in_epoch}) cannot continue "
                          f"with {'; '.join(changed)}: the samples already seen would be miscounted; keep the old "
                          "values until the epoch ends, or resume from an epoch-end checkpoint")


def _check_data(ss: Session, found: Resumable) -> None:
    """Refuse to continue on other data than the run started with (DataError listing what changed)."""
    saved = found.state.get("data")
    if saved is None:
        ss.echo("this checkpoint predates data fingerprints: the training data is not compared")
        return
    changed = fingerprint_changes(saved, ss.task.data_fingerprint())
    if changed:
        raise DataError(f"{ss.run.root}: the training data differs from the data this run started with "
                        f"({'; '.join(changed)}); restore the data, or start a new run from its weights "
                        "(train --weights CHECKPOINT)")


def restore(ss: Session, found: Resumable) -> Restored:
    """Load the training state of ``found`` into the session (weights are loaded before wrapping)."""
    st = found.state
    _check_data(ss, found)
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in ss.optimizer.param_groups]
    try:
        load_optimizer_state(ss.model, ss.optimizer, st["optimizer"], ss.info, ss.s.fsdp)
        if ss.scaler is not None and st.get("scaler"):
            ss.scaler.load_state_dict(st["scaler"])
        if ss.ema is not None and st.get("ema"):
            ss.ema.load_state_dict(st["ema"])
        elif ss.ema is not None:
            ss.echo("EMA: the checkpoint has none; averaging starts from the resumed weights")
        out = Restored(int(st["epoch"]), int(st["batch_in_epoch"]), int(st["step"]),
                       (float(st["best_value"]), int(st["best_epoch"])), {}, st["rng"],
                       _totals(st, ss.info.is_main, ss.echo), int(st.get("nonfinite_in_a_row", 0)))
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{found.weights_path}: training state does not fit this run ({err})") from None
    _check_position(ss, found, out.batch_in_epoch)
    _reapply(ss, fresh, int(st["scheduler"].get("last_epoch", out.step)))
    if ss.info.is_main:  # records written after this checkpoint are replayed by the resumed run
        truncate_records(ss.run.metrics, out.step, out.epoch)
    ss.echo(f"resuming {ss.run.root} at step {out.step} (epoch {out.epoch + 1}, batch {out.batch_in_epoch})")
    return out
