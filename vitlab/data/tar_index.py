"""An index of WebDataset tar shards: where each sample's image lies, and its label.

Reads the tar headers and the small label members (``.cls`` / ``.json``) only, never an image;
a sample is then one seek and read (:class:`ShardIndex.read`). Members are grouped into samples by
webdataset's own key rule (``webdataset.tariterators.base_plus_ext``). Every fault is a one-line
:class:`~vitlab.errors.DataError` naming the shard and the sample: a sample without an image or
a label, a label that is not a non-negative integer, a compressed or torn tar (:mod:`vitlab.data.tar_scan`).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitlab.data.folder import IMAGE_EXTENSIONS
from vitlab.data.tar_scan import scan_members
from vitlab.errors import DataError

IMAGE_EXTS = tuple(e.lstrip(".") for e in sorted(IMAGE_EXTENSIONS))


def webdataset_module() -> Any:
    """The webdataset package, or a DataError saying how to install it (an optional dependency)."""
    try:
        import webdataset
    except ImportError:
        raise DataError("wds: sources need the webdataset package (pip install 'vitlab[streaming]')") from None
    return webdataset


@dataclass(frozen=True)
class ShardIndex:
    """Samples of a list of shards, in shard order then tar order (N samples).

    Attributes:
        shards: the shard files.
        shard: (N,) int32, which shard holds sample i.
        offset, size: (N,) int64, where its image bytes lie in that shard.
        label: (N,) int64 class labels.
        key: (N,) bytes, webdataset sample keys in UTF-8 (:meth:`key_of` decodes one).
    """

    shards: tuple[Path, ...]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray
    key: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def key_of(self, i: int) -> str:
        """The webdataset key of sample ``i``."""
        return bytes(self.key[i]).decode()

    def name(self, i: int) -> str:
        """``shard.tar:key`` of sample ``i``, for messages."""
        return f"{self.shards[int(self.shard[i])]}:{self.key_of(i)}"

    def read(self, i: int) -> bytes:
        """The encoded image bytes of sample ``i`` (opened per read: safe in forked loader workers)."""
        with open(self.shards[int(self.shard[i])], "rb") as f:
            f.seek(int(self.offset[i]))
            data = f.read(int(self.size[i]))
        if len(data) != int(self.size[i]):
            raise DataError(f"{self.name(i)}: image cut short ({len(data)} of {int(self.size[i])} bytes; the shard "
                            "changed or is truncated)")
        return data


def index_shards(paths: Sequence[Path]) -> ShardIndex:
    """The :class:`ShardIndex` of ``paths``, cached per process on (path, size, mtime) of every shard: the
    training split, the base of a carved val and a repeated open share one index (read once)."""
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _index_cached(stats)


@functools.lru_cache(maxsize=8)
def _index_cached(stats: tuple[tuple[str, int, int], ...]) -> ShardIndex:
    parts = [_index_shard(path) for path, _, _ in stats]
    if not any(len(part[0]) for part in parts):
        raise DataError(f"{stats[0][0]}: no samples in {len(stats)} shard(s)")
    shard = np.concatenate([np.full(len(part[0]), i, dtype=np.int32) for i, part in enumerate(parts)])
    key, offset, size, label = (np.concatenate([part[j] for part in parts]) for j in range(4))
    return ShardIndex(tuple(Path(s[0]) for s in stats), shard, offset, size, label, key)


def _index_shard(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keys as UTF-8 bytes, image offsets, image sizes, labels) of one shard, in tar order."""
    groups: dict[str, dict[str, Any]] = {}
    split = webdataset_module().tariterators.base_plus_ext
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for name, offset, length, data in scan_members(f, path, _is_label, size):
                _add_member(name, offset, length, data, groups, path, split)
    except OSError as err:
        raise DataError(f"{path}: cannot read the shard ({err})") from None
    rows = [_sample_of(path, key, g) for key, g in groups.items()]
    keys = np.array([r[0].encode() for r in rows], dtype=bytes)  # 1 byte a character: ImageNet's 1.28M keys in ~40 MB
    return (keys, *(np.array([r[j] for r in rows], dtype=np.int64) for j in (1, 2, 3)))  # type: ignore[return-value]


def _is_label(name: str) -> bool:
    return name.lower().endswith((".cls", ".json"))


def _add_member(name: str, offset: int, length: int, data: bytes | None, groups: dict[str, dict[str, Any]],
                path: str, split: Any) -> None:
    key, ext = split(name)
    if key is None or key.rsplit("/", 1)[-1].startswith((".", "__")):  # hidden files, __MACOSX, webdataset's __key__
        return
    ext = ext.lower()
    group = groups.setdefault(key, {})
    if ext in IMAGE_EXTS and "image" not in group:
        group["image"] = (offset, length)
    elif ext in ("cls", "json") and "label" not in group and data is not None:
        group["label"] = _parse_label(data, ext, f"{path}:{name}")


def _parse_label(raw: bytes, ext: str, name: str) -> int:
    try:
        value = json.loads(raw) if ext == "json" else int(raw.decode().strip())
        if isinstance(value, dict):
            value = value.get("label", value.get("cls"))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"got {value!r}")
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: absurdly nested JSON
        what = ".cls must hold a non-negative integer" if ext == "cls" else '.json must hold {"label": <int >= 0>}'
        raise DataError(f"{name}: malformed label ({what}; {str(err).splitlines()[0][:80]})") from None
    return value


def _sample_of(path: str, key: str, group: dict[str, Any]) -> tuple[str, int, int, int]:
    if "image" not in group:
        raise DataError(f"{path}: malformed sample {key!r}: no image (.{', .'.join(IMAGE_EXTS)})")
    if "label" not in group:
        raise DataError(f"{path}: malformed sample {key!r}: no label (a .cls or .json member)")
    offset, size = group["image"]
    return key, offset, size, group["label"]
