"""Walk a folder tree for image files without ever visiting a directory twice.

``os.walk(followlinks=True)`` follows a link to an ancestor (or a loop of links) until the path
length limit: a class folder with 160 images and one ``loop -> ..`` link yields thousands of
samples. Here directory links are followed (datasets are often assembled from links) but every
directory is identified by its real path: a link to a directory already on the walk, or one that
points to an ancestor, is skipped. Each walk reports the links it followed and skipped in one line
on the ``vitlab.data`` logger (printed to stderr when logging is not configured).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LOG = logging.getLogger("vitlab.data")


@dataclass
class WalkReport:
    """Directory links met on a walk: ``(link, target)`` pairs followed, and skipped as repeats or loops."""

    followed: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, Path]] = field(default_factory=list)

    def line(self, root: Path) -> str | None:
        """One line for the log, or None when the walk met no directory link."""
        if not self.followed and not self.skipped:
            return None
        parts = []
        if self.followed:
            parts.append(f"followed {len(self.followed)} directory link(s) ({_pairs(self.followed)})")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} that lead to a folder already walked, an ancestor or "
                         f"a loop ({_pairs(self.skipped)})")
        return f"{root}: " + "; ".join(parts)


def walk_files(root: Path, keep_dir: Callable[[str], bool], keep_file: Callable[[str], bool],
               report: WalkReport | None = None) -> list[Path]:
    """Files under ``root`` passing ``keep_file``, in a stable order (sorted per folder, depth first).

    Directories failing ``keep_dir`` are pruned; each real directory is visited at most once.
    """
    report = report if report is not None else WalkReport()
    top = os.path.realpath(root)
    seen: set[str] = {top}
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(dirpath)
        here = (top, os.path.realpath(base))
        kept = []
        for d in sorted(n for n in dirnames if keep_dir(n)):
            if _admit(base / d, here, seen, report):
                kept.append(d)
        dirnames[:] = kept  # prune and fix the walk order
        files.extend(base / f for f in sorted(filenames) if keep_file(f))
    return files


def _admit(path: Path, here: tuple[str, str], seen: set[str], report: WalkReport) -> bool:
    """Whether to descend into ``path``; records its real path, and reports it when it is a link.

    ``here``: the real paths of the walk's root and of the folder holding ``path``. A folder already
    walked is skipped, and so is an ancestor of either (it would pull in the dataset's other classes).
    """
    real = os.path.realpath(path)
    if real in seen or any(h == real or h.startswith(real.rstrip(os.sep) + os.sep) for h in here):
        if path.is_symlink():
            report.skipped.append((path, Path(real)))
        return False
    seen.add(real)
    if path.is_symlink():
        report.followed.append((path, Path(real)))
    return True


def log_report(root: Path, report: WalkReport) -> None:
    """Write the walk's one line (if any) to the ``vitlab.data`` logger."""
    line = report.line(root)
    if line:
        LOG.warning(line)


def _pairs(pairs: list[tuple[Path, Path]], shown: int = 3) -> str:
    text = ", ".join(f"{link} -> {target}" for link, target in pairs[:shown])
    return text + (f", and {len(pairs) - shown} more" if len(pairs) > shown else "")
