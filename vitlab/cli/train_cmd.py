"""``vitlab train``: train a model from a recipe, its field flags (timm's spellings too) and ``--set``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from vitlab.cli.failures import run_failures
from vitlab.cli.help_groups import GroupedCommand, GroupedOption
from vitlab.cli.recipe_option import config_callback
from vitlab.cli.resume_args import probe_run_folder, resolve_resume
from vitlab.cli.train_flags import RUN, field_options, field_overrides, late_overrides
from vitlab.config import TrainConfig, resolve_auto_augment, resolve_config, to_dict


def _run_option(*decls: str, **kwargs: Any) -> Any:
    return click.option(*decls, cls=GroupedOption, group=RUN, **kwargs)


def resolve_train_config(config_file: str | Path | None, values: dict[str, Any], assignments: tuple[str, ...],
                         smoke: bool, echo: Any = click.echo) -> TrainConfig:
    """The config a ``vitlab train`` command line means: recipe, flags and ``--set`` (no conflicts), then
    the flags that depend on the recipe (bare ``--pretrained``, ``--model-ema``)."""
    overrides = field_overrides(values, assignments)
    cfg = resolve_config(config_file, overrides, smoke=smoke)
    late = late_overrides(cfg, values, echo)
    return resolve_config(config_file, overrides + late, smoke=smoke) if late else cfg


@click.command("train", cls=GroupedCommand)
@_run_option("--config", "config_file", callback=config_callback, metavar="NAME|PATH",
             help="YAML recipe: a file, or a built-in recipe name such as mnist (`vitlab recipes` lists them).")
@_run_option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
             help="Override any config field, e.g. --set optim.weight_decay=0.1 (repeatable).")
@_run_option("--out", type=click.Path(file_okay=False), help="Run folder (default runs/<model>).")
@_run_option("--resume", "resume", default=None, metavar="RUN_DIR|auto",
             help="Continue a run from its last checkpoint; 'auto' resumes --out if it has one.")
@_run_option("--overwrite", is_flag=True, help="Replace an existing non-empty --out folder.")
@_run_option("--allow-change", "allow_changes", multiple=True, metavar="FIELD",
             help="With --resume: accept a changed config field (e.g. epochs); repeatable.")
@_run_option("--smoke", is_flag=True, help="Apply the recipe's smoke settings (runs in seconds).")
@_run_option("--print-config", is_flag=True, help="Print the resolved config (YAML) and exit without training.")
@_run_option("--no-progress", is_flag=True, help="No progress bar (logs only).")
@field_options
def train_cmd(config_file: Path | None, assignments: tuple[str, ...], out: str | None, resume: str | None,
              overwrite: bool, allow_changes: tuple[str, ...], smoke: bool, print_config: bool, no_progress: bool,
              **values: Any) -> None:
    """Train a model; writes config.yaml, metrics.jsonl and checkpoints/ into the run folder.

    Every field flag sets the config field named in its help, as --set would; config.yaml records
    the fields. A flag and a --set that give one field different values are an error.
    """
    resuming, out, config_file = resolve_resume(resume, out, config_file, overwrite)
    note_to = (lambda s: click.echo(s, err=True)) if print_config else click.echo  # keep the YAML on stdout clean
    cfg = resolve_train_config(config_file, values, assignments, smoke and not resuming, note_to)
    if print_config:
        from vitlab.data.sources import photo_source

        cfg, note = resolve_auto_augment(cfg, photo_source(cfg.data.train or ""))  # as the trainer will
        if note:
            note_to(note)
        click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False), nl=False)
        return
    from vitlab.trainer import train  # heavy imports only when the command runs

    out = out or f"runs/{cfg.model}"
    probe_run_folder(out, resuming)  # before the data is read or any weights are downloaded
    with run_failures(out, "train"):
        result = train(cfg, out, resume=resuming, overwrite=overwrite, progress=not no_progress, echo=click.echo,
                       allow_changes=tuple(allow_changes))
    if result.exit_code:
        raise SystemExit(result.exit_code)
    if result.best_epoch >= 0 and result.is_main:
        test = f"; test top-1 {result.test_metrics['test_top1']:.2f}%" if result.test_metrics else ""
        click.echo(f"best {result.best_metric} {result.best_value:.2f} at epoch {result.best_epoch + 1}{test}; "
                   f"{result.seconds:.1f}s; run folder {result.run_dir}")
