"""Safety: nothing beyond plain tensors is unpickled; malformed files fail in one line with a distinct code."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitlab.cli.main import main
from vitlab.weights.errors import MalformedFileError, UnsafePickleError
from vitlab.weights.io import read_npz, read_safetensors, read_torch, validate_safetensors_header

TOUCHED: list[str] = []


class Payload:
    """Unpickling this would run __setstate__ (a stand-in for arbitrary code)."""

    def __setstate__(self, state: dict) -> None:
        TOUCHED.append("unpickled")


def test_pickle_with_foreign_global_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "obj": Payload()}, path)
    with pytest.raises(UnsafePickleError, match=r"disallowed global .*Payload") as info:
        read_torch(path)
    assert TOUCHED == [] and info.value.exit_code == 9
    assert "\n" not in str(info.value)


def test_plain_state_dict_and_wrappers_load(tmp_path: Path) -> None:
    torch.save({"state_dict": {"a": torch.ones(3)}}, tmp_path / "w.pth")
    assert torch.equal(read_torch(tmp_path / "w.pth")["a"], torch.ones(3))


def test_truncated_torch_file(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(100)}, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(MalformedFileError) as info:
        read_torch(tmp_path / "t.pth")
    assert info.value.exit_code == 8


def _st(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4)}, path, metadata={"k": "v"})
    return path


def test_safetensors_header_validated(tmp_path: Path) -> None:
    path = _st(tmp_path)
    tensors, meta = read_safetensors(path)
    assert meta == {"k": "v"} and tensors["a"].shape == (2, 3)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])

    def rewrite(h: dict, data: bytes = raw[8 + n :]) -> Path:
        blob = json.dumps(h).encode()
        out = tmp_path / "bad.safetensors"
        out.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
        return out

    bad_cases = {
        "truncated": (lambda: (tmp_path / "bad.safetensors").write_bytes(raw[:-5]) and tmp_path / "bad.safetensors"),
        "huge header length": (lambda: (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 10**12) + raw[8:])
                               and tmp_path / "bad.safetensors"),
        "wrong byte count": lambda: rewrite({**header, "a": {**header["a"], "shape": [3, 3]}}),
        "unknown dtype": lambda: rewrite({**header, "a": {**header["a"], "dtype": "X9"}}),
        "not json": lambda: (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 4) + b"{{{{" + raw[8 + n :])
                            and tmp_path / "bad.safetensors",
        "overlap": lambda: rewrite({**header, "b": {**header["b"], "data_offsets": header["a"]["data_offsets"][:1] * 2}}),
    }
    for name, make in bad_cases.items():
        with pytest.raises(MalformedFileError):
            validate_safetensors_header(make())
        assert name


def test_npz_is_read_without_pickle(tmp_path: Path) -> None:
    np.savez(tmp_path / "ok.npz", a=np.ones(3, np.float32))
    assert read_npz(tmp_path / "ok.npz")["a"].shape == (3,)
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(MalformedFileError, match="not a readable .npz"):
        read_npz(tmp_path / "obj.npz")
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "torn.npz").write_bytes(data[: len(data) - 40])
    with pytest.raises(MalformedFileError):
        read_npz(tmp_path / "torn.npz")


@pytest.mark.parametrize("name,fmt", [("w.safetensors", "timm"), ("w.npz", "npz"), ("w.ckpt", "mindspore"), ("w.pth", "timm")])
def test_cli_malformed_files_one_line_exit_8(name: str, fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / name).write_bytes(b"\x0a\x05garbage-and-then-it-stops")
    code = main(["convert", str(tmp_path / name), str(tmp_path / "out.safetensors"), "--from", fmt])
    err = capsys.readouterr().err.strip()
    assert code == 8, err
    assert err.startswith("error: ") and "\n" not in err


def test_cli_unsafe_pickle_exit_9(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"obj": Payload()}, tmp_path / "evil.pth")
    assert main(["convert", str(tmp_path / "evil.pth"), str(tmp_path / "o.safetensors"), "--from", "timm"]) == 9
    assert "Payload" in capsys.readouterr().err and TOUCHED == []
