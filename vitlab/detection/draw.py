"""Labelled boxes drawn onto images (PIL only)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[int],
                    scores: Sequence[float], class_names: Sequence[str]) -> Image.Image:
    """A copy of ``image`` with each xyxy pixel box outlined and tagged "name (p=0.87)" (the class probability)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = max(1, round(min(out.size) / 200))
    for box, label, score in zip(boxes, labels, scores):
        colour = class_colour(int(label))
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = f"{name} (p={score:.2f})"  # the captions' one format (vitlab.evaluation.plots)
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
        ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
        draw.rectangle([x0, ty, x0 + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 2], fill=colour)
        draw.text((x0 + 2, ty), text, fill=(0, 0, 0), font=font)
    return out
