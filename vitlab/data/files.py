"""Loose image files given on the command line: collect them from paths and open them safely."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from vitlab.data.folder import is_hidden, is_image_file
from vitlab.data.image_io import open_image as _guarded_open
from vitlab.data.walk import WalkReport, log_report, walk_files
from vitlab.errors import DataError


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); hidden entries skipped, each real folder walked once."""
    report = WalkReport()
    files = walk_files(folder, lambda d: not is_hidden(d), is_image_file, report)
    log_report(folder, report)
    return files


def collect_image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded with :func:`images_in`; DataError names a missing path or empty folder."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = images_in(p)
            if not found:
                raise DataError(f"{p}: no images in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: image or folder not found")
    return files


def open_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """The image at ``path`` as RGB through the guarded opener (:mod:`vitlab.data.image_io`); DataError naming it."""
    return _guarded_open(path, max_pixels)
