"""The model registry: registration, lookup with suggestions, pattern listing, overrides."""

from __future__ import annotations

import pytest
import torch

import vitlab
from vitlab import registry
from vitlab.errors import ConfigError, UnknownModelError


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry, so models registered by a test do not leak into others."""
    vitlab.list_models()  # make sure the built-in models are in before copying
    copy = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", copy)
    return copy


def test_register_model_adds_and_rejects_duplicates(scratch_registry: dict) -> None:
    def my_test_model(**kw):
        return vitlab.create_model("vit_pico_patch7_28", **kw)

    assert registry.register_model(my_test_model) is my_test_model
    assert vitlab.is_model("my_test_model")
    assert "my_test_model" in vitlab.list_models("my_*")
    with pytest.raises(ValueError, match="my_test_model"):
        registry.register_model(my_test_model)

    def vit_tiny_patch16_224(**kw):  # same name as a built-in
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="vit_tiny_patch16_224"):
        registry.register_model(vit_tiny_patch16_224)


def test_duplicate_leaves_first_registration(scratch_registry: dict) -> None:
    original = scratch_registry["vit_pico_patch4_28"]

    def vit_pico_patch4_28(**kw):
        raise AssertionError("never built")

    with pytest.raises(ValueError):
        registry.register_model(vit_pico_patch4_28)
    assert scratch_registry["vit_pico_patch4_28"] is original


def test_unknown_model_suggests_close_name() -> None:
    with pytest.raises(UnknownModelError) as info:
        vitlab.create_model("vit_base_patch16_22")
    message = str(info.value)
    assert "vit_base_patch16_22'" in message
    assert "vit_base_patch16_224" in message
    # One error type serves the CLI (ConfigError, exit code 2) and dict-style callers (KeyError).
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    assert info.value.exit_code == 2


def test_unknown_model_without_close_name_points_to_listing() -> None:
    with pytest.raises(UnknownModelError, match="vitlab models"):
        vitlab.create_model("resnet50")


def test_list_models_pattern() -> None:
    everything = vitlab.list_models()
    assert everything == sorted(everything)
    assert len(everything) == len(set(everything))
    assert vitlab.list_models("*") == everything
    base = vitlab.list_models("vit_base_*")
    assert base == sorted(n for n in everything if n.startswith("vit_base_"))
    assert "vit_base_patch16_224" in base and "vit_tiny_patch16_224" not in base
    assert vitlab.list_models("vit_*_28") == [
        "vit_nano_convstem_patch4_28", "vit_nano_patch4_28",
        "vit_pico_convstem_patch4_28", "vit_pico_patch4_28", "vit_pico_patch7_28",
    ]
    assert vitlab.list_models("vit_*_patch16_384") == [
        "vit_base_patch16_384", "vit_large_patch16_384", "vit_small_patch16_384", "vit_tiny_patch16_384",
    ]
    assert vitlab.list_models("no_such_family_*") == []
    assert vitlab.is_model("vit_huge_patch14_224") and not vitlab.is_model("vit_huge")


def test_create_model_sets_name_and_config() -> None:
    model = vitlab.create_model("vit_pico_patch4_28")
    assert model.model_name == "vit_pico_patch4_28"
    assert model.config.patch_size == 4 and model.config.img_size == (28, 28)
    assert model.config.in_chans == 1 and model.config.num_classes == 10


def test_override_num_classes() -> None:
    model = vitlab.create_model("vit_pico_patch4_28", num_classes=3)
    assert model.config.num_classes == 3 and model.num_classes == 3
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_override_img_size_square_and_rectangular() -> None:
    model = vitlab.create_model("vit_pico_patch4_28", img_size=32)
    assert model.config.img_size == (32, 32)
    assert model.grid_size == (8, 8)
    assert model.pos_embed.shape == (1, 1 + 64, 128)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)

    model = vitlab.create_model("vit_pico_patch4_28", img_size=[28, 40])
    assert model.config.img_size == (28, 40)
    assert model.grid_size == (7, 10)


def test_override_on_meta_device_big_model() -> None:
    with torch.device("meta"):
        model = vitlab.create_model("vit_huge_patch14_224", num_classes=7, img_size=448)
    assert model.head.weight.shape == (7, 1280)
    assert model.grid_size == (32, 32)
    assert model.pos_embed.is_meta


def test_unknown_override_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="num_clases") as info:
        vitlab.create_model("vit_pico_patch4_28", num_clases=3)
    assert "num_classes" in str(info.value)  # the valid names are listed


def test_img_size_not_divisible_by_patch_names_both() -> None:
    with torch.device("meta"):
        with pytest.raises(ConfigError) as info:
            vitlab.create_model("vit_base_patch16_224", img_size=200)
    assert "200" in str(info.value) and "16" in str(info.value)
    with pytest.raises(ConfigError) as info:
        vitlab.create_model("vit_pico_patch7_28", img_size=(28, 30))
    assert "30" in str(info.value) and "7" in str(info.value)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(num_heads=5), ("embed_dim", "num_heads")),
        (dict(class_token=False), ("class_token",)),
        (dict(drop_path_rate=1.0), ("drop_path_rate",)),
        (dict(mean=(0.5, 0.5)), ("mean",)),
    ],
)
def test_invalid_override_combinations(overrides: dict, words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        vitlab.create_model("vit_pico_patch4_28", **overrides)
    for word in words:
        assert word in str(info.value)


def _vitlab_imports(module) -> set[str]:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return {n for n in names if n.startswith("vitlab")}


def test_registry_and_file_format_are_leaves() -> None:
    """Imports run one way: the registry and the vitlab file format import no family, weights or API."""
    from vitlab.weights import checksums, errors, vitlab_format

    above = ("vitlab.models", "vitlab.weights", "vitlab.api", "vitlab.engine")
    leaves = {"vitlab.weights.checksums", "vitlab.weights.errors"}  # the format's own leaves: hashing, error classes
    assert not [m for m in _vitlab_imports(registry) if m.startswith(above)]
    assert not [m for m in _vitlab_imports(vitlab_format) if m.startswith(above) and m not in leaves]
    for leaf in (checksums, errors):
        assert not [m for m in _vitlab_imports(leaf) if m.startswith(above) and m not in leaves]


def test_builtin_models_are_registered_in_a_fresh_process() -> None:
    """The public names see the built-ins in a fresh process; the leaf registry imported alone (the
    package __init__ is lazy now) refuses to answer rather than report no models (test_lazy_import.py)."""
    import subprocess
    import sys

    code = "import vitlab as v; assert v.is_model('vit_pico_patch4_28') and len(v.list_models()) > 10"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import vitlab.registry as r; r.is_model('vit_pico_patch4_28')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode != 0 and "no models are registered yet" in res.stderr


def test_registry_create_model_is_a_weightless_alias() -> None:
    model = registry.create_model("vit_pico_patch4_28", num_classes=3)
    assert model.num_classes == 3 and model.model_name == "vit_pico_patch4_28"
    with pytest.raises(ConfigError, match="vitlab.api.create_model"):
        registry.create_model("vit_pico_patch4_28", pretrained="augreg")
