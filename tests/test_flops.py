"""Parameter and MAC counting, on real and meta tensors."""

from __future__ import annotations

import pytest
import torch

import vitlab
from vitlab.layers import Attention
from vitlab.utils.flops import count_macs, count_params


def _meta(name: str, **overrides) -> torch.nn.Module:
    with torch.device("meta"):
        return vitlab.create_model(name, **overrides)


def _manual_macs(batch: int, img: tuple[int, int], patch: int, in_chans: int, dim: int, depth: int,
                 mlp: int, classes: int, prefix: int = 1) -> int:
    """Matrix-product MACs of a plain ViT, counted by hand."""
    n = (img[0] // patch) * (img[1] // patch)
    t = prefix + n
    embed = n * dim * in_chans * patch * patch
    block = (t * dim * 3 * dim     # qkv
             + 2 * t * t * dim     # q k^T and attn v, summed over heads
             + t * dim * dim       # output projection
             + 2 * t * dim * mlp)  # fc1, fc2
    return batch * (embed + depth * block + dim * classes)


def test_vit_b16_macs_match_published() -> None:
    # timm / fvcore report 17.58 GMACs for ViT-B/16 at 224.
    macs = count_macs(_meta("vit_base_patch16_224"), (1, 3, 224, 224))
    assert macs == pytest.approx(17.58e9, rel=0.02)
    assert macs == _manual_macs(1, (224, 224), 16, 3, 768, 12, 3072, 1000)


def test_vit_h14_counts_instantly_on_meta() -> None:
    model = _meta("vit_huge_patch14_224")
    assert count_params(model) == 632_045_800
    assert count_macs(model, (1, 3, 224, 224)) == _manual_macs(1, (224, 224), 14, 3, 1280, 32, 5120, 1000)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_manual_count_equals_counter(device: str) -> None:
    with torch.device(device):
        model = vitlab.create_model("vit_pico_patch4_28")
    assert count_macs(model, (2, 1, 28, 28)) == _manual_macs(2, (28, 28), 4, 1, 128, 6, 256, 10)


def test_counts_rectangular_avg_pool_without_class_token() -> None:
    model = _meta("vit_pico_patch4_28", img_size=(28, 40), class_token=False, global_pool="avg", num_classes=3)
    assert count_macs(model, (3, 1, 28, 40)) == _manual_macs(3, (28, 40), 4, 1, 128, 6, 256, 3, prefix=0)


def test_macs_scale_with_batch() -> None:
    model = _meta("vit_tiny_patch16_224")
    one = count_macs(model, (1, 3, 224, 224))
    assert count_macs(model, (4, 3, 224, 224)) == 4 * one
    assert one == pytest.approx(1.26e9, rel=0.02)  # timm's table


def test_count_params_exact_and_dedups_shared() -> None:
    model = vitlab.create_model("vit_pico_patch7_28")
    assert count_params(model) == sum(p.numel() for p in model.parameters()) == 805_130
    shared = torch.nn.Sequential(model.head, model.head)
    assert count_params(shared) == 128 * 10 + 10
    # The fixed sin-cos table is a buffer, not a parameter.
    learned = count_params(_meta("vit_pico_patch4_28"))
    assert count_params(_meta("vit_pico_patch4_28", pos_embed="sincos")) == learned - 50 * 128


def test_count_macs_leaves_model_as_it_was() -> None:
    model = vitlab.create_model("vit_pico_patch4_28")
    model.train()
    model.blocks[0].attn.fused = False
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (1, 1, 28, 28))
    assert model.training and all(m.training for m in model.modules())
    fused = [m.fused for m in model.modules() if isinstance(m, Attention)]
    assert fused == [False] + [True] * 5
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------ the MACs cache and `vitlab models`
def test_macs_cache_counts_once_and_keys_on_the_config(tmp_path, monkeypatch) -> None:
    import vitlab.utils.flops as flops

    path = tmp_path / "macs.json"
    cache = flops.MacsCache(path)
    tiny = _meta("vit_tiny_patch16_224")
    first = cache.macs(tiny, (1, 3, 224, 224))
    assert first == count_macs(tiny, (1, 3, 224, 224)) and cache.save() is None and path.is_file()

    def no_count(*args, **kwargs):
        raise AssertionError("counted again")

    monkeypatch.setattr(flops, "count_macs", no_count)
    again = flops.MacsCache(path)
    assert again.macs(_meta("vit_tiny_patch16_224"), (1, 3, 224, 224)) == first  # from the file
    with pytest.raises(AssertionError, match="counted again"):  # another config is another key
        again.macs(_meta("vit_tiny_patch16_224", depth=6), (1, 3, 224, 224))
    with pytest.raises(AssertionError, match="counted again"):  # and another input
        again.macs(tiny, (1, 3, 192, 192))


def test_macs_cache_survives_a_torn_or_unwritable_file(tmp_path) -> None:
    import vitlab.utils.flops as flops

    (tmp_path / "macs.json").write_text('{"abc": 1')  # torn
    cache = flops.MacsCache(tmp_path / "macs.json")
    assert cache.entries == {}
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = flops.MacsCache(blocker / "macs.json")  # its folder is a file: cannot be written
    cache.macs(_meta("vit_pico_patch4_28"), (1, 1, 28, 28))
    assert cache.save() is not None


def test_models_lists_without_macs_unless_asked(tmp_path, monkeypatch, capsys) -> None:
    import json

    from vitlab.cli.main import main

    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path))
    assert main(["models", "vit_tiny*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["model", "params", "GMACs"] and out[-1].endswith("MACs with --macs")
    row = next(line for line in out if line.startswith("vit_tiny_patch16_224 "))
    assert row.split()[1:3] == ["5,717,416", "-"] and not (tmp_path / "macs.json").exists()
    assert main(["models", "vit_tiny_patch16_224", "--macs"]) == 0
    assert "1.254" in capsys.readouterr().out and (tmp_path / "macs.json").is_file()
    assert main(["models", "vit_tiny_patch16_224", "--json"]) == 0  # JSON keeps MACs; stdout is pure JSON
    cap = capsys.readouterr()
    assert json.loads(cap.out)[0]["macs"] == pytest.approx(1.254e9, rel=1e-3) and cap.err == ""


def test_counts_an_attention_pool_head_on_meta() -> None:
    # The latent query is fed to a module as the parameter itself: counting must not trip over it.
    model = _meta("vit_pico_patch4_28", global_pool="map")
    assert count_macs(model, (1, 1, 28, 28)) > count_macs(_meta("vit_pico_patch4_28"), (1, 1, 28, 28))
    assert all(p.requires_grad for p in model.parameters())
