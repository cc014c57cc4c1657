"""MindSpore ``.ckpt`` files, read and written without MindSpore: a minimal protobuf codec.

A file is a concatenation of serialised ``Checkpoint`` messages (protobuf merges repeated fields
across concatenation, so the whole file is one message)::

    message Checkpoint { message Value { required string tag = 1; required TensorProto tensor = 2; }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2;
                          required bytes tensor_content = 3; }

Large tensors are written as several records with the same tag, each holding a slice of the bytes;
they are joined here. With ``crc_check`` MindSpore appends ``b"crc_num"`` and a 10-byte big-endian
CRC-32 of everything before it; it is verified when present. Every tensor's byte length must match
its dims and type, or the file is rejected.

Memory is bounded by the file: record contents stay views into the file's bytes, and each tensor is
allocated once, only after its slices' total length has matched what its dims and type need (a
record claiming huge dims without the bytes for them allocates nothing). Peak: about twice the file.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from vitlab.utils.atomic import atomic_write
from vitlab.weights.errors import MalformedFileError

# MindSpore type name -> torch dtype
DTYPES: dict[str, torch.dtype] = {
    "Float16": torch.float16, "Float32": torch.float32, "Float64": torch.float64, "BFloat16": torch.bfloat16,
    "Int8": torch.int8, "Int16": torch.int16, "Int32": torch.int32, "Int64": torch.int64,
    "UInt8": torch.uint8, "UInt16": torch.uint16, "UInt32": torch.uint32, "UInt64": torch.uint64, "Bool": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
CRC_MARK = b"crc_num"
_CRC_LEN = len(CRC_MARK) + 10
SLICE_BYTES = 512 * 1024 * 1024
_MAX_RANK = 32  # MindSpore slices tensors above this size into several records


# ----------------------------------------------------------------------------- wire format
class _Reader:
    def __init__(self, buf: bytes | memoryview, source: str, where: str) -> None:
        self.buf, self.pos, self.source, self.where = memoryview(buf), 0, source, where

    def done(self) -> bool:
        return self.pos >= len(self.buf)

    def fail(self, why: str) -> MalformedFileError:
        return MalformedFileError(f"{self.source}: malformed MindSpore checkpoint ({why} in {self.where} at byte {self.pos})")

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.buf):
                raise self.fail("truncated varint")
            byte = self.buf[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise self.fail("varint longer than 10 bytes")

    def field(self) -> tuple[int, int]:
        key = self.varint()
        return key >> 3, key & 7

    def chunk(self) -> memoryview:
        n = self.varint()
        if self.pos + n > len(self.buf):
            raise self.fail(f"length {n} runs past the end (truncated file?)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, wire: int) -> None:
        if wire == 0:
            self.varint()
        elif wire == 1:
            self.pos += 8
        elif wire == 2:
            self.chunk()
        elif wire == 5:
            self.pos += 4
        else:
            raise self.fail(f"unsupported wire type {wire}")
        if self.pos > len(self.buf):
            raise self.fail("truncated field")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_records(data: bytes | memoryview, source: str = "ckpt") -> list[tuple[str, list[int], str, memoryview]]:
    """The raw (tag, dims, tensor_type, tensor_content) records, in file order (contents are views of ``data``)."""
    top = _Reader(data, source, "Checkpoint")
    records = []
    while not top.done():
        num, wire = top.field()
        if num != 1 or wire != 2:
            top.skip(wire)
            continue
        value = _Reader(top.chunk(), source, "Value")
        tag, tensor = None, None
        while not value.done():
            vnum, vwire = value.field()
            if vnum == 1 and vwire == 2:
                try:
                    tag = bytes(value.chunk()).decode("utf-8")
                except UnicodeDecodeError:
                    raise value.fail("tag is not UTF-8") from None
            elif vnum == 2 and vwire == 2:
                tensor = value.chunk()
            else:
                value.skip(vwire)
        if tag is None or tensor is None:
            raise top.fail("a value without tag or tensor")
        t = _Reader(tensor, source, f"tensor {tag!r}")
        dims: list[int] = []
        ttype, content = None, memoryview(b"")
        while not t.done():
            tnum, twire = t.field()
            if tnum == 1 and twire == 0:
                dims.append(_signed64(t.varint()))
            elif tnum == 1 and twire == 2:  # packed dims
                packed = _Reader(t.chunk(), source, f"dims of {tag!r}")
                while not packed.done() and len(dims) <= _MAX_RANK:
                    dims.append(_signed64(packed.varint()))
            elif tnum == 2 and twire == 2:
                ttype = bytes(t.chunk()).decode("utf-8", "replace")
            elif tnum == 3 and twire == 2:
                content = t.chunk()
            else:
                t.skip(twire)
            if len(dims) > _MAX_RANK:
                raise t.fail(f"more than {_MAX_RANK} dims")
        if ttype is None:
            raise t.fail("no tensor_type")
        records.append((tag, dims, ttype, content))
    return records


def read_ckpt(path: str | Path, with_other: bool = False) -> dict[str, torch.Tensor]:
    """Every numeric tensor of a MindSpore checkpoint, split records joined, sizes validated.

    Non-numeric entries (MindSpore stores strings with type "str") are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise MalformedFileError(f"{path}: file not found")
    data = memoryview(path.read_bytes())
    if len(data) >= _CRC_LEN and bytes(data[-_CRC_LEN:]).startswith(CRC_MARK):
        body, want = data[:-_CRC_LEN], int.from_bytes(data[-10:], "big")
        if binascii.crc32(body) != want:
            raise MalformedFileError(f"{path}: CRC-32 {binascii.crc32(body)} differs from the stored {want} (corrupt file)")
        data = body
    if not data:
        raise MalformedFileError(f"{path}: empty MindSpore checkpoint")
    joined: dict[str, tuple[list[int], str, list[memoryview]]] = {}
    for tag, dims, ttype, content in parse_records(data, str(path)):
        if tag in joined:
            prev_dims, prev_type, parts = joined[tag]
            if prev_dims != dims or prev_type != ttype:
                raise MalformedFileError(f"{path}: slices of {tag!r} disagree ({prev_dims} {prev_type} vs {dims} {ttype})")
            parts.append(content)
        else:
            joined[tag] = (dims, ttype, [content])
    out: dict[str, torch.Tensor] = {}
    for tag, (dims, ttype, parts) in joined.items():
        if ttype == "str":
            continue
        if ttype not in DTYPES:
            raise MalformedFileError(f"{path}: tensor {tag!r} has unknown type {ttype!r}")
        if len(dims) > _MAX_RANK:  # also keeps math.prod below cheap on a hostile file
            raise MalformedFileError(f"{path}: tensor {tag!r} has {len(dims)} dims (more than {_MAX_RANK})")
        if any(d < 0 for d in dims):
            raise MalformedFileError(f"{path}: tensor {tag!r} has negative dims {dims}")
        out[tag] = _tensor(path, tag, dims, ttype, parts)
    return out


def _tensor(path: Path, tag: str, dims: list[int], ttype: str, parts: list[memoryview]) -> torch.Tensor:
    """One tensor from its slices; the length is checked before anything is allocated."""
    dtype = DTYPES[ttype]
    have = sum(len(p) for p in parts)
    want = math.prod(dims) * torch.empty(0, dtype=dtype).element_size()
    if have != want:
        raise MalformedFileError(f"{path}: tensor {tag!r} has {have} bytes; dims {dims} {ttype} need {want}")
    if not want:
        return torch.empty(dims, dtype=dtype)
    raw, pos = bytearray(want), 0
    for part in parts:
        raw[pos:pos + len(part)] = part
        pos += len(part)
    return torch.frombuffer(raw, dtype=dtype).reshape(dims)  # owns ``raw``: no further copy


# ---------------------------------------------------------------------------------- writer
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def encode_record(tag: str, dims: list[int], ttype: str, content: bytes) -> bytes:
    """One serialised ``Checkpoint`` holding one value (dims unpacked, as proto2 writes them)."""
    tensor = b"".join(_varint(1 << 3 | 0) + _varint(d) for d in dims)
    tensor += _len_field(2, ttype.encode()) + _len_field(3, content)
    value = _len_field(1, tag.encode()) + _len_field(2, tensor)
    return _len_field(1, value)


def write_ckpt(path: str | Path, tensors: Mapping[str, torch.Tensor], crc_check: bool = False,
               slice_bytes: int = SLICE_BYTES) -> None:
    """Write tensors as a MindSpore checkpoint (slices above ``slice_bytes``), atomically."""
    blob = bytearray()
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.dtype not in NAMES:
            raise MalformedFileError(f"cannot store {name!r} of dtype {t.dtype} in a MindSpore checkpoint")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        row = max(1, t[0].numel() * t.element_size()) if t.ndim else len(raw) or 1
        step = max(row, (slice_bytes // row) * row)  # whole rows per slice, as np.array_split does
        for start in range(0, max(len(raw), 1), step):
            blob += encode_record(name, list(t.shape), NAMES[t.dtype], raw[start : start + step])
    if crc_check:
        blob += CRC_MARK + binascii.crc32(bytes(blob)).to_bytes(10, "big")
    atomic_write(path, lambda f: f.write(bytes(blob)))
