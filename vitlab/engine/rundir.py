"""The run folder: its layout, and the rules that keep existing runs safe.

::

    RUN/
      config.yaml            the resolved TrainConfig
      metrics.jsonl          one JSON object per line: train steps and epoch summaries
      checkpoints/
        step-NNNNNNNN.safetensors  weights + self-description, every N steps and at epoch ends
        step-NNNNNNNN.state.pt     optimizer / scheduler / EMA / RNG / sampler position (--resume)
        last.safetensors           a copy of the newest step checkpoint's weights
        best.safetensors           the weights with the best validation metric so far
      tb/                    TensorBoard event files
      loss.png, accuracy.png, lr.png   curves drawn at the end of the run
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from vitlab.errors import RunDirError
from vitlab.utils.atomic import probe_writable, writing


class RunDir:
    """Paths inside a run folder and its JSONL log."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def weights(self, name: str) -> Path:
        return self.checkpoints / f"{name}.safetensors"

    def state(self, name: str) -> Path:
        return self.checkpoints / f"{name}.state.pt"

    def has_checkpoint(self) -> bool:
        """True when at least one resumable checkpoint state exists."""
        return self.checkpoints.is_dir() and any(self.checkpoints.glob("step-*.state.pt"))

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (floats written exactly, via repr).

        A full disk or a folder gone read-only is a DiskFullError / NotWritableError naming the file.
        """
        with writing(self.metrics), self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")


def claim_run_dir(root: str | Path, overwrite: bool, resume: bool) -> RunDir:
    """Create the run folder, or reuse it when resuming.

    Refuses (RunDirError) to write into an existing non-empty folder unless ``resume`` or
    ``overwrite``; call this only after all inputs were validated, so bad input never touches it.
    A folder that cannot be written is refused (NotWritableError, exit 13) before anything in it
    is deleted or created.
    """
    run = RunDir(root)
    flag = "--resume" if resume else "--out"
    exists = run.root.exists()
    if exists and not run.root.is_dir():
        raise RunDirError(f"--out {run.root}: exists and is not a folder")
    if resume:
        if not run.has_checkpoint():
            raise RunDirError(f"--resume {run.root}: no checkpoints/step-*.state.pt to resume from")
        probe_writable(run.checkpoints, flag)
        return run
    if exists and any(run.root.iterdir()):
        if not overwrite:
            raise RunDirError(f"--out {run.root}: folder exists and is not empty; "
                              "pass --overwrite to replace it or --resume to continue it")
    probe_writable(run.root, flag)  # before rmtree: an unwritable target keeps its old run
    with writing(run.root, flag):
        if exists and overwrite and any(run.root.iterdir()):
            shutil.rmtree(run.root)
        run.checkpoints.mkdir(parents=True, exist_ok=True)
    return run
