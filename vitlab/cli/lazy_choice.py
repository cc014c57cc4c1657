"""A ``click.Choice`` whose choices are read on first use, not when the command is declared.

The weight formats' names come from their table (vitlab/weights/formats.py), which imports the
converters and torch; read at declaration they would make every ``vitlab`` invocation, ``--help``
included, pay torch's import. Read lazily, only the commands that take the option do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click


class LazyChoice(click.Choice):
    """``click.Choice(load())``, with ``load`` called the first time the choices are needed."""

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._load: Callable[[], Sequence[str]] | None = load
        self._choices: Sequence[str] = ()
        super().__init__((), case_sensitive=case_sensitive)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        if self._load is not None:
            self._choices, self._load = tuple(self._load()), None
        return self._choices

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        if tuple(value):  # click.Choice.__init__ sets the (empty) placeholder; a real list replaces the loader
            self._choices, self._load = tuple(value), None


def weight_formats(direction: str, first: Sequence[str] = ()) -> LazyChoice:
    """The format table's names for ``direction`` ("read" or "write"), after ``first`` (export's graphs)."""
    def load() -> tuple[str, ...]:
        from vitlab.weights.formats import readable, writable

        return (*first, *(readable() if direction == "read" else writable()))

    return LazyChoice(load)
