"""Progress bars for long steps: tqdm on stderr, with a rate and an ETA.

One place decides when a bar shows: never when the caller says ``quiet`` (``--quiet``, ``--json``,
``--format json``), and otherwise only when stderr is a terminal, so a piped or logged run gets no
carriage-return noise and stdout (where JSON goes) is never touched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

# n/total, elapsed<remaining, rate: the rate and ETA the user waits on
_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


def shows(quiet: bool = False) -> bool:
    """Whether a bar would be drawn: not quiet, and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "it", quiet: bool = False) -> tqdm:
    """A manual bar (``.update(n)``) of ``total`` steps on stderr; drawn only if :func:`shows`."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shows(quiet), leave=False,
                dynamic_ncols=True, bar_format=_FORMAT if total else None)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", quiet: bool = False) -> Iterator[T]:
    """Iterate ``items`` with a bar (the total from ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(total, desc, unit, quiet) as b:
        for item in items:
            yield item
            b.update(1)


def wrote(path: object, count: int | None = None, what: str = "files") -> str:
    """The closing line of a command: where its outputs are, e.g. ``wrote runs/x/analysis (12 files)``."""
    return f"wrote {path}" + (f" ({count} {what})" if count is not None else "")
