"""The ViT forward against an independent reference written from the paper (state dict only)."""

from __future__ import annotations

import math

import torch
from run_helpers import perturb

import vitlab
from vitlab.models import VisionTransformer


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _reference_vit(sd: dict[str, torch.Tensor], x: torch.Tensor, patch: int, depth: int, heads: int,
                   eps: float = 1e-6) -> torch.Tensor:
    """The ViT forward written from the paper, reading only the state dict (no vitlab modules)."""
    B, C, H, W = x.shape
    gh, gw = H // patch, W // patch
    # Patches in row-major grid order, each flattened as (C, P, P) like the conv weight.
    patches = x.reshape(B, C, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, -1)
    w = sd["patch_embed.proj.weight"]
    tokens = patches @ w.reshape(w.shape[0], -1).T + sd["patch_embed.proj.bias"]
    D = tokens.shape[-1]
    h = torch.cat([sd["cls_token"].expand(B, 1, D), tokens], 1) + sd["pos_embed"]
    hd = D // heads
    for i in range(depth):
        p = f"blocks.{i}."
        y = _layer_norm(h, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv.split(D, dim=-1)
        split = lambda t: t.reshape(B, -1, heads, hd).transpose(1, 2)  # noqa: E731  (B, H, T, hd)
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        scores = (scores - scores.amax(-1, keepdim=True)).exp()
        attn = scores / scores.sum(-1, keepdim=True)
        y = (attn @ v).transpose(1, 2).reshape(B, -1, D)
        h = h + y @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = _layer_norm(h, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        y = y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
        y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))  # exact GELU
        h = h + y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    h = _layer_norm(h, sd["norm.weight"], sd["norm.bias"], eps)
    return h[:, 0] @ sd["head.weight"].T + sd["head.bias"]


def _golden_model() -> VisionTransformer:
    torch.manual_seed(0)
    model = vitlab.create_model("vit_pico_patch4_28")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a random head (the init's is zero), so logits carry signal
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    # Perturb every parameter (norm weights away from 1, biases and class token away from 0) so
    # that a swapped or ignored weight cannot go unnoticed.
    return perturb(model, seed=123)


def test_matches_independent_reference_float32() -> None:
    model = _golden_model()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    expected = _reference_vit(sd, x, patch=4, depth=6, heads=4)
    with torch.no_grad():
        fused = model(x)
        explicit = model.forward_intermediates(x, return_attn=True)["logits"]
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, expected, atol=1e-5, rtol=1e-5)


def test_matches_independent_reference_float64() -> None:
    model = _golden_model().double()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_vit(sd, x, patch=4, depth=6, heads=4), atol=1e-10, rtol=0)
