"""Property tests: random and mutated bytes of a valid small file, fed to every reader of untrusted files.

Each reader either returns or raises its documented vitlab error (a VitlabError subclass: DataError
for images, MalformedFileError / CheckpointError for weights): never another exception, never a hang
(hypothesis ``deadline``), never more than a memory bound (tracemalloc peak for what Python and
numpy allocate, and the process's peak RSS growth for what native code maps).
"""

from __future__ import annotations

import io
import resource
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as st_save

from vitlab.data.image_io import open_image, read_header
from vitlab.errors import VitlabError
from vitlab.weights.io import read_npz, read_safetensors, read_torch
from vitlab.weights.mindspore_ckpt import read_ckpt, write_ckpt
from vitlab.weights.vitlab_format import read_metadata, read_tensors

FUZZ = settings(max_examples=60, deadline=timedelta(seconds=3), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PY_PEAK = 64 * 2**20  # bytes Python / numpy may hold at once while reading a file of a few KB
RSS_GROWTH = 256 * 2**20  # growth of the process's peak RSS over one example (KiB in ru_maxrss on Linux)
_DIR = Path(tempfile.mkdtemp(prefix="vitlab-fuzz-"))


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` with 1-8 edits: flipped bytes, overwritten 4-byte integers, cuts, inserts, duplicated spans."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "int", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "int":
            value = draw(st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 2**31 - 1, 2**32 - 1])).to_bytes(4, "little")
            data[at:at + 4] = value
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))] * draw(st.integers(1, 4))
    return bytes(data)


def _bounded(read: Callable[[], object]) -> None:
    """Run ``read``: a VitlabError or a result, within the memory bounds."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        read()
    except VitlabError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PY_PEAK, f"python peak {peak:,} bytes"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024 < RSS_GROWTH


def _on_disk(name: str, data: bytes) -> Path:
    path = _DIR / name
    path.write_bytes(data)
    return path


# --- valid seeds ---------------------------------------------------------------------------------


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, w=np.arange(24, dtype=np.float32).reshape(2, 3, 4), b=np.ones(3, np.int64))
    return buf.getvalue()


def _ckpt_bytes() -> bytes:
    path = _DIR / "seed.ckpt"
    write_ckpt(path, {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "n": torch.tensor(3)}, crc_check=False)
    return path.read_bytes()


def _safetensors_bytes() -> bytes:
    return st_save({"a": torch.ones(2, 3), "b": torch.arange(4, dtype=torch.int32)}, metadata={"k": "v"})


def _vitlab_bytes() -> bytes:
    from vitlab.api import create_model
    from vitlab.weights.vitlab_format import save_weights

    path = _DIR / "seed.safetensors"
    model = create_model("vit_pico_patch7_28", depth=1, embed_dim=8, num_heads=2, mlp_dim=8, num_classes=2)
    save_weights(path, model, ["a", "b"], {"epoch": 0})
    return path.read_bytes()


def _torch_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3, 2)}, buf)
    return buf.getvalue()


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if fmt == "GIF":
        image.save(buf, fmt, save_all=True, append_images=[image.rotate(90)])
    else:
        image.save(buf, fmt)
    return buf.getvalue()


NPZ, CKPT, SAFETENSORS, TORCH = _npz_bytes(), _ckpt_bytes(), _safetensors_bytes(), _torch_bytes()
VITLAB = _vitlab_bytes()
IMAGES = {fmt: _image_bytes(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


def test_seeds_are_valid() -> None:
    """The mutations start from files every reader accepts (else the fuzzing proves nothing)."""
    assert set(read_npz(_on_disk("s.npz", NPZ))) == {"w", "b"}
    assert set(read_ckpt(_on_disk("s.ckpt", CKPT))) == {"w", "n"}
    assert set(read_safetensors(_on_disk("s.safetensors", SAFETENSORS))[0]) == {"a", "b"}
    assert read_metadata(_on_disk("v.safetensors", VITLAB)) and read_tensors(_DIR / "v.safetensors")
    assert set(read_torch(_on_disk("s.pth", TORCH))) == {"w"}
    for fmt, data in IMAGES.items():
        assert open_image(io.BytesIO(data)).size == (8, 8), fmt


# --- the properties ----------------------------------------------------------------------------


@FUZZ
@given(st.one_of(mutated(NPZ), st.binary(max_size=512)))
def test_fuzz_npz(data: bytes) -> None:
    _bounded(lambda: read_npz(_on_disk("f.npz", data)))


@FUZZ
@given(st.one_of(mutated(CKPT), st.binary(max_size=512)))
def test_fuzz_mindspore_ckpt(data: bytes) -> None:
    _bounded(lambda: read_ckpt(_on_disk("f.ckpt", data)))


@FUZZ
@given(st.one_of(mutated(SAFETENSORS), st.binary(max_size=512)))
def test_fuzz_safetensors(data: bytes) -> None:
    _bounded(lambda: read_safetensors(_on_disk("f.safetensors", data)))


@FUZZ
@given(mutated(VITLAB))
def test_fuzz_vitlab_checkpoint(data: bytes) -> None:
    path = _on_disk("fv.safetensors", data)
    _bounded(lambda: read_metadata(path))
    _bounded(lambda: read_tensors(path))


@FUZZ
@given(st.one_of(mutated(TORCH), st.binary(max_size=512)))
def test_fuzz_torch_state(data: bytes) -> None:
    _bounded(lambda: read_torch(_on_disk("f.pth", data)))


@pytest.mark.parametrize("fmt", sorted(IMAGES))
@FUZZ
@given(data=st.data())
def test_fuzz_image_decoding(fmt: str, data: st.DataObject) -> None:
    raw = data.draw(st.one_of(mutated(IMAGES[fmt]), st.binary(max_size=256)))
    # A small pixel limit: a mutated header may announce any size, and the limit is what bounds it.
    _bounded(lambda: read_header(io.BytesIO(raw), max_pixels=4096))
    _bounded(lambda: open_image(io.BytesIO(raw), max_pixels=4096))
