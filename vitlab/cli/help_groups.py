"""``--help`` with the options in titled groups (click has sections, not option groups)."""

from __future__ import annotations

from typing import Any

import click

OTHER = "Other options"


class GroupedOption(click.Option):
    """A click option that names the help section it is listed under (``group=``)."""

    def __init__(self, *args: Any, group: str = OTHER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """Lists options under their ``group`` titles, groups in the order their first option appears."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "group", OTHER), []).append(record)
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)
