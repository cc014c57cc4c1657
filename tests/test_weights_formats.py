"""The format table: the CLI's choices come from it, and every two-way record round-trips."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import torch

import vitlab
from vitlab.cli.convert_cmd import convert_cmd, resample_audit_cmd
from vitlab.cli.export_cmd import export_cmd
from vitlab.weights import export_weights, import_weights
from vitlab.weights.api import EXPORT_FORMATS, IMPORT_FORMATS
from vitlab.weights.errors import MalformedFileError, MappingError
from vitlab.weights.formats import FORMATS, WeightFormat, detect_format, readable, writable
from vitlab.weights.specs import SPECS, WeightSpec
from vitlab.weights.verify import peer_forward

TWO_WAY = [name for name, f in FORMATS.items() if f.readable and f.writable]


def _tiny(**numerics: object) -> torch.nn.Module:
    """A one-block ViT whose every weight (head included) is random, so logits carry signal."""
    torch.manual_seed(0)
    model = vitlab.create_model("vit_pico_patch4_32", depth=1, embed_dim=32, num_heads=2, mlp_dim=64, **numerics)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _choices(command: click.Command, option: str) -> list[str]:
    (param,) = [p for p in command.params if p.name == option]
    return list(param.type.choices)


def _path(tmp_path: Path, fmt: WeightFormat) -> Path:
    return tmp_path / fmt.name if fmt.name == "hf" else tmp_path / f"weights{fmt.suffixes[0]}"


def test_cli_choices_are_the_table() -> None:
    assert _choices(convert_cmd, "src_fmt") == list(readable()) == list(IMPORT_FORMATS)
    assert _choices(convert_cmd, "dst_fmt") == list(writable()) == list(EXPORT_FORMATS)
    assert _choices(resample_audit_cmd, "src_fmt") == list(readable())
    assert _choices(export_cmd, "fmt") == ["onnx", "torch-export", *writable()]
    assert set(readable()) | set(writable()) == set(FORMATS)


def test_table_records_are_complete() -> None:
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.suffixes and all(s.startswith(".") for s in fmt.suffixes)
        assert (fmt.read is None) == (fmt.to_vitlab is None), name  # reading needs both halves
        assert fmt.peer is not None or fmt.no_peer_why, f"{name}: say why there is no peer"


@pytest.mark.parametrize("name", TWO_WAY)
def test_every_two_way_record_round_trips(tmp_path: Path, name: str) -> None:
    fmt = FORMATS[name]
    model = _tiny(**(fmt.fixed_numerics or {}))  # a format with fixed numerics refuses any other
    path = _path(tmp_path, fmt)
    classes = [f"c{i}" for i in range(model.num_classes)]
    export_weights(model, path, name, classes)
    if fmt.detect is not None:
        assert detect_format(path) == name
    cfg = model.config  # the numerics a file may not record (MindSpore's defaults differ from PyTorch's)
    back = import_weights(path, name, num_heads=cfg.num_heads, norm_eps=cfg.norm_eps, act=cfg.act)
    assert back.info["source_format"] == name
    ours, theirs = model.state_dict(), back.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back.model(x), model(x))


def test_npz_is_read_only_and_mindspore_has_no_peer(tmp_path: Path) -> None:
    assert "npz" in readable() and "npz" not in writable()
    with pytest.raises(MappingError, match="unknown target format 'npz'"):
        export_weights(_tiny(), tmp_path / "w.npz", "npz")
    with pytest.raises(MappingError, match="mindcv needs MindSpore"):
        peer_forward("mindspore", tmp_path / "w.ckpt", _tiny().config)


def test_detection_follows_the_table(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    assert detect_format(tmp_path / "folder") == "hf"
    assert detect_format(tmp_path / "w.npz") == "npz"
    assert detect_format(tmp_path / "w.ckpt") == "mindspore"
    assert detect_format(tmp_path / "w.pth") == "timm"  # torchvision shares .pth and is never guessed
    with pytest.raises(MalformedFileError, match="pass --from"):
        detect_format(tmp_path / "w.onnx")


def test_specs_name_readable_formats() -> None:
    assert all(FORMATS[s.fmt].readable for s in SPECS)
    spec = WeightSpec("vit_base_patch16_224", "x", "mindspore", "https://example.org/no-suffix")
    assert spec.filename == "vit_base_patch16_224.x.ckpt"  # the suffix comes from the table
    with pytest.raises(vitlab.errors.ConfigError, match="unknown source format 'onnx'"):
        WeightSpec("vit_base_patch16_224", "x", "onnx", "https://example.org/m.onnx")
