"""The built-in recipes: YAML files shipped inside the package, found by name.

``vitlab train --config mnist`` (and ``detect train``, ``study collapse``) takes a path or a recipe
name: an existing file always wins; otherwise a name (``mnist`` or ``mnist.yaml``) is looked up
here. A recipe's first comment line is its one-line description (``vitlab recipes`` lists them).
The repository's ``configs/`` is a symlink to this folder, so ``configs/<name>.yaml`` paths keep
working in a checkout; from a pip install a missing ``configs/<name>.yaml`` falls back to the
built-in recipe of that name, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from vitlab.errors import ConfigError

__all__ = ["Recipe", "recipe_dir", "list_recipes", "find_recipe"]


@dataclass(frozen=True)
class Recipe:
    """One built-in recipe: its name, the command that runs it, its description and its file."""

    name: str
    command: str  # "train", "detect train" or "study collapse"
    description: str
    path: Path


def recipe_dir() -> Path:
    """The folder holding the built-in recipes (inside the installed package)."""
    return Path(str(resources.files(__name__)))


def _command(data: dict) -> str:
    """Which vitlab command runs a recipe, from what it holds (a study block, a DETR model)."""
    if "study" in data:
        return "study collapse"
    return "detect train" if str(data.get("model", "")).startswith("detr") else "train"


def _description(text: str) -> str:
    """The first line of the leading comment block ('' when the file starts with YAML)."""
    for line in text.splitlines():
        if not line.startswith("#"):
            return ""
        if line.strip("# "):
            return line.lstrip("#").strip()
    return ""


def list_recipes() -> list[Recipe]:
    """Every built-in recipe, by name."""
    out = []
    for path in sorted(recipe_dir().glob("*.yaml")):
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        out.append(Recipe(path.stem, _command(data if isinstance(data, dict) else {}), _description(text), path))
    return out


def _by_name(name: str) -> Path | None:
    stem = name[:-5] if name.endswith(".yaml") else name
    path = recipe_dir() / f"{stem}.yaml"
    return path if stem and "/" not in stem and "\\" not in stem and path.is_file() else None


def find_recipe(name_or_path: str | Path) -> tuple[Path, str | None]:
    """(file, note) for ``--config``: an existing file, else the built-in recipe of that name.

    ``note`` says when a missing ``configs/<name>.yaml`` (the repository layout) was replaced by
    the built-in recipe of the same name; None otherwise. ConfigError names the built-in recipes
    when neither a file nor a recipe matches.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, None
    if path.exists():
        raise ConfigError(f"--config {name_or_path}: not a file")
    found = _by_name(str(name_or_path))
    if found is not None:
        return found, None
    fallback = _by_name(path.name) if path.parent.name == "configs" and path.suffix == ".yaml" else None
    if fallback is not None:
        return fallback, f"{path} not found; using the built-in recipe {path.stem} ({fallback})"
    names = ", ".join(r.name for r in list_recipes())
    raise ConfigError(f"--config {name_or_path}: no such file and no built-in recipe of that name "
                      f"(recipes: {names}; `vitlab recipes` describes them)")
