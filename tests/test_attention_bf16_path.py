"""A bf16 training step on the CPU never runs the fused kernel's slow backward; everything else keeps it.

The CPU flash-attention kernel's bf16 backward is ~10x slower than its fp32 one at ViT token
counts, so :mod:`vitlab.layers.attention` routes exactly that case (training, grad on, CPU, bf16
autocast or bf16 inputs) through the explicit path's operations: kept as they are where the maps
are small, through :class:`RecomputedAttention` where they are large. ``attention_path`` names the
choice; the forward is checked to follow it by counting calls of the layer's ``fused_attention``
and of ``RecomputedAttention.apply`` (a hook on ``attend`` would itself force the explicit path).
"""

from __future__ import annotations

import pytest
import torch

import vitlab.layers.attention as attention_module
from vitlab.layers.attention import Attention
from vitlab.layers.lsa import LocalitySelfAttention


def _attention(**kw: object) -> Attention:
    torch.manual_seed(0)
    return Attention(32, 4, **kw)


def _path(layer: Attention, x: torch.Tensor, autocast: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    """The path ``layer(x)`` ran, read from the calls it made; checked against ``attention_path``."""
    calls: list[str] = []
    kernel, recompute = layer.fused_attention, attention_module.RecomputedAttention.apply
    with monkeypatch.context() as patch:
        patch.setattr(layer, "fused_attention", lambda *a: calls.append("fused") or kernel(*a))
        patch.setattr(attention_module.RecomputedAttention, "apply",
                      lambda *a: calls.append("recomputed") or recompute(*a))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            said = layer.attention_path(x)
            layer(x)
    ran = calls[0] if calls else "explicit"
    assert ran == said
    return ran


def test_bf16_autocast_training_on_the_cpu_avoids_the_fused_kernel(monkeypatch) -> None:
    layer, x = _attention().train(), torch.randn(2, 16, 32)
    assert _path(layer, x, True, monkeypatch) == "explicit"  # maps of 12 KiB a layer: kept
    monkeypatch.setattr(attention_module, "RECOMPUTE_ABOVE_BYTES", 1024)
    assert _path(layer, x, True, monkeypatch) == "recomputed"
    # negative controls: fp32 training, bf16 inference and no-grad training all keep the fused kernel
    assert _path(layer, x, False, monkeypatch) == "fused"
    assert _path(layer.eval(), x, True, monkeypatch) == "fused"
    with torch.no_grad():
        assert _path(layer.train(), x, True, monkeypatch) == "fused"


def test_a_bf16_model_training_on_the_cpu_avoids_it_too(monkeypatch) -> None:
    layer = _attention().to(torch.bfloat16).train()
    assert _path(layer, torch.randn(2, 16, 32, dtype=torch.bfloat16), False, monkeypatch) == "explicit"


def test_large_maps_are_recomputed_unless_dropout_or_subclass_logits_need_them(monkeypatch) -> None:
    x = torch.randn(4, 197, 32)  # 4 x 4 heads x 197^2 x 6 bytes = 3.6 MiB a layer
    monkeypatch.setattr(attention_module, "RECOMPUTE_ABOVE_BYTES", 2**20)
    assert _path(_attention().train(), x, True, monkeypatch) == "recomputed"
    assert _path(_attention(attn_drop=0.1).train(), x, True, monkeypatch) == "explicit"
    assert _path(_attention(attn_drop=0.1).eval(), x, True, monkeypatch) == "fused"
    torch.manual_seed(0)
    assert _path(LocalitySelfAttention(32, 4).train(), x, True, monkeypatch) == "explicit"


@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
def test_the_rerouted_step_equals_the_explicit_layers_bit_for_bit(recompute, monkeypatch) -> None:
    if recompute:
        monkeypatch.setattr(attention_module, "RECOMPUTE_ABOVE_BYTES", 0)
    fused, explicit = _attention().train(), _attention().train()
    explicit.fused = False
    x = torch.randn(2, 16, 32, requires_grad=True)
    results = []
    for layer in (fused, explicit):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        (grad,) = torch.autograd.grad(out.float().square().sum(), x)
        results.append((out, grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    # and it is the same function as the fused kernel, to bf16's rounding
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = fused.eval()(x)
    torch.testing.assert_close(results[0][0].float(), reference.float(), atol=3e-2, rtol=3e-2)
