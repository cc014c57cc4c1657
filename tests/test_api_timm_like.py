"""The API a timm / Hugging Face user expects (issue 16, section 3).

``create_model(name, pretrained=True | False)``, ``"name.tag"``, ``model.pretrained_cfg``; hub ids
through ``huggingface_hub`` (a pre-populated cache in its own layout, ``HF_HUB_OFFLINE=1``: no
network); timm hub and transformers folders; ``save_pretrained`` / ``from_pretrained``. Every
model loaded is compared by logits with the peer library's model built from the files' own
description (timm from config.json's architecture and model_args, transformers with its own
``from_pretrained``), never with vitlab's output.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.cli.main import main
from vitlab.errors import ConfigError, DownloadError
from vitlab.weights import hub, specs
from vitlab.weights.errors import HashMismatchError
from vitlab.weights.io import write_safetensors, write_torch
from vitlab.weights.specs import WeightSpec

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
TOL = 1e-5


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _timm_pico(seed: int) -> torch.nn.Module:
    """timm's ViT with the shapes of vitlab's vit_pico_patch4_32 at depth 1 (timm's own kwargs)."""
    timm = pytest.importorskip("timm")
    return _perturb(timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=128, depth=1, num_heads=4, mlp_ratio=2.0, num_classes=10), seed)


def _spec(tag: str, path: Path, **kw) -> WeightSpec:
    return WeightSpec("vit_pico_patch4_32", tag, "timm", path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest(),
                      img_size=32, num_classes=10, label_set="cifar-10", license="cc-by-4.0", **kw)


def test_pretrained_true_false_and_name_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    first, second = _timm_pico(1), _timm_pico(2)
    write_torch(tmp_path / "a.pth", first.state_dict())
    write_torch(tmp_path / "b.pth", second.state_dict())
    monkeypatch.setattr(specs, "SPECS", (_spec("first", tmp_path / "a.pth", crop_pct=0.9),
                                         _spec("second", tmp_path / "b.pth", crop_pct=0.95, interpolation="bilinear")))
    monkeypatch.setattr(hub, "DEFAULT_CACHE", tmp_path / "cache")
    with torch.no_grad():
        default = vitlab.create_model("vit_pico_patch4_32", pretrained=True, depth=1).eval()
        assert (default(X) - first(X)).abs().max().item() < TOL  # the first listed tag is the default
        assert (default(X) - second(X)).abs().max().item() > 1e-2  # and it is not the other one
        named = vitlab.create_model("vit_pico_patch4_32.second", depth=1).eval()
        assert (named(X) - second(X)).abs().max().item() < TOL
    cfg = default.pretrained_cfg
    assert (cfg["tag"], cfg["source"], cfg["license"], cfg["label_set"]) == ("first", "timm", "cc-by-4.0", "cifar-10")
    assert cfg["url"] == (tmp_path / "a.pth").as_uri() and cfg["input_size"] == (3, 32, 32)
    assert (cfg["crop_pct"], cfg["crop_mode"], cfg["interpolation"], cfg["num_classes"]) == (0.9, "center", "bicubic", 10)
    assert named.pretrained_cfg["crop_pct"] == 0.95 and named.pretrained_cfg["interpolation"] == "bilinear"
    untrained = vitlab.create_model("vit_pico_patch4_32", pretrained=False, depth=1)
    assert untrained.pretrained_cfg["source"] == "untrained" and untrained.pretrained_cfg["tag"] is None
    assert vitlab.create_model("vit_pico_patch4_32", pretrained="first", depth=1).pretrained_cfg["tag"] == "first"
    with pytest.raises(ConfigError, match="names tag 'second' but pretrained='first'"):
        vitlab.create_model("vit_pico_patch4_32.second", pretrained="first")
    with pytest.raises(ConfigError, match="no pretrained weights are listed for vit_pico_patch4_28"):
        vitlab.create_model("vit_pico_patch4_28", pretrained=True)
    assert main(["pretrained", "vit_pico_patch4_32"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "first" in listing[1] and listing[1].endswith("(default)") and not listing[2].endswith("(default)")
    # the CLI loads the default tag for MODEL --out, NAME.TAG for a named one
    assert main(["pretrained", "vit_pico_patch4_32.second", "--out", str(tmp_path / "s.safetensors")]) == 4  # depth 6


# ------------------------------------------------------------------ huggingface_hub's cache layout
def _put_in_cache(cache: Path, repo: str, folder: Path, commit: str = "a" * 40) -> str:
    """``folder``'s files as huggingface_hub caches them: blobs named by their hub id (SHA-256 for
    weights, as LFS; git blob SHA-1 for JSON), snapshot links, refs/main."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        data = f.read_bytes()
        if f.suffix == ".json":
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id
        else:
            blob = hashlib.sha256(data).hexdigest()
        (root / "blobs").mkdir(exist_ok=True)
        (root / "blobs" / blob).write_bytes(data)
        os.symlink(os.path.relpath(root / "blobs" / blob, snap), snap / f.name)
    return commit


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # `vitlab pretrained --cache` reads $VITLAB_CACHE, and a given cache holds hub files too: unset
    # (the suite sets its own for measured choices), hub files go to the patched hub cache above
    monkeypatch.delenv("VITLAB_CACHE", raising=False)
    return cache


def _timm_hub_folder(folder: Path) -> torch.nn.Module:
    """A timm hub folder (config.json: architecture, model_args, pretrained_cfg) and the peer timm
    itself builds from that config.json."""
    timm = pytest.importorskip("timm")
    folder.mkdir(parents=True)
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 5,
              "model_args": {"img_size": 32, "depth": 1},
              "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                 "crop_pct": 0.9, "crop_mode": "center", "interpolation": "bicubic", "num_classes": 5}}
    src = _perturb(timm.create_model(config["architecture"], pretrained=False, num_classes=5, **config["model_args"]), 3)
    write_safetensors(folder / "model.safetensors", {k: v.contiguous() for k, v in src.state_dict().items()})
    (folder / "config.json").write_text(json.dumps(config))
    cfg = json.loads((folder / "config.json").read_text())
    peer = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"], **cfg["model_args"])
    from safetensors.torch import load_file

    peer.load_state_dict(load_file(folder / "model.safetensors"))
    return peer.eval()


def _hf_folder(folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=96, num_labels=3, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-7,
                                 id2label={0: "cat", 1: "dog", 2: "owl"}, label2id={"cat": 0, "dog": 1, "owl": 2})
    torch.manual_seed(4)
    _perturb(transformers.ViTForImageClassification(cfg), 4).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=2).save_pretrained(folder)


def test_hub_ids_load_from_the_huggingface_hub_cache_offline(tmp_path: Path, offline_hub: Path) -> None:
    transformers = pytest.importorskip("transformers")
    peer = _timm_hub_folder(tmp_path / "timm_repo")
    _put_in_cache(offline_hub, "timm/tiny_test", tmp_path / "timm_repo")
    _hf_folder(tmp_path / "hf_repo")
    commit = _put_in_cache(offline_hub, "org/tiny-vit", tmp_path / "hf_repo", commit="b" * 40)
    hf_peer = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf_repo").eval()
    with torch.no_grad():
        model = vitlab.create_model("hf-hub:timm/tiny_test")
        assert (model(X) - peer(X)).abs().max().item() < TOL
        assert model.pretrained_cfg["hf_hub_id"] == "timm/tiny_test" and model.pretrained_cfg["crop_pct"] == 0.9
        hf = vitlab.create_model(f"org/tiny-vit@{commit}")  # a bare repo id and a revision
        assert (hf(X) - hf_peer(pixel_values=X).logits).abs().max().item() < TOL
    assert (hf.config.norm_eps, hf.config.act) == (1e-7, "gelu_tanh")  # config.json's numerics kept
    assert hf.class_names == ["cat", "dog", "owl"] and hf.pretrained_cfg["crop_mode"] == "squash"
    # convert keeps it: a vitlab checkpoint of the HF weights prepares images as HF's processor does
    assert main(["convert", str(tmp_path / "hf_repo"), str(tmp_path / "hf.safetensors")]) == 0
    assert vitlab.load_checkpoint(tmp_path / "hf.safetensors").model.pretrained_cfg["crop_mode"] == "squash"
    assert hf.pretrained_cfg["interpolation"] == "bilinear"  # the processor's resample=2, not vitlab's default
    # the same folders load from disk too
    with torch.no_grad():
        local = vitlab.create_model("vit_tiny_patch16_224", weights=tmp_path / "timm_repo", img_size=32, depth=1,
                                    num_classes=5)
        assert (local(X) - peer(X)).abs().max().item() < TOL
        imported = vitlab.import_weights(tmp_path / "hf_repo").model
        assert (imported(X) - hf_peer(pixel_values=X).logits).abs().max().item() < TOL
    # a blob whose bytes no longer match its hub id is refused and removed
    blob = next((offline_hub / "models--timm--tiny_test" / "blobs").glob("?" * 64))
    blob.write_bytes(blob.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(HashMismatchError, match="hashes to"):
        vitlab.create_model("hf-hub:timm/tiny_test")
    assert not blob.exists()


def test_offline_hub_miss_is_one_line_exit_11(tmp_path: Path, offline_hub: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE=1"):
        vitlab.create_model("hf-hub:timm/not_cached")
    assert main(["pretrained", "hf-hub:timm/not_cached", "--out", str(tmp_path / "m.safetensors")]) == 11
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hf-hub:timm/not_cached/config.json" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_pretrained_saves_a_hub_model(tmp_path: Path, offline_hub: Path) -> None:
    peer = _timm_hub_folder(tmp_path / "repo")
    _put_in_cache(offline_hub, "timm/tiny_test", tmp_path / "repo")
    assert main(["pretrained", "hf-hub:timm/tiny_test", "--out", str(tmp_path / "m.safetensors")]) == 0
    ckpt = vitlab.load_checkpoint(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert (ckpt.model(X) - peer(X)).abs().max().item() < TOL
    assert ckpt.model.pretrained_cfg["crop_pct"] == 0.9 and ckpt.model.pretrained_cfg["hf_hub_id"] == "timm/tiny_test"


def test_save_pretrained_round_trip(tmp_path: Path) -> None:
    from vitlab.weights.errors import CheckpointError

    model = _perturb(vitlab.create_model("vit_pico_patch4_32", depth=1, num_classes=3), 5)
    model.class_names = ["a", "b", "c"]
    model.pretrained_cfg = {**model.pretrained_cfg, "crop_pct": 0.9, "source": "test", "license": "mit"}
    folder = vitlab.save_pretrained(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert config["vitlab"]["config"]["depth"] == 1 and config["pretrained_cfg"]["crop_pct"] == 0.9
    assert "architecture" not in config and "model_type" not in config  # never mistaken for timm / HF folders
    back = vitlab.from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(back(X), model(X))
    assert back.class_names == ["a", "b", "c"] and back.pretrained_cfg["license"] == "mit"
    assert back.pretrained_cfg["input_size"] == (3, 32, 32) and back.pretrained_cfg["label_names"] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="rebuilds as saved"):
        vitlab.from_pretrained(folder, num_classes=4)
    with torch.no_grad():  # the folder is also a weights source like any other
        again = vitlab.create_model("vit_pico_patch4_32", depth=1, num_classes=3, weights=folder).eval()
        assert torch.equal(again(X), model(X)) and again.class_names == ["a", "b", "c"]
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the weights
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        vitlab.from_pretrained(folder)


def test_top_level_api() -> None:
    for name in ("create_model", "from_pretrained", "save_pretrained", "import_weights", "export_weights",
                 "load_checkpoint", "list_models", "save_weights"):
        assert callable(getattr(vitlab, name)) and name in vitlab.__all__
    from vitlab.data import create_transform

    assert callable(create_transform)
