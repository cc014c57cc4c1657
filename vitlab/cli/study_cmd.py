"""``vitlab study``: reproducible experiments from a recipe (``vitlab study collapse``)."""

from __future__ import annotations

import click

from vitlab.cli.recipe_option import config_callback


@click.group("study")
def study_cmd() -> None:
    """Reproducible experiments (recipes in configs/)."""


@study_cmd.command("collapse")
@click.option("--config", "recipe", default="collapse_study", show_default=True, callback=config_callback,
              metavar="NAME|PATH", help="Study recipe (study / train / smoke blocks): a file or a built-in recipe name.")
@click.option("--out", default="runs/collapse_study", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the runs, results.json, results.md and figures/.")
@click.option("--smoke", is_flag=True, help="Apply the recipe's smoke block (runs in seconds).")
@click.option("--reuse", is_flag=True, help="Skip training for finished runs; only re-measure them.")
def collapse_cmd(recipe: str, out: str, smoke: bool, reuse: bool) -> None:
    """Attention collapse: train deep narrow ViTs with self- and re-attention, measure cross-layer similarity."""
    from vitlab.studies.collapse_study import run_study  # heavy imports only when the command runs
    from vitlab.utils.atomic import probe_writable

    probe_writable(out, "--out")  # before the first run trains
    results = run_study(recipe, out, smoke=smoke, reuse=reuse, echo=click.echo)
    if results.get("stopped"):
        click.echo(f"stopped after {len(results['runs'])} measured runs; rerun with --reuse to keep the finished ones", err=True)
        raise SystemExit(results["stopped"])
    click.echo(f"{len(results['runs'])} runs; results in {out}/results.md, figures in {out}/figures/")
