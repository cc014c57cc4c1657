"""Safe readers and writers for weight files: nothing is ever unpickled beyond plain tensors.

* torch files: ``torch.load(weights_only=True)`` only; a file that needs more fails with
  :class:`UnsafePickleError` naming the disallowed global. There is no unsafe retry.
* safetensors: the header is validated (length, JSON, dtypes, shapes against byte ranges,
  no gaps or overlaps) before any tensor is read.
* .npz: ``np.load(allow_pickle=False)``; every array is read eagerly so a torn file fails here.

Truncated or malformed files raise :class:`MalformedFileError` (one line, exit code 8).
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vitlab.utils.atomic import atomic_write
from vitlab.weights.errors import MalformedFileError, UnsafePickleError

# safetensors dtype name -> bytes per element
_ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER = 100 * 1024 * 1024


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_torch(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth / .bin file, loaded with ``weights_only=True`` and nothing else.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped. Non-tensor entries are
    rejected (they would be dropped silently otherwise).
    """
    path = Path(path)
    if not path.is_file():
        raise MalformedFileError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types; classify by message
        text = str(err)
        match = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
        if match:
            name = match.group(1)
            raise UnsafePickleError(f"{path}: refusing to unpickle: the file needs the disallowed global {name} "
                                    "(only plain tensors are loaded; re-save it as a state dict or safetensors)") from None
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        why = detail.group(1).strip().splitlines()[0] if detail else _first_line(err)
        raise MalformedFileError(f"{path}: not a readable torch file ({why})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise MalformedFileError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise MalformedFileError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:5]))}")
    return dict(obj)


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file (validated) or a torch file (``weights_only``), by suffix."""
    path = Path(path)
    return read_safetensors(path)[0] if path.suffix.lower() == ".safetensors" else read_torch(path)


def validate_safetensors_header(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Check a safetensors file's framing; return (tensor entries, metadata) or raise MalformedFileError."""
    path = Path(path)
    if not path.is_file():
        raise MalformedFileError(f"{path}: file not found")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise MalformedFileError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise MalformedFileError(f"{path}: safetensors header length {n} exceeds the file ({size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MalformedFileError(f"{path}: safetensors header is not JSON ({_first_line(err)})") from None
    if not isinstance(header, dict):
        raise MalformedFileError(f"{path}: safetensors header is not an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise MalformedFileError(f"{path}: safetensors metadata must map strings to strings")
    data_len = size - 8 - n
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in _ST_DTYPES:
            raise MalformedFileError(f"{path}: tensor {name!r} has an unknown dtype {entry.get('dtype') if isinstance(entry, dict) else entry!r}")
        shape, offs = entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)):
            raise MalformedFileError(f"{path}: tensor {name!r} has a malformed shape or data_offsets")
        begin, end = offs
        if not 0 <= begin <= end <= data_len:
            raise MalformedFileError(f"{path}: tensor {name!r} bytes {begin}..{end} lie outside the data ({data_len} bytes; truncated?)")
        if end - begin != math.prod(shape) * _ST_DTYPES[entry["dtype"]]:
            raise MalformedFileError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape} {entry['dtype']}")
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise MalformedFileError(f"{path}: tensor {name!r} starts at {begin}, expected {pos} (gap or overlap)")
        pos = end
    if pos != data_len:
        raise MalformedFileError(f"{path}: {data_len - pos} trailing bytes after the last tensor")
    return header, meta


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a validated safetensors file."""
    from safetensors import safe_open

    _, meta = validate_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as err:  # noqa: BLE001
        raise MalformedFileError(f"{path}: cannot read safetensors ({_first_line(err)})") from None


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (made contiguous, on CPU) atomically with string metadata."""
    from safetensors.torch import save

    blob = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write(path, lambda f: f.write(blob))


def write_torch(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """A plain state dict that ``torch.load(weights_only=True)`` reads; written atomically."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda f: torch.save(state, f))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file (``allow_pickle=False``), read eagerly so a torn file fails here."""
    path = Path(path)
    if not path.is_file():
        raise MalformedFileError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError, zipfile.LargeZipFile) as err:
        raise MalformedFileError(f"{path}: not a readable .npz ({_first_line(err)})") from None
