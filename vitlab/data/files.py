"""Loose image files given on the command line: collect them from paths and open them safely."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from vitlab.data.folder import IMAGE_EXTENSIONS
from vitlab.errors import DataError


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); hidden files and folders are skipped."""
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


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


def open_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB; an unreadable file raises DataError naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read image ({err.__class__.__name__})") from None
