"""`vitlab convert --verify` can fail: the source's peer comes from what the source states, and a
field a file cannot state (heads, pooling) is never guessed silently (issue 16, section 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitlab.cli.main import main
from vitlab.weights import import_weights
from vitlab.weights.io import write_safetensors
from vitlab.weights.vitlab_format import read_tensors

timm = pytest.importorskip("timm")

WIDE8 = dict(img_size=32, patch_size=16, embed_dim=256, depth=2, num_heads=8, num_classes=10)  # vitlab used to guess 4
AVG_NO_FCNORM = dict(img_size=32, patch_size=16, embed_dim=96, depth=2, num_heads=3, num_classes=10, global_pool="avg",
                     fc_norm=False)  # a class token, pooled by average: the state dict looks token-pooled


def _timm(kwargs: dict) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(**kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def _x() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _verified_diff(out: str) -> float:
    """The figure `convert --verify` printed."""
    line = next(l for l in out.splitlines() if l.startswith("verify: max abs logit difference"))
    return float(line.split("difference ")[1].split(",")[0])


def _converted_logits(path: Path) -> torch.Tensor:
    from vitlab.api import load_checkpoint

    with torch.no_grad():
        return load_checkpoint(path).model(_x())


@pytest.mark.parametrize("case,flag", [(WIDE8, "--num-heads"), (AVG_NO_FCNORM, "--global-pool")], ids=["heads", "pool"])
def test_bare_file_refuses_to_guess_naming_the_flag(case: dict, flag: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    write_safetensors(tmp_path / "w.safetensors", _timm(case).state_dict())
    code = main(["convert", str(tmp_path / "w.safetensors"), str(tmp_path / "o.safetensors"), "--from", "timm", "--verify"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and flag in err and "match no published ViT" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_the_old_guesses_were_wrong(tmp_path: Path) -> None:
    """The negative control: the values vitlab used to assume change the logits (so --verify had to see it)."""
    for case, wrong in ((WIDE8, dict(num_heads=4, global_pool="token")),
                        (AVG_NO_FCNORM, dict(num_heads=3, global_pool="token"))):
        peer = _timm(case)
        write_safetensors(tmp_path / "w.safetensors", peer.state_dict())
        guessed = import_weights(tmp_path / "w.safetensors", "timm", **wrong).model
        with torch.no_grad():
            assert (guessed(_x()) - peer(_x())).abs().max().item() > 0.1


@pytest.mark.parametrize("case,flags", [(WIDE8, ["--num-heads", "8", "--global-pool", "token"]),
                                        (AVG_NO_FCNORM, ["--num-heads", "3", "--global-pool", "avg"])],
                         ids=["heads", "pool"])
def test_stated_by_flags_converts_exactly(case: dict, flags: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    peer = _timm(case)
    write_safetensors(tmp_path / "w.safetensors", peer.state_dict())
    assert main(["convert", str(tmp_path / "w.safetensors"), str(tmp_path / "o.safetensors"), "--from", "timm",
                 *flags, "--verify"]) == 0
    assert _verified_diff(capsys.readouterr().out) < 1e-5
    with torch.no_grad():
        assert (_converted_logits(tmp_path / "o.safetensors") - peer(_x())).abs().max().item() < 1e-5


def test_timm_hub_folder_states_its_architecture(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """config.json (architecture + model_args) is the source's own word: no flag needed, and the
    peer is timm.create_model from it, not vitlab's reading."""
    peer = _timm(AVG_NO_FCNORM)
    hub = tmp_path / "hub"
    hub.mkdir()
    write_safetensors(hub / "model.safetensors", peer.state_dict())
    args = {k: v for k, v in AVG_NO_FCNORM.items() if k != "num_classes"}
    (hub / "config.json").write_text(json.dumps({"architecture": "vit_small_patch16_224", "num_classes": 10,
                                                 "model_args": args}))
    assert main(["convert", str(hub), str(tmp_path / "o.safetensors"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "(timm)" in out and _verified_diff(out) < 1e-5 and "note:" not in out
    with torch.no_grad():
        assert (_converted_logits(tmp_path / "o.safetensors") - peer(_x())).abs().max().item() < 1e-5


def test_published_shapes_are_taken_and_said(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    peer = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5).eval()
    write_safetensors(tmp_path / "ti.safetensors", peer.state_dict())
    assert main(["convert", str(tmp_path / "ti.safetensors"), str(tmp_path / "o.safetensors"), "--from", "timm"]) == 0
    out = capsys.readouterr().out
    assert "took num_heads=3, global_pool='token' from the published vit_tiny_patch16_224" in out
    assert read_tensors(tmp_path / "o.safetensors")["blocks.0.attn.qkv.weight"].shape == (576, 192)


def test_timm_export_describes_itself(tmp_path: Path) -> None:
    """vitlab's timm export records heads, pooling and numerics, so re-reading it needs no flag."""
    peer = _timm(AVG_NO_FCNORM)
    write_safetensors(tmp_path / "w.safetensors", peer.state_dict())
    imp = import_weights(tmp_path / "w.safetensors", "timm", num_heads=3, global_pool="avg", norm_eps=1e-5)
    from vitlab.weights import export_weights

    export_weights(imp.model, tmp_path / "t.safetensors", "timm")
    again = import_weights(tmp_path / "t.safetensors", "timm")
    assert (again.model.config.num_heads, again.model.config.global_pool, again.model.config.norm_eps) == (3, "avg", 1e-5)
    assert "assumed" not in again.info
