"""Cheap fingerprints of a dataset's sample list, for a resumed run to compare.

No pixel is read: per class, the number of samples and a digest of one short text per sample
(for a folder: the path relative to the root and the file size, one ``stat`` per file; for tar
shards: shard, key and member size; for a Hugging Face dataset: row and encoded image size).
Small enough for every checkpoint even with a thousand classes, and specific enough to name the
class whose samples were added, removed, renamed or replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Sequence


def labelled_fingerprint(classes: Sequence[str], items: Iterable[tuple[int, str]]) -> dict[str, dict]:
    """``{"images_per_class": {class: n}, "files_digest": {class: 16 hex digits}}`` of ``(label, text)`` items.

    ``text`` identifies one sample (its order within a class matters, as the sample order does).
    """
    counts: dict[str, int] = {name: 0 for name in classes}
    hashes = {name: hashlib.sha256() for name in classes}
    for label, text in items:
        name = classes[label]
        counts[name] += 1
        hashes[name].update(f"{text}\n".encode())
    return {"images_per_class": counts, "files_digest": {n: h.hexdigest()[:16] for n, h in hashes.items()}}


def folder_fingerprint(root: Path, classes: Sequence[str], samples: Sequence[tuple[Path, int]]) -> dict[str, dict]:
    """:func:`labelled_fingerprint` of a folder dataset: each file's path relative to ``root`` and its size."""
    return labelled_fingerprint(classes, ((label, _file_text(root, path)) for path, label in samples))


def _file_text(root: Path, path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        size = -1  # gone since the folder was listed: still a difference worth reporting
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix()
    return f"{rel}\0{size}"
