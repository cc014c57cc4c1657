"""Resumable checkpoints: written every N steps and at epoch ends, newest valid one found on resume.

Each resumable checkpoint is a pair in ``RUN/checkpoints/``: ``step-00001234.safetensors`` (the
model, self-describing, loadable by ``vitlab eval``) and ``step-00001234.state.pt`` (optimizer,
scheduler, scaler, EMA, RNG states, the sampler's position, counters). The state file is written
last and names the step of its weights, so a pair interrupted half-way is detected and skipped.
Only the newest ``keep`` pairs are kept; ``last.safetensors`` is refreshed for users.

Integrity: the state is serialised first and its SHA-256 goes into the weights file's metadata
(``state_checksum``), beside the weights' own ``checksum``; so the weights file, written first,
seals the pair, and the state file, written last, still commits it. On resume both are verified
byte for byte; a pair that fails is skipped with a warning naming the file, and the previous
one is used.
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from vitlab.weights.checksums import digest_tag
from vitlab.weights.vitlab_format import (load_state, read_metadata, read_tensors, save_state, save_weights,
                                         state_bytes)
from vitlab.engine.rundir import RunDir
from vitlab.errors import CheckpointError

_STEP_RE = re.compile(r"^step-(\d{8,})\.state\.pt$")


@dataclass
class Resumable:
    """A validated checkpoint pair, ready to restore."""

    step: int
    weights: dict[str, Any]  # tensors
    state: dict[str, Any]
    weights_path: Path


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def save_resumable(run: RunDir, step: int, model: nn.Module, class_names: list[str], info: dict[str, Any],
                   state: dict[str, Any], keep: int, weights: dict[str, Any] | None = None) -> None:
    """Write the pair for ``step`` (weights first, state last), refresh ``last``, prune old pairs.

    ``weights`` overrides ``model.state_dict()`` (gathered FSDP weights).
    """
    name = step_name(step)
    blob = state_bytes({**state, "step": step})
    save_weights(run.weights(name), model, class_names, {**info, "step": step}, weights,
                 state_checksum=digest_tag(blob))
    save_state(run.state(name), blob)
    # last.safetensors: a stable name for eval / predict; copied through a temp file + rename.
    tmp = run.checkpoints / ".last.safetensors.tmp"
    shutil.copyfile(run.weights(name), tmp)
    tmp.replace(run.weights("last"))
    for old in list_steps(run)[:-keep] if keep > 0 else []:
        run.state(step_name(old)).unlink(missing_ok=True)
        run.weights(step_name(old)).unlink(missing_ok=True)


def remove_stale_temp(run: RunDir) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) a killed save left in the run folder; returns them.

    Every write goes to such a file first and is renamed into place only when complete, so a
    temporary file that exists before the run starts belongs to no live write.
    """
    stale: list[Path] = []
    for folder in (run.root, run.checkpoints):
        if folder.is_dir():
            stale += [p for p in folder.iterdir() if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return sorted(stale)


def list_steps(run: RunDir) -> list[int]:
    """Steps that have a state file, oldest first."""
    if not run.checkpoints.is_dir():
        return []
    steps = [int(m.group(1)) for p in run.checkpoints.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(steps)


def load_pair(run: RunDir, step: int) -> Resumable:
    """The checkpoint pair of ``step``, every byte verified; CheckpointError naming the bad file.

    Weights first: their verified metadata holds the state's checksum. A pair written before
    checksums loads unverified (``read_tensors`` warns once).
    """
    name = step_name(step)
    meta = read_metadata(run.weights(name))
    tensors = read_tensors(run.weights(name))
    if meta["checksum"] and not meta["state_checksum"]:  # last.safetensors / best.safetensors are not pairs
        raise CheckpointError(f"{run.weights(name)}: no checksum of its training state recorded")
    state = load_state(run.state(name), meta["state_checksum"])
    if meta["info"].get("step") != step or state.get("step") != step:
        raise CheckpointError(f"{run.weights(name)}: weights and state disagree on the step")
    return Resumable(step=step, weights=tensors, state=state, weights_path=run.weights(name))


def find_resumable(run: RunDir) -> Resumable | None:
    """The newest checkpoint pair that verifies and loads; warns naming each bad file it skips."""
    for step in reversed(list_steps(run)):
        try:
            return load_pair(run, step)
        except CheckpointError as err:
            warnings.warn(f"skipping corrupt checkpoint: {err}", stacklevel=2)
    return None
