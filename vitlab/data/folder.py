"""A folder of class subfolders of images (``<root>/<class>/**/<image>``) as a classification dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from torch.utils.data import Dataset

from vitlab.data.bad_samples import BadFiles, ImagePolicy, load_or_substitute
from vitlab.data.image_io import open_image, read_header
from vitlab.data.walk import WalkReport, log_report, walk_files
from vitlab.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_hidden(name: str) -> bool:
    """Entries editors, notebooks and archivers leave behind (.ipynb_checkpoints, .DS_Store, __MACOSX)."""
    return name.startswith(".") or name == "__MACOSX"


def is_image_file(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class ImageFolderDataset(Dataset):
    """Images under ``root/<class>/`` (nested folders allowed); items are ``(transform(rgb), label)``.

    Classes are the sorted names of the visible subfolders of ``root``, or ``classes`` when given:
    then the folder must have exactly those classes (a validation folder against the training
    classes) and labels follow that order. Without a transform the item is a PIL RGB image.

    Files are read through :func:`vitlab.data.image_io.open_image` under ``policy`` (pixel limit,
    allowed formats); one that fails to decode is replaced as :mod:`vitlab.data.bad_samples`
    describes. Directory links are followed once each (:mod:`vitlab.data.walk`); ``links`` records them.
    """

    def __init__(
        self, root: str | Path, transform: Callable[[Image.Image], Any] | None = None,
        classes: list[str] | None = None, policy: ImagePolicy | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.transform = transform
        self.policy = policy if policy is not None else ImagePolicy()
        self.bad = BadFiles(self.policy)
        found = _class_folders(self.root)
        if classes is not None:
            _check_classes(self.root, found, list(classes))
        self.classes: list[str] = list(classes) if classes is not None else found
        self.links = WalkReport()
        self.samples: list[tuple[Path, int]] = _collect_samples(self.root, self.classes, self.links)
        self.targets: list[int] = [label for _, label in self.samples]
        log_report(self.root, self.links)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self._load(index)  # RGB here; the transform converts to the model's channel count.
        return (self.transform(image) if self.transform is not None else image), label

    def _load(self, index: int) -> tuple[Image.Image, int]:
        """The image and label at ``index``, or those of the next readable index (a deterministic stand-in)."""
        def load(i: int) -> tuple[Image.Image, int]:
            path, label = self.samples[i]
            return open_image(path, self.policy.max_pixels), label

        return load_or_substitute(index, len(self.samples), load, lambda i: str(self.samples[i][0]), self.bad,
                                  f"{self.root}: no image in the dataset can be decoded")

    def verify(self) -> None:
        """Check every file's header (allowed format, pixel limit, parsable); DataError names the first bad one.

        Only parses headers, never decodes pixels, so a folder of tens of thousands of small images
        takes about a second once the files are in the page cache. A file whose pixels are
        truncated passes here and is handled by the bad-sample policy when it is read.
        """
        for path, _ in self.samples:
            read_header(path, self.policy.max_pixels)


def open_rgb(path: Path, max_pixels: int | None = None) -> Image.Image:
    """The decoded image at ``path`` in RGB (guarded, see :mod:`vitlab.data.image_io`); DataError naming the file."""
    return open_image(path, max_pixels)


def _class_folders(root: Path) -> list[str]:
    if not root.exists():
        raise DataError(f"{root}: data folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected a folder of class subfolders)")
    with os.scandir(root) as entries:
        visible = [e for e in entries if not is_hidden(e.name)]
    classes = sorted(e.name for e in visible if e.is_dir())
    if not classes:
        loose = sum(1 for e in visible if e.is_file() and is_image_file(e.name))
        hint = f"; found {loose} images directly in it" if loose else ""
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>{hint})")
    return classes


def _check_classes(root: Path, found: list[str], expected: list[str]) -> None:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if len(set(expected)) != len(expected):
        raise DataError(f"{root}: expected classes contain duplicates: {expected}")
    if missing or extra:
        parts = [f"{what} {', '.join(names)}" for what, names in (("missing", missing), ("extra", extra)) if names]
        raise DataError(f"{root}: classes differ from the expected ones ({'; '.join(parts)})")


def _collect_samples(root: Path, classes: list[str], links: WalkReport) -> list[tuple[Path, int]]:
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = _image_files(root / name, links)
        if not files:
            empty.append(name)
        samples.extend((path, label) for path in files)
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    if not samples:
        raise DataError(f"{root}: no images in any class folder (looked for {exts})")
    if empty:
        others = f"; nor do {', '.join(empty[1:])}" if len(empty) > 1 else ""
        raise DataError(f"{root / empty[0]}: class folder has no images (looked for {exts}{others})")
    return samples


def _image_files(folder: Path, links: WalkReport | None = None) -> list[Path]:
    """Image files under ``folder`` in a stable (sorted) order, skipping hidden entries at every level."""
    return walk_files(folder, lambda d: not is_hidden(d), is_image_file, links)
