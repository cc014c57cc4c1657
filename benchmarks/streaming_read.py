"""Reading CIFAR-10 JPEGs from WebDataset tar shards vs from an image folder, on this machine.

Writes the 20,000 training JPEGs of ../shared/data/cifar10_jpg as 10 shards (webdataset's
``TarWriter``, shuffled), then times (1) indexing the shards as ``vitlab train --data wds:`` does at
start (wall and CPU seconds), and (2) random ``dataset[i]`` reads, decode to RGB included, for the
shards and for the folder, alternating twice. See docs/training.md ("Sharded data").

    .venv/bin/python benchmarks/streaming_read.py [--out /tmp/vitlab_shards] [--reads 3000]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import webdataset as wds

from vitlab.data.folder import ImageFolderDataset
from vitlab.data.wds_source import open_wds

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg" / "train"


def write_shards(out: Path, shards: int = 10) -> str:
    """``out/train-{000000..}.tar`` from the folder (once) plus ``classes.txt``; the wds: pattern."""
    files = sorted(ROOT.glob("*/*.jpg"))
    classes = sorted(p.name for p in ROOT.iterdir() if p.is_dir())
    per = -(-len(files) // shards)
    if not (out / f"train-{shards - 1:06d}.tar").is_file():
        out.mkdir(parents=True, exist_ok=True)
        random.Random(0).shuffle(files)
        for s in range(shards):
            with wds.TarWriter(str(out / f"train-{s:06d}.tar")) as sink:
                for f in files[s * per:(s + 1) * per]:
                    sink.write({"__key__": f"{f.parent.name}_{f.stem}", "jpg": f.read_bytes(),
                                "cls": classes.index(f.parent.name)})
        (out / "classes.txt").write_text("\n".join(classes) + "\n")
    return f"{out}/train-{{000000..{shards - 1:06d}}}.tar"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/vitlab_shards"))
    ap.add_argument("--reads", type=int, default=3000)
    args = ap.parse_args()
    pattern = write_shards(args.out)
    wall, cpu = time.perf_counter(), time.process_time()
    shards = open_wds(pattern, "train")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"index of {len(shards):,} samples in 10 shards: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"({len(shards) / wall:,.0f} samples/s wall)")
    folder = ImageFolderDataset(ROOT)
    order = random.Random(1).sample(range(len(shards)), args.reads)
    for name, ds in (("shards", shards), ("folder", folder)) * 2:
        start = time.perf_counter()
        for i in order:
            ds[i]
        print(f"{name}: {args.reads / (time.perf_counter() - start):,.0f} random samples/s (decode to RGB included)")


if __name__ == "__main__":
    main()
