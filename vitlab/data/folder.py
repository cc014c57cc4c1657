"""A folder of class subfolders of images (``<root>/<class>/**/<image>``) as a classification dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from torch.utils.data import Dataset

from vitlab.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# What PIL raises for a file that is not a (complete, supported) image: UnidentifiedImageError and
# truncation are OSErrors, some decoders raise SyntaxError or ValueError, huge images a bomb error.
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


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
    """

    def __init__(
        self, root: str | Path, transform: Callable[[Image.Image], Any] | None = None,
        classes: list[str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.transform = transform
        found = _class_folders(self.root)
        if classes is not None:
            _check_classes(self.root, found, list(classes))
        self.classes: list[str] = list(classes) if classes is not None else found
        self.samples: list[tuple[Path, int]] = _collect_samples(self.root, self.classes)
        self.targets: list[int] = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = open_rgb(path)  # RGB here; the transform converts to the model's channel count.
        return (self.transform(image) if self.transform is not None else image), label

    def verify(self) -> None:
        """Check that every file has a readable image header; DataError names the first bad one.

        Only parses headers (PIL ``verify``), never decodes pixels, so a folder of tens of thousands
        of small images takes about a second once the files are in the page cache.
        """
        for path, _ in self.samples:
            try:
                with Image.open(path) as img:
                    img.verify()
            except _READ_ERRORS as e:
                raise DataError(f"{path}: cannot read image ({_reason(e)})") from None


def open_rgb(path: Path) -> Image.Image:
    """The decoded image at ``path`` in RGB; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read image ({_reason(e)})") from None


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


def _collect_samples(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = _image_files(root / name)
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


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` in a stable (sorted) order, skipping hidden entries at every level."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))  # prune and fix the walk order
        base = Path(dirpath)
        files.extend(base / f for f in sorted(filenames) if is_image_file(f))
    return files


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
