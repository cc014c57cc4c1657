"""The name -> layer tables (stems, attention variants) and the migration of flat legacy configs."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import vitlab
from vitlab.errors import ConfigError
from vitlab.layers import ATTENTIONS, STEMS
from vitlab.models.vit import build_vit
from vitlab.models.vit_config import ViTConfig

_COMMON = {"num_classes": 5, "qkv_bias": True, "norm_eps": 1e-06, "act": "gelu", "class_token": True,
           "dist_token": False, "global_pool": "token", "fc_norm": False, "pos_embed": "learn", "drop_rate": 0.0,
           "attn_drop_rate": 0.0, "drop_path_rate": 0.0, "head_drop_rate": 0.0, "representation_size": None,
           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 0.9, "interpolation": "bicubic"}
# ``model.config.to_dict()`` as written by vitlab before the tables (commit 8eb86f5), with the state-dict
# key/shape digest and the first pre-logits of that build (seed 0 for the weights, seed 1 for the input).
OLD = {
    "deepvit_s": (
        "deepvit_s_patch16_224", dict(depth=3, img_size=32, num_classes=5),
        {**_COMMON, "img_size": [32, 32], "patch_size": 16, "in_chans": 3, "embed_dim": 396, "depth": 3,
         "num_heads": 12, "mlp_dim": 1188, "stem": "cnn", "stem_channels": [], "stem_layers": [], "stem_width": 64,
         "attn_type": "reattention", "reattn_mode": "official", "reattn_blocks": 5, "reattn_init": "random",
         "reattn_scale": True, "scale_adjustment": 0.5},
        "d93047fc39cb458260270be3e1661922cd02ac2901d10a25a475a756405ab455",
        [0.874012, -0.239076, -0.897285, -0.399315, 0.279398, 2.421245]),
    "hybrid_r26": (
        "vit_small_r26_s32_224", dict(depth=2, img_size=64, num_classes=5, stem_layers=(1, 1, 1, 1), stem_width=32),
        {**_COMMON, "img_size": [64, 64], "patch_size": 32, "in_chans": 3, "embed_dim": 384, "depth": 2,
         "num_heads": 6, "mlp_dim": 1536, "stem": "resnetv2", "stem_channels": [], "stem_layers": [1, 1, 1, 1],
         "stem_width": 32, "attn_type": "mhsa", "reattn_mode": "official", "reattn_blocks": None,
         "reattn_init": "identity", "reattn_scale": False, "scale_adjustment": 1.0},
        "ef5dbcacb8413d2a29ff2fd4be4452a0fd4e5a7155c7374858601b9302dd81e0",
        [1.853061, 0.137567, 0.428322, 0.387004, -0.360751, -0.698603]),
    "convstem": (
        "vit_pico_convstem_patch4_28", dict(depth=2),
        {**_COMMON, "img_size": [28, 28], "patch_size": 4, "in_chans": 1, "num_classes": 10, "embed_dim": 128,
         "depth": 2, "num_heads": 4, "mlp_dim": 256, "stem": "conv", "stem_channels": [32, 64], "stem_layers": [],
         "stem_width": 64, "attn_type": "mhsa", "reattn_mode": "official", "reattn_blocks": None,
         "reattn_init": "identity", "reattn_scale": False, "scale_adjustment": 1.0, "mean": [0.1307],
         "std": [0.3081], "crop_pct": 1.0, "interpolation": "bilinear"},
        "e55e3f7906f36f94ff410ad977c674dbfef08ea7bc7a79ae135bcfe04a898145",
        [-0.085834, 0.204026, -1.652339, -1.484138, 0.858512, 0.342235]),
}


def _digest(model: torch.nn.Module) -> str:
    keys = [[n, list(v.shape)] for n, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()


def _pre_logits(model: torch.nn.Module) -> torch.Tensor:
    cfg = model.config
    x = torch.randn(2, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval().forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("case", sorted(OLD))
def test_old_flat_config_builds_the_identical_model(case: str) -> None:
    name, overrides, old, digest, golden = OLD[case]
    torch.manual_seed(0)
    migrated = build_vit(ViTConfig.from_dict(json.loads(json.dumps(old))))
    torch.manual_seed(0)
    preset = vitlab.create_model(name, **overrides)
    assert migrated.config == preset.config
    assert _digest(migrated) == _digest(preset) == digest  # same keys and shapes as before the tables
    out = _pre_logits(migrated)
    torch.testing.assert_close(out, _pre_logits(preset), rtol=0, atol=0)
    torch.testing.assert_close(out.flatten()[:6], torch.tensor(golden), rtol=0, atol=1e-4)  # same numerics too


def test_old_config_migrates_into_name_and_args() -> None:
    cfg = ViTConfig.from_dict(OLD["deepvit_s"][2])
    assert (cfg.stem, cfg.stem_args) == ("cnn", {"width": 64})
    assert cfg.attn == "reattention"
    assert cfg.attn_args == {"mode": "official", "blocks": 5, "init": "random", "scale": True}
    assert "stem_width" not in cfg.to_dict() and "attn_type" not in cfg.to_dict()
    assert ViTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_old_config_with_stale_flat_fields_loads() -> None:
    """A self-attention model made from a DeepViT preset kept re-attention fields that had no effect."""
    old = dict(OLD["deepvit_s"][2], attn_type="mhsa")
    cfg = ViTConfig.from_dict(old)
    assert cfg.attn == "mhsa" and cfg.attn_args == {}


def test_legacy_names_in_replace_and_as_attributes() -> None:
    cfg = ViTConfig(patch_size=4).replace(stem="conv", stem_channels=[8, 16], attn_type="reattention",
                                          reattn_blocks=2, reattn_mode="vit-pytorch")
    assert cfg.stem_args == {"channels": (8, 16), "extra": 0}
    assert cfg.attn_args == {"mode": "vit-pytorch", "blocks": 2, "init": "identity", "scale": False}
    assert cfg.stem_channels == (8, 16) and cfg.attn_type == "reattention" and cfg.reattn_blocks == 2
    assert cfg.stem_layers == () and cfg.stem_width == 64  # not arguments of this stem: the old "unset"
    assert cfg.replace(reattn_init="random").attn_args["init"] == "random"
    assert cfg.replace(attn="mhsa").attn_args == {}  # another variant starts from its own defaults
    with pytest.raises(ConfigError, match="stem_width does not apply to stem 'conv'; its arguments: channels"):
        cfg.replace(stem_width=32)


def test_unknown_names_and_args_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="stem must be one of 'patch', 'conv', 'cnn', 'resnetv2', 'spt', got 'vgg'"):
        ViTConfig(stem="vgg")
    with pytest.raises(ConfigError, match="attn must be one of 'mhsa', 'reattention'"):
        ViTConfig().replace(attn="linear")
    with pytest.raises(ConfigError, match="unknown argument.*depth in model_args.stem_args; valid: layers, width"):
        ViTConfig(stem="resnetv2", stem_args={"depth": 3})
    with pytest.raises(ConfigError, match="attn 'mhsa': unknown argument.*blocks in model_args.attn_args; valid: \\(none\\)"):
        ViTConfig(attn_args={"blocks": 2})
    with pytest.raises(ConfigError, match="attn_args.mode must be one of 'official', 'vit-pytorch', got 'conv'"):
        ViTConfig(attn="reattention", attn_args={"mode": "conv"})
    with pytest.raises(ConfigError, match="stem_args.width must be an integer"):
        ViTConfig(stem="cnn", stem_args={"width": "64"})


def test_validation_names_the_argument() -> None:
    with pytest.raises(ConfigError, match=r"stem_args.channels \(stem_channels\) \(32,\) downsample by 2"):
        ViTConfig(patch_size=4, stem="conv", stem_args={"channels": [32]}).validate()
    with pytest.raises(ConfigError, match=r"attn_args.blocks \(reattn_blocks\) must be >= 0"):
        ViTConfig(attn="reattention", attn_args={"blocks": -1}).validate()
    with pytest.raises(ConfigError, match="even patch_size"):
        ViTConfig(patch_size=7, img_size=(28, 28), stem="cnn").validate()


def test_tables_list_every_variant_with_typed_args() -> None:
    assert STEMS.names() == ("patch", "conv", "cnn", "resnetv2", "spt")
    assert ATTENTIONS.names() == ("mhsa", "reattention", "lsa")
    assert STEMS.canonical("resnetv2", {"layers": [3, 4, 9]}) == {"layers": (3, 4, 9), "width": 64}
    assert ATTENTIONS.parse("reattention", {"blocks": None}).layers(3)[0] is not None


def test_config_is_hashable_and_compares_by_value() -> None:
    a = ViTConfig(stem="conv", patch_size=4, stem_args={"channels": [8, 8]})
    b = ViTConfig(stem="conv", patch_size=4, stem_args={"channels": (8, 8)})
    assert a == b and hash(a) == hash(b)


def test_args_overrides_update_the_current_variant() -> None:
    """A recipe's ``attn_args: {blocks: 2}`` on a DeepViT preset keeps the preset's other arguments."""
    with torch.device("meta"):
        model = vitlab.create_model("deepvit_s_patch16_224", attn_args={"blocks": 2})
    assert model.config.attn_args == {"mode": "official", "blocks": 2, "init": "random", "scale": True}
    assert model.config.replace(attn="mhsa", attn_args={}).attn_args == {}


def test_a_new_stem_is_one_dataclass_and_one_table_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam: a layer's arguments dataclass (check + layer) in the table is all build_vit needs."""
    from dataclasses import dataclass
    from functools import partial

    from vitlab.layers.patch_embed import PatchEmbed

    class BiasFreePatchEmbed(PatchEmbed):
        def __init__(self, img_size, patch_size, in_chans, embed_dim, scale: float = 1.0) -> None:
            super().__init__(img_size, patch_size, in_chans, embed_dim)
            self.proj.bias = None
            self.scale = scale

    @dataclass(frozen=True)
    class ToyArgs:
        scale: float = 1.0

        def check(self, patch_size: int) -> None:
            pass

        def layer(self):
            return partial(BiasFreePatchEmbed, scale=self.scale)

    monkeypatch.setitem(STEMS.entries, "toy", ToyArgs)
    model = vitlab.create_model("vit_pico_patch4_28", depth=1, stem="toy", stem_args={"scale": 2})
    assert isinstance(model.patch_embed, BiasFreePatchEmbed) and model.patch_embed.scale == 2.0
    assert ViTConfig.from_dict(model.config.to_dict()).stem_args == {"scale": 2.0}
