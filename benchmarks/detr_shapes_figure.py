"""Figure for docs/detr.md: `vitlab detect predict` on held-out synthetic shapes, as one grid.

The first N images of the val stream (never trained on) are written 4x larger (nearest
neighbour, so the labels are readable; the model's eval transform resizes them back to its 64 px),
`vitlab detect predict --out` draws the detections above ``--threshold``, and the drawn images are
tiled into one PNG. Run by hand:

    .venv/bin/python benchmarks/detr_shapes_figure.py runs/bench_detr_shapes/checkpoints/last.safetensors
        [--out docs/figures/detr_shapes_predictions.png] [--images 8] [--threshold 0.3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from _detr_common import ROOT, vitlab  # noqa: E402  (benchmarks/ is on sys.path)

from vitlab.detection.sources import open_detection_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="shapes:64:64", help="The val stream of this source is drawn.")
    ap.add_argument("--out", default="docs/figures/detr_shapes_predictions.png")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.3,
                    help="Focal-loss scores run lower than softmax ones (most true boxes score 0.3-0.6 here).")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--columns", type=int, default=4)
    args = ap.parse_args()
    val = open_detection_source(args.data, "val")
    with tempfile.TemporaryDirectory() as tmp:
        src, drawn = Path(tmp) / "images", Path(tmp) / "drawn"
        src.mkdir()
        for i in range(min(args.images, len(val))):
            image, _ = val.load(i)
            image.resize((image.width * args.scale, image.height * args.scale), Image.NEAREST).save(src / f"val_{i:03d}.png")
        print(vitlab("detect", "predict", str(Path(args.checkpoint).resolve()), str(src), "--out", str(drawn),
                     "--threshold", str(args.threshold), "--device", "cpu").stdout)
        tiles = [Image.open(p).convert("RGB") for p in sorted(drawn.glob("*.png"))]
    w, h = tiles[0].size
    rows = -(-len(tiles) // args.columns)
    grid = Image.new("RGB", (args.columns * (w + 4) - 4, rows * (h + 4) - 4), (255, 255, 255))
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % args.columns) * (w + 4), (k // args.columns) * (h + 4)))
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
