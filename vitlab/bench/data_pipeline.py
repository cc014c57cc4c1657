"""The input pipeline's speed: JPEG decode + training augmentation, images/s with 0 and 2 loader workers.

Real photos when they are found (``--data``, else ``../shared/data/cifar10_jpg/train`` and
``../shared/data/imagenette_224_val500/val`` beside the repository or the working folder), read
through vitlab's own :class:`~vitlab.data.ImageFolderDataset` and training transforms: CIFAR's
pad-and-crop + flip for images of 64 px or less (the CIFAR recipe), else ImageNet-style
RandomResizedCrop + flip to 224. Without real photos, synthetic JPEGs are written to a temporary
folder (smooth random images, so they compress like photos rather than noise).

A pass reads ``images`` files in batches; its rate counts the images after the first batch and
the time after it arrives, so worker start-up (paid once per epoch, or never with persistent
workers) is not in the rate.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

import vitlab
from vitlab.bench.stats import Variant, interleave, summarize
from vitlab.data import ImageFolderDataset, Preprocess
from vitlab.data.image_io import read_header
from vitlab.data.transforms import AugmentConfig, build_train_transform
from vitlab.errors import DataError

_SHARED = ("cifar10_jpg/train", "imagenette_224_val500/val")
WORKERS = (0, 2)


def default_folders() -> list[Path]:
    """The shared real-photo folders that exist, beside the repository or the working folder."""
    bases = [Path(vitlab.__file__).resolve().parents[1].parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    found: list[Path] = []
    for rel in _SHARED:
        hit = next((b / rel for b in bases if (b / rel).is_dir()), None)
        if hit is not None and hit.resolve() not in {f.resolve() for f in found}:
            found.append(hit)
    return found


def pipeline_for(folder: Path) -> tuple[Preprocess, AugmentConfig, str]:
    """Training preprocessing and augmentation matched to the folder's image size, and its description."""
    ds = ImageFolderDataset(folder)
    if not len(ds):
        raise DataError(f"--data {folder}: no images in its class folders")
    header = read_header(ds.samples[0][0])
    if max(header.size) <= 64:
        pre = Preprocess((32, 32), 3, (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616), 1.0, "bilinear")
        return pre, AugmentConfig(crop_padding=4, hflip=0.5), "32x32, pad-4 crop + flip (the CIFAR recipe)"
    pre = Preprocess((224, 224), 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.875, "bicubic")
    return pre, AugmentConfig(random_resized_crop=True, hflip=0.5), "224x224, RandomResizedCrop + flip"


def loader_pass(ds: torch.utils.data.Dataset, batch: int, workers: int, threads: int | None = None) -> Variant:
    """A variant: one pass over ``ds``; seconds from the first batch's arrival to the last's.

    ``threads``: torch's intra-op threads in this process during the pass (None: as set). With 0
    workers the transforms run here, and many threads on tiny per-image ops can cost more than they
    give on a loaded machine; workers always run one thread each (torch's DataLoader sets it).
    """

    def run() -> float:
        saved = torch.get_num_threads()
        torch.set_num_threads(threads or saved)
        try:
            it = iter(DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False))
            next(it)
            start = time.perf_counter()
            for _ in it:
                pass
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(saved)

    return run


def measure_folder(folder: Path, images: int, batch: int, rounds: int) -> dict:
    """Images/s of decode + augmentation for each worker count in :data:`WORKERS` (interleaved rounds),
    and with 0 workers on one torch thread when the process has more."""
    pre, aug, what = pipeline_for(folder)
    full = ImageFolderDataset(folder, transform=build_train_transform(pre, aug))
    # Spread the subset over the classes (files are sorted by class), so every kind of photo is read.
    n = min(images, len(full))
    ds = Subset(full, [i * len(full) // n for i in range(n)])
    if n <= batch:
        raise DataError(f"--data {folder}: {n} images; the pipeline bench needs more than one batch ({batch})")
    variants = {f"{w} workers": loader_pass(ds, batch, w) for w in WORKERS}
    if torch.get_num_threads() > 1:
        variants["0 workers, 1 torch thread"] = loader_pass(ds, batch, 0, threads=1)
    stats = summarize(interleave(variants, rounds, warmup=1), items=n - batch, reference="0 workers")
    return {"folder": str(folder), "images": n, "batch": batch, "pipeline": what, "rows": stats}


@contextmanager
def synthetic_folder(n: int = 96, size: int = 224) -> Iterator[Path]:
    """A temporary folder of ``n`` JPEGs in two classes: random 14x14 colour fields upsampled to ``size``."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="vitlab-bench-") as tmp:
        for i in range(n):
            small = (torch.rand(3, 14, 14, generator=g) * 255).to(torch.uint8)
            img = torch.nn.functional.interpolate(small[None].float(), size=(size, size), mode="bicubic")[0]
            folder = Path(tmp) / f"class{i % 2}"
            folder.mkdir(exist_ok=True)
            array = img.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(folder / f"{i:04d}.jpg", quality=90)
        yield Path(tmp)


def measure_pipelines(folders: Sequence[Path], images: int, batch: int, rounds: int) -> list[dict]:
    """:func:`measure_folder` for each folder, or for synthetic JPEGs when ``folders`` is empty."""
    if folders:
        return [measure_folder(Path(f), images, batch, rounds) for f in folders]
    with synthetic_folder(max(images, 2 * batch + 2)) as tmp:
        result = measure_folder(tmp, images, batch, rounds)
    result["folder"] = "synthetic JPEGs (no real photos found; pass --data FOLDER)"
    return [result]
