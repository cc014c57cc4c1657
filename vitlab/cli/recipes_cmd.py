"""``vitlab recipes``: list the built-in recipes, or print one to copy and edit."""

from __future__ import annotations

import click

from vitlab.recipes import find_recipe, list_recipes, recipe_dir


@click.command("recipes")
@click.argument("name", required=False)
def recipes_cmd(name: str | None) -> None:
    """List the built-in recipes (name, command, description); with NAME, print that recipe's YAML.

    Any command's --config takes a recipe name as well as a path, e.g.
    `vitlab train --config mnist`; `vitlab recipes mnist > my.yaml` gives a copy to edit.
    """
    if name is not None:
        path, _ = find_recipe(name)
        click.echo(path.read_text(), nl=False)
        return
    recipes = list_recipes()
    width = max(len(r.name) for r in recipes)
    cmd_width = max(len(r.command) for r in recipes)
    for r in recipes:
        click.echo(f"{r.name:<{width}}  {r.command:<{cmd_width}}  {r.description}")
    click.echo(f"{len(recipes)} recipes in {recipe_dir()}; run one with `vitlab <command> --config NAME`")
