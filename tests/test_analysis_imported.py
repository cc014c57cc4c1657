"""Analysis on a model imported from another library: timm's own attention maps are what vitlab captures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitlab.analysis import AnalysisOptions, capture_attention, collect_attention


def test_capture_on_a_timm_import_matches_timms_attention(tmp_path: Path) -> None:
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    weights = pytest.importorskip("vitlab.weights")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    theirs = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3)
    theirs.eval()
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "timm.safetensors"))
    ours = weights.import_weights(tmp_path / "timm.safetensors", "timm", num_heads=2, img_size=32,
                                  global_pool="token").model

    their_maps: list[torch.Tensor] = []
    for blk in theirs.blocks:  # timm's explicit path feeds the probabilities to attn_drop
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_pre_hook(lambda m, a: their_maps.append(a[0].detach()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), capture_attention(ours) as cap:
        logits = ours(x)
        ref = theirs(x)
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
    for mine, theirs_map in zip(cap.effective(), their_maps, strict=True):
        torch.testing.assert_close(mine, theirs_map, rtol=1e-4, atol=1e-5)
    stats = collect_attention(ours, [x], AnalysisOptions(show=1))
    assert stats.distance.shape == (2, 2, 2) and stats.saliency.shape == (2, 4, 4)
