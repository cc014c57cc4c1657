"""Parity with the real peers: timm, transformers, torchvision, both directions.

Each peer model is built at random init (every weight perturbed so logits carry signal), saved in
its own file layout, converted into vitlab and compared on the same inputs: largest absolute
logit difference <= 1e-5 in fp32 and identical top-1; then exported back, loaded by the peer and
compared again. A deliberately wrong mapping (q and k swapped) must fail the same check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import perturb
from safetensors.torch import load_file

from vitlab.weights import export_weights, import_weights
from vitlab.weights.io import write_safetensors, write_torch

TOL = 1e-5


def images(size: tuple[int, int], n: int = 4, chans: int = 3) -> torch.Tensor:
    return torch.randn(n, chans, *size, generator=torch.Generator().manual_seed(1))


def assert_parity(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    diff = (ours - theirs).abs().max().item()
    assert diff <= TOL, f"max abs logit difference {diff:.3e} > {TOL}"
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1)), "top-1 differs"
    return diff


def swap_qk(model: torch.nn.Module) -> None:
    """The sabotage: a converter that swapped the q and k rows of every fused qkv projection."""
    with torch.no_grad():
        for blk in model.blocks:
            for p in (blk.attn.qkv.weight, blk.attn.qkv.bias):
                q, k, v = p.data.clone().chunk(3, 0)
                p.copy_(torch.cat([k, q, v], 0))


# --------------------------------------------------------------------------------------- timm
TIMM_CASES = {
    "square32_p8": dict(img_size=(32, 32), patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10),
    "nonsquare48x32_p8": dict(img_size=(48, 32), patch_size=8, embed_dim=96, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=7),
    "avgpool_fcnorm_nocls": dict(img_size=(40, 40), patch_size=8, embed_dim=64, depth=2, num_heads=4, class_token=False,
                                 global_pool="avg", fc_norm=True, num_classes=5),
}


def _timm_peer(case: str) -> torch.nn.Module:
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return perturb(VisionTransformer(**TIMM_CASES[case]))


@pytest.mark.parametrize("case", sorted(TIMM_CASES))
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_round_trip(case: str, suffix: str, tmp_path: Path) -> None:
    from vitlab.weights.convert_timm import build_timm

    peer = _timm_peer(case)
    kw = TIMM_CASES[case]
    src = tmp_path / f"timm{suffix}"
    (write_safetensors if suffix == ".safetensors" else write_torch)(src, peer.state_dict())
    # a bare timm state dict states neither heads nor pooling: the test says them, as a user must
    imp = import_weights(src, "timm", img_size=kw["img_size"], num_heads=kw["num_heads"],
                         global_pool=kw.get("global_pool", "token"))
    x = images(kw["img_size"])
    with torch.no_grad():
        ref = peer(x)
        assert_parity(imp.model(x), ref)
    export_weights(imp.model, tmp_path / "back.safetensors", "timm")
    back = build_timm(imp.model.config).eval()
    back.load_state_dict(load_file(tmp_path / "back.safetensors"), strict=True)
    with torch.no_grad():
        assert_parity(back(x), ref)


def test_timm_deit_distilled_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from timm.models.deit import VisionTransformerDistilled

    from vitlab.weights.convert_timm import build_timm

    torch.manual_seed(0)
    peer = perturb(VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=6))
    write_torch(tmp_path / "deit.pth", peer.state_dict())
    imp = import_weights(tmp_path / "deit.pth", "timm", num_heads=2)
    assert imp.model.config.dist_token and imp.model.num_prefix_tokens == 2
    assert imp.model.config.mean == (0.485, 0.456, 0.406)  # DeiT's ImageNet statistics
    x = images((32, 32))
    with torch.no_grad():
        ref = peer(x)
        assert_parity(imp.model(x), ref)
    export_weights(imp.model, tmp_path / "back.pth", "timm")
    back = build_timm(imp.model.config).eval()
    back.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)
    with torch.no_grad():
        assert_parity(back(x), ref)


def test_timm_no_embed_class_table_gets_zero_class_entry(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    peer = perturb(VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=4,
                                     no_embed_class=True))
    write_torch(tmp_path / "t.pth", peer.state_dict())
    imp = import_weights(tmp_path / "t.pth", "timm", num_heads=2, global_pool="token")
    assert torch.equal(imp.model.pos_embed[:, 0], torch.zeros(1, 64))
    x = images((32, 32))
    with torch.no_grad():
        assert_parity(imp.model(x), peer(x))


# --------------------------------------------------------------------------------- transformers
HF_CASES = {
    "square32": dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, num_labels=5),
    "nonsquare32x48_eps1e-6": dict(image_size=[32, 48], patch_size=16, hidden_size=96, num_hidden_layers=2,
                                    num_attention_heads=3, intermediate_size=192, num_labels=9, layer_norm_eps=1e-6),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_hf_classifier_round_trip(case: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(**HF_CASES[case], attn_implementation="eager")
    torch.manual_seed(0)
    peer = perturb(transformers.ViTForImageClassification(cfg))
    peer.save_pretrained(tmp_path / "src")
    imp = import_weights(tmp_path / "src", "hf")
    assert imp.model.config.norm_eps == cfg.layer_norm_eps and imp.class_names == [cfg.id2label[i] for i in range(cfg.num_labels)]
    size = tuple(cfg.image_size) if isinstance(cfg.image_size, list) else (cfg.image_size,) * 2
    x = images(size)
    with torch.no_grad():
        ref = peer(pixel_values=x).logits
        assert_parity(imp.model(x), ref)
    export_weights(imp.model, tmp_path / "back", "hf", imp.class_names)
    back = transformers.ViTForImageClassification.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert_parity(back(pixel_values=x).logits, ref)


def test_hf_vitmodel_pooler_is_pre_logits(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=96, pooler_output_size=48)
    torch.manual_seed(0)
    peer = perturb(transformers.ViTModel(cfg, add_pooling_layer=True))
    peer.save_pretrained(tmp_path / "src")
    imp = import_weights(tmp_path / "src", "hf")
    assert imp.model.config.representation_size == 48 and imp.model.num_classes == 0
    x = images((32, 32))
    with torch.no_grad():
        out = peer(pixel_values=x)
        assert_parity(imp.model(x), out.pooler_output)
        assert_parity(imp.model.forward_features(x), out.last_hidden_state)
    export_weights(imp.model, tmp_path / "back", "hf")
    back = transformers.ViTModel.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert_parity(back(pixel_values=x).pooler_output, out.pooler_output)


# ---------------------------------------------------------------------------------- torchvision
TV_CASES = {
    "32_p8": dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128, num_classes=10),
    "48_p16_prelogits": dict(image_size=48, patch_size=16, num_layers=2, num_heads=3, hidden_dim=96, mlp_dim=192,
                             num_classes=6, representation_size=32),
}


@pytest.mark.parametrize("case", sorted(TV_CASES))
def test_torchvision_round_trip(case: str, tmp_path: Path) -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    from vitlab.weights.convert_torchvision import build_torchvision

    kw = TV_CASES[case]
    torch.manual_seed(0)
    peer = perturb(VisionTransformer(**kw))
    torch.save(peer.state_dict(), tmp_path / "tv.pth")
    imp = import_weights(tmp_path / "tv.pth", "torchvision", num_heads=kw["num_heads"])
    x = images((kw["image_size"],) * 2)
    with torch.no_grad():
        ref = peer(x)
        assert_parity(imp.model(x), ref)
    export_weights(imp.model, tmp_path / "back.pth", "torchvision")
    back = build_torchvision(imp.model.config).eval()
    back.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)
    with torch.no_grad():
        assert_parity(back(x), ref)


def test_torchvision_arch_names_fix_heads() -> None:
    from vitlab.weights.convert_torchvision import ARCHS
    from vitlab.weights.infer import default_heads

    for patch, layers, heads, width, mlp in ARCHS.values():
        assert default_heads(width) == heads  # vit_h_14: 16 heads of 80, not 20 of 64


# ------------------------------------------------------------------------------------- sabotage
@pytest.mark.parametrize("peer_name", ["timm", "hf", "torchvision"])
def test_swapped_q_and_k_fails_parity(peer_name: str, tmp_path: Path) -> None:
    """The parity check has teeth: the same comparison, with q and k swapped, must fail."""
    x = images((32, 32))
    if peer_name == "timm":
        peer = _timm_peer("square32_p8")
        write_torch(tmp_path / "w.pth", peer.state_dict())
        imp = import_weights(tmp_path / "w.pth", "timm", num_heads=2, global_pool="token")
        fwd = peer
    elif peer_name == "hf":
        transformers = pytest.importorskip("transformers")
        torch.manual_seed(0)
        peer = perturb(transformers.ViTForImageClassification(transformers.ViTConfig(**HF_CASES["square32"])))
        peer.save_pretrained(tmp_path / "hf")
        imp = import_weights(tmp_path / "hf", "hf")
        fwd = lambda t: peer(pixel_values=t).logits  # noqa: E731
    else:
        from torchvision.models.vision_transformer import VisionTransformer

        torch.manual_seed(0)
        peer = perturb(VisionTransformer(**TV_CASES["32_p8"]))
        torch.save(peer.state_dict(), tmp_path / "tv.pth")
        imp = import_weights(tmp_path / "tv.pth", "torchvision", num_heads=2)
        fwd = peer
    with torch.no_grad():
        ref = fwd(x)
        assert_parity(imp.model(x), ref)
        swap_qk(imp.model)
        with pytest.raises(AssertionError, match="max abs logit difference"):
            assert_parity(imp.model(x), ref)


# ------------------------------------------------------------------ real architectures, on meta
def _fits_vitlab(cfg, state) -> None:
    from vitlab.models.vit import build_vit
    from vitlab.weights.keymap import check_fits

    with torch.device("meta"):
        check_fits(build_vit(cfg), state, "meta")


@pytest.mark.parametrize("arch", ["vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"])
def test_torchvision_published_archs_map_on_meta(arch: str) -> None:
    import torchvision

    from vitlab.weights.convert_torchvision import ARCHS, import_state

    with torch.device("meta"):
        peer = getattr(torchvision.models, arch)()
    cfg, state = import_state(peer.state_dict(), arch=arch)
    patch, layers, heads, width, mlp = ARCHS[arch]
    assert (cfg.patch_size, cfg.depth, cfg.num_heads, cfg.embed_dim, cfg.mlp_dim, cfg.img_size) == (patch, layers, heads, width, mlp, (224, 224))
    _fits_vitlab(cfg, state)


@pytest.mark.parametrize("name", ["vit_base_patch16_224", "vit_large_patch16_384", "deit_base_distilled_patch16_224",
                                  "vit_huge_patch14_224"])
def test_timm_published_archs_map_on_meta(name: str) -> None:
    timm = pytest.importorskip("timm")

    from vitlab.weights.convert_timm import import_state

    with torch.device("meta"):
        peer = timm.create_model(name, pretrained=False)
    cfg, state = import_state(peer.state_dict())
    assert cfg.num_heads == peer.blocks[0].attn.num_heads and cfg.img_size == tuple(peer.patch_embed.img_size)
    _fits_vitlab(cfg, state)


def test_hf_default_config_maps_on_meta() -> None:
    transformers = pytest.importorskip("transformers")

    from vitlab.weights.convert_hf import import_state

    hc = transformers.ViTConfig(num_labels=1000)
    with torch.device("meta"):
        peer = transformers.ViTForImageClassification(hc)
    cfg, state, names = import_state(peer.state_dict(), hc.to_dict())  # transformers 5.x in-memory names
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.norm_eps, len(names)) == (768, 12, 12, 1e-12, 1000)
    _fits_vitlab(cfg, state)


def test_hf_in_memory_state_dict_names(tmp_path: Path) -> None:
    """A state dict saved straight from a transformers 5.x module (q_proj / o_proj / mlp.fc1 names)."""
    transformers = pytest.importorskip("transformers")
    import json

    cfg = transformers.ViTConfig(**HF_CASES["square32"])
    torch.manual_seed(0)
    peer = perturb(transformers.ViTForImageClassification(cfg))
    (tmp_path / "src").mkdir()
    torch.save(peer.state_dict(), tmp_path / "src" / "pytorch_model.bin")
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg.to_dict()))
    imp = import_weights(tmp_path / "src", "hf")
    x = images((32, 32))
    with torch.no_grad():
        assert_parity(imp.model(x), peer(pixel_values=x).logits)
