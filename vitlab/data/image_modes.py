"""Any decoded PIL image -> 8-bit RGB with the right levels, whatever mode the file was stored in.

``Image.convert("RGB")`` alone is wrong for some modes: 16-bit and 32-bit grey ("I;16", "I") are
clipped to 255, so nearly every pixel turns white; a transparent pixel shows whatever colour the
encoder left under it. The rules here, applied identically on every path (folders, ``data.cache``,
predict, analyze, detection):

* "I;16*" and "I" are taken as 16-bit levels (0..65535, as PNG and TIFF store them) and scaled to
  0..255 (``v * 255 / 65535``, rounded); values outside that range are clipped.
* "F" (float TIFF) is taken as 0..1 when its maximum is at most 1, otherwise as 16-bit levels.
* Alpha ("RGBA", "LA", "PA", palette transparency, premultiplied "RGBa" / "La") is composited onto
  black, i.e. colour x alpha: a fully transparent pixel is black, never the hidden colour under it.
  Files that store transparent pixels as (0, 0, 0, 0), the common case, look as with alpha dropped.
* Everything else (palette, "1", "L", "CMYK", "YCbCr", ...) goes through Pillow's own conversion.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` (already loaded) as an "RGB" image with the levels described in the module docstring."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT or mode == "F":
        return Image.fromarray(_scale_to_u8(np.asarray(image), float_unit=mode == "F")).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        return _over_black(image.convert("RGBA"))
    return image.convert("RGB")


def _scale_to_u8(levels: np.ndarray, float_unit: bool) -> np.ndarray:
    """Grey levels of any integer / float range -> uint8 (H, W) (see the module docstring)."""
    values = levels.astype(np.float64)
    top = 1.0 if float_unit and values.size and float(np.nanmax(values)) <= 1.0 else 65535.0
    scaled = np.nan_to_num(values * (255.0 / top), nan=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _over_black(rgba: Image.Image) -> Image.Image:
    """Composite an "RGBA" image onto black: each channel times alpha / 255, rounded."""
    arr = np.asarray(rgba).astype(np.uint32)
    rgb = (arr[..., :3] * arr[..., 3:4] + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), "RGB")
