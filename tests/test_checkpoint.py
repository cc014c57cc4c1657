"""Checkpoints: self-describing weights, atomic writes, safe training state, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vitlab
from vitlab.api import load_checkpoint
from vitlab.errors import CheckpointError
from vitlab.utils.atomic import atomic_write
from vitlab.weights.vitlab_format import (
    load_state,
    load_state_checked,
    read_metadata,
    read_tensors,
    save_state,
    save_weights,
)

CLASSES = ["zero", "one", "two"]


def _model(seed: int = 0, **overrides) -> torch.nn.Module:
    """A pico ViT whose every weight (head included) is random, so logits carry signal."""
    torch.manual_seed(seed)
    model = vitlab.create_model("vit_pico_patch4_28", num_classes=3, **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _logits(model: torch.nn.Module, size: tuple[int, int] = (28, 28)) -> torch.Tensor:
    x = torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------- weights
def test_round_trip_rebuilds_from_metadata(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "run" / "best.safetensors"  # the folder is created
    save_weights(path, model, CLASSES, info={"epoch": 3, "acc": 0.5})
    ck = load_checkpoint(path)
    assert ck.path == path
    assert ck.class_names == CLASSES
    assert ck.info == {"epoch": 3, "acc": 0.5}
    assert ck.model.config == model.config
    assert ck.model.model_name == "vit_pico_patch4_28"
    assert torch.equal(_logits(ck.model.eval()), _logits(model))
    assert _leftovers(path.parent) == []


def test_loaded_model_is_in_eval_mode(tmp_path: Path) -> None:
    """A checkpoint is loaded for inference: dropout off, so two forward passes agree exactly."""
    model = _model(drop_rate=0.5, attn_drop_rate=0.5, drop_path_rate=0.5).train()
    path = tmp_path / "dropout.safetensors"
    save_weights(path, model, CLASSES)
    loaded = load_checkpoint(path).model
    assert loaded.training is False
    assert all(not m.training for m in loaded.modules())
    torch.manual_seed(1)
    first = loaded(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    second = loaded(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(first, second)


def test_engine_checkpoint_still_exports_the_format(tmp_path: Path) -> None:
    """vitlab.engine.checkpoint is a compatibility module over the format's new homes."""
    from vitlab.engine import checkpoint as engine_checkpoint
    from vitlab.weights import vitlab_format

    for name in ("save_weights", "read_metadata", "read_tensors", "load_state_checked", "save_state", "load_state"):
        assert getattr(engine_checkpoint, name) is getattr(vitlab_format, name)
    assert engine_checkpoint.atomic_write is atomic_write
    path = tmp_path / "compat.safetensors"
    save_weights(path, _model(), CLASSES)
    assert engine_checkpoint.load_checkpoint(path).model.training is False


def test_round_trip_after_surgery(tmp_path: Path) -> None:
    """reset_classifier and set_input_size keep the stored config in step with the weights."""
    model = _model(global_pool="avg", class_token=False)
    model.reset_classifier(5)
    model.set_input_size((32, 36))
    with torch.no_grad():
        model.head.weight.normal_()
    save_weights(tmp_path / "m.safetensors", model, [str(i) for i in range(5)])
    ck = load_checkpoint(tmp_path / "m.safetensors")
    assert ck.model.config.num_classes == 5 and ck.model.config.img_size == (32, 36)
    assert ck.model.grid_size == (8, 9) and ck.model.global_pool == "avg"
    assert torch.equal(_logits(ck.model.eval(), (32, 36)), _logits(model, (32, 36)))


def test_metadata_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_weights(path, _model(), CLASSES)
    meta = read_metadata(path)
    assert meta["class_names"] == CLASSES and meta["info"] == {}
    assert meta["model"]["arch"] == "vit" and meta["model"]["config"]["num_classes"] == 3
    assert meta["model"]["config"]["mean"] == [0.1307]  # preprocessing travels with the weights
    json.dumps(meta)


def test_read_metadata_foreign_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not a vitlab checkpoint") as info:
        read_metadata(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1])
def test_truncated_file_raises_naming_path(tmp_path: Path, keep: float) -> None:
    good = tmp_path / "good.safetensors"
    save_weights(good, _model(), CLASSES)
    data = good.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(data[:n])
    for read in (read_metadata, load_checkpoint, read_tensors):
        with pytest.raises(CheckpointError) as info:
            read(torn)
        assert str(torn) in str(info.value)


def test_missing_file_raises_naming_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_unknown_arch_in_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    metadata = {"format": "vitlab", "format_version": "1", "model": json.dumps({"arch": "resnet", "config": {}})}
    save_file({"w": torch.zeros(1)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="resnet"):
        load_checkpoint(path)


@pytest.mark.parametrize("other", [dict(depth=2), dict(num_classes=4), dict(embed_dim=64, num_heads=4)])
def test_load_state_checked_rejects_other_model_and_keeps_weights(other: dict) -> None:
    model = _model(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    overrides = {"num_classes": 3, **other}
    foreign = vitlab.create_model("vit_pico_patch4_28", **overrides).state_dict()
    with pytest.raises(CheckpointError, match="other.safetensors: weights do not fit"):
        load_state_checked(model, foreign, "other.safetensors")
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_load_state_checked_names_missing_and_unexpected() -> None:
    model = _model()
    state = dict(model.state_dict())
    state.pop("blocks.5.mlp.fc2.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_state_checked(model, state, "x")
    assert "blocks.5.mlp.fc2.bias" in str(info.value) and "extra.weight" in str(info.value)


# ----------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    atomic_write(path, lambda f: f.write(b"first"))
    atomic_write(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_failing_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"old contents")

    def explode(f) -> None:
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, explode)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_failing_first_write_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- training state
def test_state_round_trip_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = {
        "epoch": 4,
        "step": 1234,
        "best": 0.875,
        "lrs": [0.1, 0.01],
        "name": "run-1",
        "flag": True,
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 3)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}],
        },
        "rng": {"torch": torch.get_rng_state(), "python": [1, 2, [3, 4]]},
    }
    path = tmp_path / "last.state.pt"
    save_state(path, state)
    assert _leftovers(tmp_path) == []
    for loaded in (load_state(path), torch.load(path, weights_only=True)):
        assert loaded.keys() == state.keys()
        assert (loaded["epoch"], loaded["step"], loaded["best"]) == (4, 1234, 0.875)
        assert loaded["lrs"] == [0.1, 0.01] and loaded["name"] == "run-1" and loaded["flag"] is True
        opt = loaded["optimizer"]
        assert torch.equal(opt["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
        assert opt["param_groups"] == state["optimizer"]["param_groups"]
        assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
        assert loaded["rng"]["python"] == [1, 2, [3, 4]]


_UNPICKLED: list[str] = []


def _record(tag: str) -> str:
    _UNPICKLED.append(tag)
    return tag


class Payload:
    """Something only a full unpickler would rebuild (and thereby run code)."""

    def __reduce__(self):
        return (_record, ("ran",))


def test_load_state_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.state.pt"
    torch.save({"epoch": 1, "payload": Payload()}, path)
    _UNPICKLED.clear()
    with pytest.raises(CheckpointError) as info:
        load_state(path)
    assert str(path) in str(info.value)
    assert _UNPICKLED == []


def test_load_state_missing_and_torn(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_state(tmp_path / "missing.state.pt")
    path = tmp_path / "torn.state.pt"
    save_state(path, {"w": torch.randn(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError) as info:
        load_state(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------- checksums
def test_a_flipped_bit_anywhere_is_a_checkpoint_error(tmp_path: Path) -> None:
    """The length prefix, the checksum entry's own bytes, and samples of the header and tensor bytes:
    each flip is caught, naming the file (every header position was checked once by hand)."""
    import random

    from vitlab.weights.checksums import verify_safetensors

    path = tmp_path / "m.safetensors"
    save_weights(path, _model(depth=1), CLASSES)
    data = path.read_bytes()
    assert verify_safetensors(path) is not None
    start = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(0)
    entry = data.index(b'"checksum":')  # a damaged key must not pass for an old file without checksum
    positions = [*range(8), *range(entry, entry + 80), *rng.sample(range(8, start), 150),
                 *rng.sample(range(start, len(data)), 64), len(data) - 1]
    bad = tmp_path / "bad.safetensors"
    for at in positions:
        flipped = bytearray(data)
        flipped[at] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError) as info:
            read_tensors(bad)
        assert str(bad) in str(info.value), at


def test_state_checksum_is_verified(tmp_path: Path) -> None:
    from vitlab.weights.checksums import digest_tag
    from vitlab.weights.vitlab_format import state_bytes

    blob = state_bytes({"w": torch.randn(100), "step": 3})
    path = tmp_path / "s.state.pt"
    save_state(path, blob)
    assert load_state(path, digest_tag(blob))["step"] == 3
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch") as info:
        load_state(path, digest_tag(blob))
    assert str(path) in str(info.value)
