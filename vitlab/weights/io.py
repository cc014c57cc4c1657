"""Safe readers and writers for weight files: nothing is ever unpickled beyond plain tensors.

* torch files: ``torch.load(weights_only=True)`` only; a file that needs more fails with
  :class:`UnsafePickleError` naming the disallowed global. There is no unsafe retry.
* safetensors: the header is validated (length, JSON, dtypes, shapes against byte ranges,
  no gaps or overlaps) before any tensor is read.
* .npz: never ``np.load``: each member's zip entry (declared size, compression ratio) and ``.npy``
  header (shape x dtype, no object dtype) are checked against each other and against
  :func:`memory_limit` before a byte is inflated; then exactly the declared bytes are read (the zip
  CRC is checked), so a torn or lying file fails here and a 1 MB file never becomes gigabytes.
* Memory: a reader never holds more than :func:`memory_limit` of tensors from one file:
  ``$VITLAB_MAX_WEIGHTS_BYTES`` when set, else 16 x the file's size (at least 256 MiB). Uncompressed
  formats (safetensors, torch zip files, MindSpore .ckpt) are bounded by their file size already.

Truncated or malformed files raise :class:`MalformedFileError` (one line, exit code 8).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.utils.atomic import atomic_write
from vitlab.weights.errors import MalformedFileError, UnsafePickleError

# safetensors dtype name -> bytes per element
_ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER = 100 * 1024 * 1024
ENV_MAX_BYTES = "VITLAB_MAX_WEIGHTS_BYTES"
_RATIO, _FLOOR = 16, 256 * 2**20  # default memory limit: 16 x the file, at least 256 MiB
_DEFLATE_MAX_RATIO = 1100  # deflate cannot inflate more than ~1032:1; a larger declared size is a lie
_NPY_KINDS = frozenset("biufc")
# What zipfile, inflate and numpy's .npy header parser raise on a malformed archive (seen under fuzzing).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, KeyError, IndexError,
               TypeError, SyntaxError, NotImplementedError, RuntimeError, RecursionError, MemoryError,
               struct.error, zlib.error, OverflowError)  # bool, ints, floats, complex: plain numbers only


def memory_limit(path: str | Path) -> int:
    """The most bytes of tensors a reader may inflate from ``path`` (see the module docstring)."""
    raw = os.environ.get(ENV_MAX_BYTES, "").strip()
    if raw:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise MalformedFileError(f"{ENV_MAX_BYTES}={raw!r}: expected a whole number of bytes") from None
    return max(_RATIO * Path(path).stat().st_size, _FLOOR)


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
    _check_torch_zip(path)
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


def _check_torch_zip(path: Path) -> None:
    """A torch zip file's records, like an .npz's members, are size-checked before torch inflates any.

    The pre-1.6 (non-zip) format is refused: its pickle and storage headers declare lengths that
    torch allocates before reading, so a few bytes can demand gigabytes.
    """
    try:
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04" or not zipfile.is_zipfile(path):  # torch decides by these 4 bytes
            raise MalformedFileError(f"{path}: not a readable torch file (not the zip format torch >= 1.6 writes; "
                                     "the older format is refused: re-save it with a current torch)")
        with zipfile.ZipFile(path) as zf:
            _check_zip_sizes([m for m in zf.infolist() if not m.is_dir()], memory_limit(path))
    except _NpzRefused as err:
        raise MalformedFileError(f"{path}: not a readable torch file ({err})") from None
    except _ZIP_ERRORS as err:
        raise MalformedFileError(f"{path}: not a readable torch file ({_first_line(err)})") from None


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
    """Every array of an .npz file, each checked before it is inflated (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise MalformedFileError(f"{path}: file not found")
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            _check_zip_sizes(members, memory_limit(path))
            return {_npz_key(path, m): _read_npy_member(path, zf, m) for m in members}
    except _NpzRefused as err:
        raise MalformedFileError(f"{path}: not a readable .npz ({err})") from None
    except _ZIP_ERRORS as err:
        raise MalformedFileError(f"{path}: not a readable .npz ({_first_line(err)})") from None


class _NpzRefused(ValueError):
    """A check of :func:`read_npz` failed; the message lacks the path, which read_npz adds."""


def _check_zip_sizes(members: list[zipfile.ZipInfo], limit: int) -> None:
    """Declared sizes that cannot be true, or whose total passes ``limit``, refuse the file before any inflation."""
    for m in members:
        stored = m.compress_type == zipfile.ZIP_STORED
        if (stored and m.file_size != m.compress_size) or m.file_size > max(m.compress_size, 1) * _DEFLATE_MAX_RATIO:
            raise _NpzRefused(f"member {m.filename!r} declares {m.file_size:,} bytes from "
                                     f"{m.compress_size:,} compressed (impossible; a zip bomb or a corrupt file)")
    total = sum(m.file_size for m in members)
    if total > limit:
        raise _NpzRefused(f"its members would inflate to {total:,} bytes, more than the limit of "
                                 f"{limit:,} for this file (set {ENV_MAX_BYTES} to allow more if it is trusted)")


def _npz_key(path: Path, member: zipfile.ZipInfo) -> str:
    if not member.filename.endswith(".npy"):
        raise _NpzRefused(f"member {member.filename!r} is not an .npy array")
    return member.filename[: -len(".npy")]


def _read_npy_member(path: Path, zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member: header checked against the zip entry's declared size, then exactly those bytes."""
    fmt = np.lib.format
    with zf.open(member) as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise _NpzRefused(f"member {member.filename!r} has .npy version {version}")
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = reader(f, max_header_size=2**16)
        if dtype.hasobject or dtype.kind not in _NPY_KINDS or dtype.fields is not None:
            raise _NpzRefused(f"member {member.filename!r} has dtype {dtype} (only plain numbers are read)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != member.file_size - f.tell():
            raise _NpzRefused(f"member {member.filename!r} declares shape {shape} {dtype} "
                                     f"({nbytes:,} bytes) but holds {member.file_size - f.tell():,}")
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise _NpzRefused(f"member {member.filename!r} is truncated ({len(data)} of {nbytes} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def read_json(path: str | Path, strict: bool = True) -> dict[str, Any]:
    """A JSON object file (a model folder's config.json, preprocessor_config.json ...).

    Missing or not an object: ``{}``. Malformed: :class:`MalformedFileError` naming the file when
    ``strict``, else ``{}`` (format detection asks "is this a folder of mine?" and must not fail).
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        if not strict:
            return {}
        raise MalformedFileError(f"{path}: malformed JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def read_folder_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face-style model folder: a sharded index, else one model file."""
    folder = Path(folder)
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            weight_map = read_json(folder / name).get("weight_map")
            if not isinstance(weight_map, dict):
                raise MalformedFileError(f"{folder / name}: no 'weight_map' object")
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(read_state(folder / shard))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return read_state(folder / name)
    raise MalformedFileError(f"{folder}: no model.safetensors or pytorch_model.bin")
