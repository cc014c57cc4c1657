"""Surgery: position-table and patch-kernel resampling, head swaps, all-or-nothing loads, the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vitlab
from vitlab.cli.main import main
from vitlab.weights.errors import MappingError
from vitlab.weights.keymap import load_into
from vitlab.weights.surgery import (
    POS_METHODS,
    audit_resolution,
    change_num_classes,
    resample_patch_kernel,
    resample_pos_embed,
    set_patch_size,
    set_resolution,
)


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = vitlab.create_model("vit_pico_patch4_32", depth=2, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("method", POS_METHODS)
def test_resample_same_grid_is_identity_and_prefix_kept(method: str) -> None:
    pos = torch.randn(1, 2 + 12, 8)
    assert torch.equal(resample_pos_embed(pos, (3, 4), (3, 4), 2, method), pos)
    out = resample_pos_embed(pos, (6, 5), (3, 4), 2, method, align_corners=False)
    assert out.shape == (1, 2 + 30, 8) and torch.equal(out[:, :2], pos[:, :2])


def test_nearest_doubling_repeats_entries() -> None:
    pos = torch.randn(1, 1 + 4, 3)
    out = resample_pos_embed(pos, (4, 4), (2, 2), 1, "nearest")
    grid = out[0, 1:].reshape(4, 4, 3)
    assert torch.equal(grid[0, 0], pos[0, 1]) and torch.equal(grid[1, 1], pos[0, 1]) and torch.equal(grid[3, 3], pos[0, 4])


def test_set_resolution_records_method_and_keeps_config(tmp_path: Path) -> None:
    model = _model()
    rec = set_resolution(model, (48, 40), "bilinear", align_corners=True)
    assert rec == {"op": "resample_pos_embed", "from_grid": [8, 8], "to_grid": [12, 10], "method": "bilinear",
                   "align_corners": True, "img_size": [48, 40]}
    assert model.config.img_size == (48, 40) and model.pos_embed.shape == (1, 1 + 120, 128)
    assert torch.isfinite(model(torch.randn(1, 3, 48, 40))).all()
    with pytest.raises(MappingError, match="not divisible"):
        set_resolution(model, 50)


def test_flexivit_kernel_resize_preserves_tokens_of_upsampled_patches() -> None:
    """<resize(x), w'> = <x, w> for every old-size patch x when the kernel grows (FlexiViT Eq. 4)."""
    torch.manual_seed(0)
    w = torch.randn(5, 3, 4, 4)
    x = torch.randn(7, 3, 4, 4)
    for method in ("bicubic-aa", "bilinear"):
        w2 = resample_patch_kernel(w, 8, method)
        mode = "bicubic" if method.startswith("bicubic") else "bilinear"
        x2 = F.interpolate(x.double(), size=(8, 8), mode=mode, antialias=method == "bicubic-aa", align_corners=False)
        tok = torch.einsum("ncij,dcij->nd", x.double(), w.double())
        tok2 = torch.einsum("ncij,dcij->nd", x2, w2.double())
        assert torch.allclose(tok, tok2, atol=1e-4), (method, (tok - tok2).abs().max())
    assert torch.equal(resample_patch_kernel(w, 4), w)


def test_set_patch_size_on_model() -> None:
    model = _model()
    rec = set_patch_size(model, 8)
    assert rec["from_patch"] == 4 and model.config.patch_size == 8 and model.grid_size == (4, 4)
    assert model.pos_embed.shape == (1, 17, 128) and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_change_num_classes_logs_dropped_keys(caplog: pytest.LogCaptureFixture) -> None:
    model = _model()
    with caplog.at_level(logging.WARNING, logger="vitlab.weights"):
        rec = change_num_classes(model, 3)
    assert rec["dropped"] == {"head.weight": [10, 128], "head.bias": [10]}
    assert "head.weight (10, 128)" in caplog.text and model.head.out_features == 3 and model.config.num_classes == 3


def test_failed_load_leaves_model_unchanged() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    other = _model(num_classes=3, mlp_dim=64)
    state = other.state_dict()
    state["extra.weight"] = torch.zeros(2, 2)
    with pytest.raises(MappingError) as info:
        load_into(model, state, "other.safetensors")
    msg = str(info.value)
    assert "unexpected 1: extra.weight (2, 2)" in msg and "head.weight: file (3, 128) vs model (10, 128)" in msg
    assert "\n" not in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    del state["extra.weight"], state["blocks.1.norm2.bias"]
    with pytest.raises(MappingError, match=r"missing 1: blocks\.1\.norm2\.bias \(128,\)"):
        load_into(model, state, "other")


def test_audit_same_size_is_zero_and_rows_per_method() -> None:
    model = _model()
    rows = audit_resolution(model, 32)
    assert [r["method"] for r in rows] == list(POS_METHODS)
    assert all(r["max_abs"] < 1e-5 and r["top1_agree"] == 1.0 for r in rows)
    rows = audit_resolution(model, 48, ("bicubic-aa", "nearest"))
    assert len(rows) == 2 and all(r["max_abs"] > 0 for r in rows)


def test_cli_convert_with_surgery_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vitlab.api import load_checkpoint
    from vitlab.weights.vitlab_format import save_weights

    model = _model()
    save_weights(tmp_path / "m.safetensors", model, [str(i) for i in range(10)])
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "tv.pth"), "--to", "torchvision", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify: max abs logit difference" in out
    diff = float(out.split("difference ")[1].split(",")[0])
    assert diff <= 1e-5
    assert main(["convert", str(tmp_path / "tv.pth"), str(tmp_path / "back.safetensors"), "--from", "torchvision",
                 "--num-heads", "4", "--img-size", "48", "--num-classes", "3", "--resample", "nearest"]) == 0
    out = capsys.readouterr().out
    assert '"method": "nearest"' in out and '"op": "reset_classifier"' in out
    ck = load_checkpoint(tmp_path / "back.safetensors")
    assert ck.model.config.img_size == (48, 48) and ck.model.num_classes == 3
    assert [r["op"] for r in ck.info["surgery"]] == ["resample_pos_embed", "reset_classifier"]
    assert main(["resample-audit", str(tmp_path / "m.safetensors"), "--img-size", "40", "--methods", "bicubic,nearest"]) == 0
    assert "nearest" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "x"), "--img-size", "3x"]) == 2
