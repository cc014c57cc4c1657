"""A cheap fingerprint of an image folder's sample list, for a resumed run to compare.

One ``stat`` per file, no reads: per class, the number of images and a digest of their paths
(relative to the root) and sizes. Small enough for every checkpoint even with a thousand
classes, and specific enough to name the class whose files were added, removed, renamed or
replaced.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence


def folder_fingerprint(root: Path, classes: Sequence[str], samples: Sequence[tuple[Path, int]]) -> dict[str, dict]:
    """``{"images_per_class": {class: n}, "files_digest": {class: 16 hex digits}}`` of a folder dataset."""
    counts: dict[str, int] = {name: 0 for name in classes}
    hashes = {name: hashlib.sha256() for name in classes}
    for path, label in samples:
        name = classes[label]
        counts[name] += 1
        try:
            size = path.stat().st_size
        except OSError:
            size = -1  # gone since the folder was listed: still a difference worth reporting
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.as_posix()
        hashes[name].update(f"{rel}\0{size}\n".encode())
    return {"images_per_class": counts, "files_digest": {n: h.hexdigest()[:16] for n, h in hashes.items()}}
