"""The one guarded way vitlab opens an image file: every command, dataset and cache goes through here.

An image file is untrusted input. What this module guarantees:

* Only :data:`ALLOWED_FORMATS` are parsed (``Image.open(..., formats=...)``): never EPS / PS / PDF,
  for which Pillow would start Ghostscript, nor any of Pillow's rarer plug-ins.
* A header announcing more than the pixel limit is refused before any pixel is decoded (Pillow's
  ``DecompressionBombWarning`` is an error here). The limit is :func:`max_image_pixels`: the
  ``VITLAB_MAX_IMAGE_PIXELS`` environment variable, else Pillow's default (89,478,485 pixels, a
  ~9459 x 9459 image, ~268 MB as RGB); callers pass their own (``data.max_image_pixels``,
  ``predict --max-image-pixels``). A very large real image is refused by the same limit.
* Animated files (GIF, APNG, WebP, multi-page TIFF) give their first frame, EXIF orientation is
  applied (``ImageOps.exif_transpose``), and every mode becomes 8-bit RGB with the right levels
  (:mod:`vitlab.data.image_modes`).
* Anything that goes wrong (unknown format, truncated data, a bomb, a bad EXIF block) is one
  :class:`~vitlab.errors.DataError` naming the file, never another exception.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from vitlab.data.image_modes import to_rgb
from vitlab.errors import DataError

# Pillow format names for the suffixes in vitlab.data.folder.IMAGE_EXTENSIONS (JPEG's opener also
# gives the multi-picture "MPO" JPEGs many cameras write).
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
PILLOW_DEFAULT_MAX_PIXELS = 89_478_485  # Image.MAX_IMAGE_PIXELS as shipped: 1024 * 1024 * 1024 // 4 // 3
ENV_MAX_PIXELS = "VITLAB_MAX_IMAGE_PIXELS"
# What Pillow's parsers raise on a file that is not a complete, supported image: UnidentifiedImageError
# and truncation are OSErrors; malformed headers surface as SyntaxError, ValueError, EOFError,
# struct.error or an IndexError / KeyError / TypeError deep in a plug-in (seen under fuzzing).
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, struct.error,
                ZeroDivisionError, OverflowError, MemoryError, Image.DecompressionBombError,
                Image.DecompressionBombWarning)
_LIMIT_LOCK = threading.Lock()  # Pillow's limit is a module global; set it only around our own open


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an allowed image says, read without decoding pixels."""

    format: str
    mode: str
    size: tuple[int, int]  # (width, height)
    orientation: int  # EXIF orientation tag, 1 when absent (1 = as stored); always 1 for PNG


def max_image_pixels(override: int | None = None) -> int:
    """The pixel limit in force: ``override``, else ``$VITLAB_MAX_IMAGE_PIXELS``, else Pillow's default."""
    if override is not None:
        if override < 1:
            raise DataError(f"max_image_pixels must be at least 1, got {override}")
        return int(override)
    raw = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not raw:
        return PILLOW_DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise DataError(f"{ENV_MAX_PIXELS}={raw!r}: expected a whole number of pixels") from None
    if value < 1:
        raise DataError(f"{ENV_MAX_PIXELS}={raw!r}: must be at least 1")
    return value


def open_image(source: str | Path | BinaryIO, max_pixels: int | None = None) -> Image.Image:
    """The first frame of the image at ``source``, upright, as a loaded 8-bit RGB image; DataError otherwise."""
    name = _name(source)
    with _opened(source, name, max_pixels) as im:
        try:
            im.seek(0)
            upright = ImageOps.exif_transpose(im)  # loads the pixels; a copy when it had to turn them
            upright.load()
            return to_rgb(upright)
        except _READ_ERRORS as err:
            raise DataError(f"{name}: cannot read image ({_reason(err)})") from None


def read_header(source: str | Path | BinaryIO, max_pixels: int | None = None) -> ImageHeader:
    """Format, mode, size and EXIF orientation, with the same checks as :func:`open_image`; no pixel is decoded."""
    name = _name(source)
    with _opened(source, name, max_pixels) as im:
        try:
            # PNG keeps EXIF after the pixels (getexif would decode them) and vitlab's only use of the
            # orientation here is the JPEG fast path of data.cache, so a PNG reports 1 (decoding turns it).
            exif = im.getexif() if im.format != "PNG" else {}
            orientation = int(exif.get(0x0112, 1) or 1)
            return ImageHeader(str(im.format), im.mode, (int(im.width), int(im.height)), orientation)
        except _READ_ERRORS as err:
            raise DataError(f"{name}: cannot read image header ({_reason(err)})") from None


class _opened:
    """Context manager: the lazily opened image (header parsed, size checked), closed on exit."""

    def __init__(self, source: str | Path | BinaryIO, name: str, max_pixels: int | None) -> None:
        self.source, self.name, self.limit = source, name, max_image_pixels(max_pixels)
        self.image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        self.image = _open_checked(self.source, self.name, self.limit)
        return self.image

    def __exit__(self, *exc: object) -> None:
        if self.image is not None:
            self.image.close()


def _open_checked(source: str | Path | BinaryIO, name: str, limit: int) -> Image.Image:
    try:
        with _LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
            try:
                im = Image.open(source, formats=ALLOWED_FORMATS)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        found = re.search(r"\((\d+) pixels\)", str(err))  # Pillow: "Image size (N pixels) exceeds limit ..."
        raise _too_big(name, int(found.group(1)) if found else None, limit) from None
    except FileNotFoundError:
        raise DataError(f"{name}: image not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: cannot read image (not a {', '.join(ALLOWED_FORMATS)} file: "
                        "other formats are never parsed)") from None
    except _READ_ERRORS as err:
        raise DataError(f"{name}: cannot read image ({_reason(err)})") from None
    if im.width * im.height > limit:  # also for plug-ins that skip Pillow's own check
        pixels = im.width * im.height
        im.close()
        raise _too_big(name, pixels, limit)
    return im


def _too_big(name: str, pixels: int | None, limit: int) -> DataError:
    what = f"its header announces {pixels:,} pixels" if pixels else "its header announces too many pixels"
    return DataError(f"{name}: image refused before decoding ({what}; the limit is {limit:,} pixels: raise it "
                     f"with data.max_image_pixels, --max-image-pixels or {ENV_MAX_PIXELS} if the file is trusted)")


def _name(source: str | Path | BinaryIO) -> str:
    return str(source) if isinstance(source, (str, Path)) else str(getattr(source, "name", "<image bytes>"))


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

