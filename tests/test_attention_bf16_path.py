"""A bf16 training step on the CPU takes the explicit attention path; everything else keeps the fused kernel.

The CPU flash-attention kernel's bf16 backward is ~10x slower than its fp32 one at ViT token
counts, so :mod:`vitlab.layers.attention` routes exactly that case (training, grad on, CPU, bf16
autocast or bf16 inputs) through the explicit path. Which path ran is read by counting calls of
the layer's ``fused_attention`` (a hook on ``attend`` would itself force the explicit path); the
outputs are compared with a layer forced onto each path (``fused=False`` / the fused kernel in
eval mode).
"""

from __future__ import annotations

import torch

from vitlab.layers.attention import Attention


def _attention() -> Attention:
    torch.manual_seed(0)
    return Attention(32, 4)


def _ran_explicit(layer: Attention, x: torch.Tensor, autocast: bool) -> bool:
    """Whether ``layer(x)`` avoided the fused kernel (its ``fused_attention``, wrapped to count calls)."""
    calls: list[int] = []
    kernel = layer.fused_attention

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return kernel(*args)  # type: ignore[arg-type]

    layer.fused_attention = counted  # type: ignore[method-assign]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            layer(x)
    finally:
        del layer.fused_attention
    return not calls


def test_bf16_autocast_training_on_the_cpu_takes_the_explicit_path() -> None:
    layer, x = _attention().train(), torch.randn(2, 16, 32)
    assert _ran_explicit(layer, x, autocast=True)
    # negative controls: fp32 training, bf16 inference and no-grad training all keep the fused kernel
    assert not _ran_explicit(layer, x, autocast=False)
    assert not _ran_explicit(layer.eval(), x, autocast=True)
    with torch.no_grad():
        assert not _ran_explicit(layer.train(), x, autocast=True)


def test_a_bf16_model_training_on_the_cpu_takes_it_too() -> None:
    layer = _attention().to(torch.bfloat16).train()
    assert _ran_explicit(layer, torch.randn(2, 16, 32, dtype=torch.bfloat16), autocast=False)


def test_the_rerouted_step_equals_the_explicit_layers_bit_for_bit() -> None:
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
