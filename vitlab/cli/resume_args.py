"""``--resume RUN_DIR|auto`` and ``--out``, the same for every training command."""

from __future__ import annotations

from pathlib import Path

from vitlab.engine.rundir import RunDir
from vitlab.errors import ConfigError, RunDirError
from vitlab.utils.atomic import probe_writable


def probe_run_folder(out: str | Path, resuming: bool) -> None:
    """Refuse an unwritable run folder (exit 13) before any work: a probe file is written where the
    checkpoints will go (the folder itself, or the nearest existing parent of a new one)."""
    run = RunDir(out)
    probe_writable(run.checkpoints if resuming else run.root, "--resume" if resuming else "--out")


def resolve_resume(resume: str | None, out: str | None, config_file: str | None,
                   overwrite: bool) -> tuple[bool, str | None, str | Path | None]:
    """(resuming, run folder, config file) for the flags given.

    A resumed run continues the recipe it started with: its saved ``config.yaml`` is the base
    unless ``--config`` names another. ``--resume auto`` on a folder without a checkpoint starts
    a new run there.
    """
    if resume is None:
        return False, out, config_file
    if overwrite:
        raise ConfigError("--resume and --overwrite conflict: resuming keeps the run, overwriting deletes it")
    if resume == "auto" and out is None:
        raise ConfigError("--resume auto needs --out RUN_DIR")
    run_path = Path(out) if resume == "auto" else Path(resume)
    if out is not None and resume != "auto" and Path(out) != run_path:
        raise ConfigError(f"--out {out} and --resume {resume} name different runs")
    if RunDir(run_path).has_checkpoint():
        return True, str(run_path), config_file or RunDir(run_path).config
    if resume != "auto":
        raise RunDirError(f"--resume {resume}: no checkpoints/step-*.state.pt to resume from")
    return False, str(run_path), config_file
