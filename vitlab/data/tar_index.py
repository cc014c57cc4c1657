"""An index of WebDataset tar shards: where each sample's image lies, and its label.

Reads the tar headers and the small label members (``.cls`` / ``.json``) only, never an image;
a sample is then one seek and read (:class:`ShardIndex.read`). Members are grouped into samples by
webdataset's own key rule (``webdataset.tariterators.base_plus_ext``). Every fault is a one-line
:class:`~vitlab.errors.DataError` naming the shard and the sample: a sample without an image or
a label, a label that is not a non-negative integer, a compressed or torn tar.
"""

from __future__ import annotations

import functools
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitlab.data.folder import IMAGE_EXTENSIONS
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
        key: (N,) str, webdataset sample keys (for messages and the fingerprint).
    """

    shards: tuple[Path, ...]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray
    key: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def name(self, i: int) -> str:
        """``shard.tar:key`` of sample ``i``, for messages."""
        return f"{self.shards[int(self.shard[i])]}:{self.key[i]}"

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
    """The :class:`ShardIndex` of ``paths`` (each shard read once per process, then cached)."""
    parts = []
    for p in paths:
        st = p.stat()
        parts.append(_index_shard(str(p), st.st_size, st.st_mtime_ns))
    if not any(len(part[0]) for part in parts):
        raise DataError(f"{paths[0]}: no samples in {len(paths)} shard(s)")
    shard = np.concatenate([np.full(len(part[0]), i, dtype=np.int32) for i, part in enumerate(parts)])
    key, offset, size, label = (np.concatenate([part[j] for part in parts]) for j in range(4))
    return ShardIndex(tuple(paths), shard, offset, size, label, key)


@functools.lru_cache(maxsize=None)
def _index_shard(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keys, image offsets, image sizes, labels) of one shard; cached on (path, size, mtime): train, a
    carved val and a repeated open in one process read the headers once."""
    groups: dict[str, dict[str, Any]] = {}
    split = webdataset_module().tariterators.base_plus_ext
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                _add_member(tar, member, groups, path, split)
    except tarfile.ReadError as err:
        raise DataError(f"{path}: not a readable uncompressed tar shard ({err}); random access needs plain "
                        ".tar (not .tar.gz)") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read the shard ({err})") from None
    rows = [_sample_of(path, key, g) for key, g in groups.items()]
    keys = np.array([r[0] for r in rows], dtype=str)
    return (keys, *(np.array([r[j] for r in rows], dtype=np.int64) for j in (1, 2, 3)))  # type: ignore[return-value]


def _add_member(tar: tarfile.TarFile, member: tarfile.TarInfo, groups: dict[str, dict[str, Any]], path: str,
                split: Any) -> None:
    if not member.isfile():
        return
    key, ext = split(member.name)
    if key is None or Path(key).name.startswith((".", "__")):  # hidden files, __MACOSX, webdataset's __key__
        return
    ext = ext.lower()
    group = groups.setdefault(key, {})
    if ext in IMAGE_EXTS and "image" not in group:
        group["image"] = (member.offset_data, member.size)
    elif ext in ("cls", "json") and "label" not in group:
        raw = tar.extractfile(member).read()  # type: ignore[union-attr]
        group["label"] = _parse_label(raw, ext, f"{path}:{member.name}")


def _parse_label(raw: bytes, ext: str, name: str) -> int:
    try:
        value = json.loads(raw) if ext == "json" else int(raw.decode().strip())
        if isinstance(value, dict):
            value = value.get("label", value.get("cls"))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"got {value!r}")
    except (ValueError, UnicodeDecodeError) as err:
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
