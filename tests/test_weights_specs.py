"""Pretrained weights as data: the spec table, hash-verified downloads (offline via file://), create_model hooks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.cli.main import main
from vitlab.registry import is_model
from vitlab.weights import hub, specs
from vitlab.weights.errors import HashMismatchError, MappingError
from vitlab.weights.io import write_torch
from vitlab.weights.specs import WeightSpec, get_spec, imagenet1k_classes


def test_imagenet_class_names_ship_with_the_package() -> None:
    names = imagenet1k_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"


@pytest.mark.parametrize("spec", specs.SPECS, ids=lambda s: s.name)
def test_every_spec_is_well_formed(spec: WeightSpec) -> None:
    assert is_model(spec.model)
    assert spec.fmt in ("timm", "hf", "torchvision", "npz", "mindspore")
    assert spec.url.startswith(("https://", "hf://"))
    assert len(spec.mean) == len(spec.std) == 3 and 0 < spec.crop_pct <= 1
    assert spec.sha256 is None or len(spec.sha256) == 64
    with torch.device("meta"):
        model = vitlab.create_model(spec.model, **hub.pretrained_overrides(spec.model, spec.tag))
    assert model.config.num_classes == spec.num_classes and model.config.img_size == (spec.img_size,) * 2


def test_unknown_tag_lists_known_ones() -> None:
    with pytest.raises(vitlab.errors.ConfigError, match="known tags: .*tv_in1k"):
        get_spec("vit_base_patch16_224", "nope")


def _source_file(tmp_path: Path, name: str = "w.pth", depth: int = 2) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    src = vitlab.create_model("vit_pico_patch4_32", depth=depth)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / name
    write_torch(path, src.state_dict())  # timm layout == vitlab names for a plain ViT
    return path, src.eval()


def test_download_verifies_hash_and_is_atomic(tmp_path: Path) -> None:
    path, _ = _source_file(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    got = hub.download(path.as_uri(), cache / "a.pth", digest)
    assert got.read_bytes() == path.read_bytes()
    assert hub.download("file:///nonexistent", cache / "a.pth", digest) == got  # cached: no fetch
    with pytest.raises(HashMismatchError, match="differs from the expected"):
        hub.download(path.as_uri(), cache / "b.pth", "0" * 64)
    assert sorted(p.name for p in cache.iterdir()) == ["a.pth"]  # nothing partial or unverified left
    named = tmp_path / "vit-deadbeef.pth"
    named.write_bytes(path.read_bytes())
    with pytest.raises(HashMismatchError, match="deadbeef"):
        hub.download(named.as_uri(), cache / "c.pth")
    (cache / "a.pth").write_bytes(b"tampered")
    with pytest.raises(HashMismatchError):
        hub.download(path.as_uri(), cache / "a.pth", digest)
    assert hub.resolve_url("hf://timm/vit_x.aug/model.safetensors") == \
        "https://huggingface.co/timm/vit_x.aug/resolve/main/model.safetensors"


def test_create_model_weights_file_offline(tmp_path: Path) -> None:
    path, src = _source_file(tmp_path)
    model = vitlab.create_model("vit_pico_patch4_32", depth=2, weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    resized = vitlab.create_model("vit_pico_patch4_32", depth=2, weights=str(path), img_size=48, num_classes=3)
    assert resized.pos_embed.shape == (1, 1 + 144, 128) and resized.num_classes == 3
    with pytest.raises(MappingError, match="depth: file 2 vs model 6"):
        vitlab.create_model("vit_pico_patch4_32", weights=str(path))


def test_create_model_pretrained_tag_downloads_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, src = _source_file(tmp_path)
    spec = WeightSpec("vit_pico_patch4_32", "test", "timm", path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest(),
                      img_size=32, num_classes=10, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2), label_set="cifar-10")
    monkeypatch.setattr(specs, "SPECS", (spec,))
    monkeypatch.setattr(hub, "DEFAULT_CACHE", tmp_path / "cache")
    model = vitlab.create_model("vit_pico_patch4_32", pretrained="test", depth=2).eval()
    assert (tmp_path / "cache" / "vit_pico_patch4_32.test.pth").is_file()
    assert model.config.mean == (0.4, 0.4, 0.4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    # the CLI builds the registry's model (6 blocks): the 2-block file is refused before any copy
    assert main(["pretrained", "vit_pico_patch4_32", "--pretrained", "test", "--out", str(tmp_path / "ck.safetensors"),
                 "--cache", str(tmp_path / "cache2")]) == 4
    assert not (tmp_path / "ck.safetensors").exists()


def test_cli_pretrained_list_and_offline_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vitlab.api import load_checkpoint

    assert main(["pretrained", "vit_base_patch16_224"]) == 0
    assert "vit_base_patch16_224.tv_in1k" in capsys.readouterr().out
    path, src = _source_file(tmp_path, depth=6)
    assert main(["pretrained", "vit_pico_patch4_32", "--weights", str(path), "--out", str(tmp_path / "ck.safetensors")]) == 0
    ck = load_checkpoint(tmp_path / "ck.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ck.model.eval()(x), src(x))
