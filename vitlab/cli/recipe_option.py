"""``--config NAME|PATH``, the same for every command that reads a recipe."""

from __future__ import annotations

from pathlib import Path

import click

from vitlab.recipes import find_recipe


def config_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """Click callback: an existing file, else the built-in recipe of that name (ConfigError lists them).

    Runs before the command, so a bad name fails before any data is read; the note about a
    missing ``configs/<name>.yaml`` replaced by the built-in recipe goes to stderr.
    """
    if value is None:
        return None
    path, note = find_recipe(value)
    if note:
        click.echo(note, err=True)
    return path
