"""The ViTs people use now, against their peers: DeiT-III (LayerScale), DINOv2 (with registers),
CLIP's image tower (norm_pre), SigLIP's (attention pooling), ViT with registers and GAP.

Each timm model is built by its own name at random init (tiny: 2 blocks, width 64), every weight
perturbed, saved as a bare state dict, converted into vitlab and compared on the same inputs
(max |logit diff| <= 1e-5; measured 0.0), exported back and loaded by timm under the same name.
A negative control per family changes the one new parameter and must fail the same check. HF's
Dinov2Model / Dinov2WithRegistersModel likewise; timm's forward_intermediates contract is
compared output for output.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from run_helpers import perturb

from vitlab.errors import ConfigError
from vitlab.weights import export_weights, import_weights
from vitlab.weights.io import write_torch

timm = pytest.importorskip("timm")

TOL = 1e-5
TINY = dict(depth=2, embed_dim=64, num_heads=2, num_classes=5)
# name -> (timm kwargs beyond TINY, flags the bare file needs, the parameter the negative control changes)
FAMILIES = {
    "deit3_small_patch16_224": (dict(img_size=32, patch_size=8), dict(global_pool="token"), "blocks.0.ls1.gamma"),
    "vit_small_patch14_dinov2": (dict(img_size=28), dict(global_pool="token"), "blocks.1.ls2.gamma"),
    "vit_small_patch14_reg4_dinov2": (dict(img_size=28), dict(global_pool="token"), "reg_token"),
    "vit_base_patch16_clip_224": (dict(img_size=32), dict(global_pool="token", norm_eps=1e-5), "norm_pre.weight"),
    "vit_base_patch16_siglip_224": (dict(img_size=32), {}, "attn_pool.latent"),
    "vit_base_patch16_reg4_gap_256": (dict(img_size=32), {}, "reg_token"),
}


def images(size: tuple[int, int], n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(1))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def timm_model(name: str, **extra) -> torch.nn.Module:
    kwargs, _, _ = FAMILIES[name]
    return perturb(timm.create_model(name, pretrained=False, **{**TINY, **kwargs, **extra}))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_timm_family_imports_and_exports_at_parity(name: str, tmp_path: Path) -> None:
    peer = timm_model(name)
    _, flags, control = FAMILIES[name]
    write_torch(tmp_path / "t.pth", peer.state_dict())
    imp = import_weights(tmp_path / "t.pth", "timm", num_heads=2, **flags)
    x = images(peer.patch_embed.img_size)
    with torch.no_grad():
        ref = peer(x)
        assert max_diff(imp.model(x), ref) <= TOL
        # negative control: the new parameter matters, so a converter that lost it would fail
        param = dict(imp.model.named_parameters())[control]
        noise = torch.randn(param.shape, generator=torch.Generator().manual_seed(2))  # not constant: LN would hide it
        param.add_(noise)
        assert max_diff(imp.model(x), ref) > 1e-3
        param.sub_(noise)
    export_weights(imp.model, tmp_path / "back.safetensors", "timm")
    back = timm.create_model(name, pretrained=False, **TINY, **FAMILIES[name][0]).eval()
    from safetensors import safe_open
    from safetensors.torch import load_file

    back.load_state_dict(load_file(tmp_path / "back.safetensors"), strict=True)
    with torch.no_grad():
        assert max_diff(back(x), ref) <= TOL
    with safe_open(str(tmp_path / "back.safetensors"), framework="pt") as f:
        meta = f.metadata()
    kwargs, numerics = json.loads(meta["timm_kwargs"]), json.loads(meta["numerics"])
    assert kwargs["act_layer"] == "gelu" and numerics["norm_eps"] == flags.get("norm_eps", 1e-6)
    # the file rebuilds in timm from its own metadata alone (no vitlab config involved)
    rebuilt = timm.models.vision_transformer.VisionTransformer(
        **{**kwargs, "img_size": tuple(kwargs["img_size"])},
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=numerics["norm_eps"])).eval()
    rebuilt.load_state_dict(load_file(tmp_path / "back.safetensors"), strict=True)
    with torch.no_grad():
        assert max_diff(rebuilt(x), ref) <= TOL


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_presets_have_timm_architecture_and_preprocessing(name: str) -> None:
    from vitlab.registry import build_model

    with torch.device("meta"):  # vitlab's presets all have a head, also where timm's default tag has none
        ours, theirs = build_model(name), timm.create_model(name, pretrained=False, num_classes=1000)
    cfg, pre = ours.config, theirs.pretrained_cfg
    assert (cfg.mean, cfg.std, cfg.crop_pct, cfg.interpolation) == (pre["mean"], pre["std"], pre["crop_pct"],
                                                                    pre["interpolation"])
    assert cfg.norm_eps == theirs.blocks[0].norm1.eps
    assert ours.num_prefix_tokens == theirs.num_prefix_tokens and ours.num_reg_tokens == theirs.num_reg_tokens
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    if theirs.no_embed_class:  # vitlab's table keeps zero prefix rows (never added)
        n, d = expected["pos_embed"][1:]
        expected["pos_embed"] = (1, n + theirs.num_prefix_tokens, d)
    assert shapes == expected


def test_bare_clip_file_states_no_eps_and_is_refused(tmp_path: Path) -> None:
    peer = timm_model("vit_base_patch16_clip_224")
    write_torch(tmp_path / "t.pth", peer.state_dict())
    with pytest.raises(ConfigError, match="norm_eps.*--norm-eps"):
        import_weights(tmp_path / "t.pth", "timm", num_heads=2, global_pool="token")


def test_ambiguous_table_length_names_the_flag(tmp_path: Path) -> None:
    """Class + 4 registers on a 2x2 grid: 9 entries are a 3x3 grid too, so the file cannot tell."""
    peer = perturb(timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=8, embed_dim=64, depth=1, num_heads=2, num_classes=3, reg_tokens=4))
    write_torch(tmp_path / "t.pth", peer.state_dict())
    known = dict(num_heads=2, global_pool="token")
    with pytest.raises(ConfigError, match="--no-embed-class"):
        import_weights(tmp_path / "t.pth", "timm", **known)
    imp = import_weights(tmp_path / "t.pth", "timm", no_embed_class=False, **known)
    x = images((16, 16))
    with torch.no_grad():
        assert max_diff(imp.model(x), peer(x)) <= TOL


def test_dinov2_loads_at_518_and_at_224_by_resampling(tmp_path: Path) -> None:
    """The 37x37 grid of DINOv2's 518 px table, and resampled to 16x16 (224 px) as timm does at forward
    (dynamic_img_size: bicubic, antialiased) and as HF's interpolate_pos_encoding does (bicubic, no AA)."""
    peer = perturb(timm.create_model("vit_small_patch14_dinov2", pretrained=False, depth=1, embed_dim=32,
                                     num_heads=2, dynamic_img_size=True))
    write_torch(tmp_path / "t.pth", peer.state_dict())
    known = dict(num_heads=2, global_pool="token")
    native = import_weights(tmp_path / "t.pth", "timm", **known)
    assert native.model.config.img_size == (518, 518) and native.model.grid_size == (37, 37)
    small = import_weights(tmp_path / "t.pth", "timm", img_size=224, **known)
    x518, x224 = images((518, 518), n=1), images((224, 224), n=2)
    with torch.no_grad():
        assert max_diff(native.model(x518), peer(x518)) <= TOL
        assert max_diff(small.model(x224), peer(x224)) <= TOL
        plain = import_weights(tmp_path / "t.pth", "timm", img_size=224, resample="bicubic", **known)
        assert max_diff(plain.model(x224), peer(x224)) > 1e-4  # control: the method matters


def _hf_dinov2(tmp_path: Path, registers: int) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    kw = dict(image_size=28, patch_size=14, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
              layerscale_value=0.5, layer_norm_eps=1e-6)
    if registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    model = perturb(model)
    model.save_pretrained(tmp_path / "hf")
    return model


@pytest.mark.parametrize("registers", [0, 4])
def test_hf_dinov2_backbones_at_parity(registers: int, tmp_path: Path) -> None:
    peer = _hf_dinov2(tmp_path, registers)
    imp = import_weights(tmp_path / "hf")  # detected by config.json's model_type
    assert imp.info["source_format"] == "hf_dinov2" and imp.model.num_reg_tokens == registers
    x = images((28, 28))
    with torch.no_grad():
        out = peer(pixel_values=x)
        assert max_diff(imp.model(x), out.pooler_output) <= TOL
        assert max_diff(imp.model.forward_features(x), out.last_hidden_state) <= TOL
        imp.model.blocks[0].ls1.gamma.mul_(2.0)  # control: LayerScale is read, not dropped
        assert max_diff(imp.model(x), out.pooler_output) > 1e-3


def test_hf_dinov2_classifier_is_refused_by_name(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, num_labels=3)
    transformers.Dinov2ForImageClassification(cfg).save_pretrained(tmp_path / "hf")
    from vitlab.weights.errors import MappingError

    with pytest.raises(MappingError, match="Dinov2ForImageClassification"):
        import_weights(tmp_path / "hf")


TIMM_CALLS = [
    dict(indices=2, intermediates_only=True),
    dict(indices=[0, -1], norm=True),
    dict(indices=None, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True),
    dict(indices=1, output_dict=True, return_prefix_tokens=True),
    dict(indices=[0], stop_early=True),
]


@pytest.mark.parametrize("call", TIMM_CALLS, ids=lambda c: "-".join(c))
def test_forward_intermediates_follows_timm_contract(call: dict, tmp_path: Path) -> None:
    peer = timm_model("vit_small_patch14_reg4_dinov2", depth=3)
    write_torch(tmp_path / "t.pth", peer.state_dict())
    model = import_weights(tmp_path / "t.pth", "timm", num_heads=2, global_pool="token").model
    x = images((28, 28), n=2)
    with torch.no_grad():
        ours, theirs = model.forward_intermediates(x, **call), peer.forward_intermediates(x, **call)
    assert type(ours) is type(theirs)
    a, b = torch.utils._pytree.tree_flatten(ours), torch.utils._pytree.tree_flatten(theirs)
    assert a[1] == b[1] and all(torch.equal(p, q) for p, q in zip(a[0], b[0]))
    assert set(model.forward_intermediates(x)) >= {"blocks", "features", "num_prefix_tokens"}  # vitlab's dict stays


def test_new_fields_round_trip_and_fine_tune(digit_folder: Path, tmp_path: Path) -> None:
    from vitlab.api import load_checkpoint
    from vitlab.cli.main import main
    from vitlab.models.vit_config import ViTConfig

    out = tmp_path / "run"
    assert main(["train", "--data", str(digit_folder), "--model", "vit_small_patch14_reg4_dinov2", "--set",
                 "model_args.depth=1", "--set", "model_args.embed_dim=32", "--set", "model_args.num_heads=2",
                 "--set", "model_args.mlp_dim=64", "--set", "model_args.patch_size=7", "--img-size", "28",
                 "--num-classes", "3", "-b", "8", "--epochs", "1", "--no-progress", "--device", "cpu",
                 "--out", str(out), "--test", "none"]) == 0
    ckpt = load_checkpoint(out / "checkpoints" / "last.safetensors")
    cfg = ckpt.model.config
    assert (cfg.reg_tokens, cfg.no_embed_class, cfg.init_values) == (4, True, 1e-5)
    assert ViTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert torch.equal(ckpt.model.pos_embed[:, : ckpt.model.num_prefix_tokens], torch.zeros(1, 5, 32))


def test_new_fields_are_checked_and_yaml_numbers_read() -> None:
    """PyYAML reads ``1e-5`` (no dot) as text: such a float field becomes the number; bad values are
    one ConfigError naming the field."""
    from vitlab.models.vit_config import ViTConfig

    cfg = ViTConfig().replace(init_values="1e-5", norm_eps="1e-5", reg_tokens=2)
    cfg.validate()
    assert (cfg.init_values, cfg.norm_eps) == (1e-5, 1e-5)
    for bad, field in ((dict(init_values="abc"), "init_values"), (dict(reg_tokens=-1), "reg_tokens"),
                       (dict(reg_tokens=2, dist_token=True), "reg_tokens"), (dict(global_pool="max"), "global_pool"),
                       (dict(pre_norm=True, stem="conv", stem_args=dict(channels=(8, 8, 8, 8))), "pre_norm")):
        with pytest.raises(ConfigError, match=field):
            ViTConfig().replace(**bad).validate()
