"""RecomputedAttention: the explicit path's operations bit for bit, with no (B, H, T, T) map kept.

References: the explicit operations run by autograd (bit for bit, forward and gradients), torch's
own bf16 flash-attention backward kernel and a float64 autograd (error bounds), and the tensors
each one saves for the backward (memory).
"""

from __future__ import annotations

import pytest
import torch

import vitlab.layers.recomputed_attention as ra
from vitlab.layers.recomputed_attention import RecomputedAttention


def _inputs(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g) * 1.5 for _ in range(4))  # q, k, v, grad_out


def _explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """vitlab's explicit path on bf16 tensors: (q * scale) k^T, softmax in fp32, back to bf16, times v."""
    return torch.softmax(((q * scale) @ k.transpose(-2, -1)).float(), dim=-1).to(q.dtype) @ v


def _run(fn, q, k, v, g, dtype=torch.bfloat16):
    leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, q.shape[-1] ** -0.5)
    return out, torch.autograd.grad(out, leaves, g.to(dtype))


@pytest.mark.parametrize("shape", [(3, 4, 65, 16), (2, 6, 197, 64)], ids=["cifar-like", "vit-s-like"])
def test_forward_and_gradients_are_the_explicit_paths_bit_for_bit(shape, monkeypatch) -> None:
    q, k, v, g = _inputs(shape)
    out_e, grads_e = _run(_explicit, q, k, v, g)
    monkeypatch.setattr(ra, "_SLICE_ENTRIES", shape[1] * shape[2] ** 2)  # one image a slice: slicing exercised
    out, grads = _run(RecomputedAttention.apply, q, k, v, g)
    assert torch.equal(out, out_e)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_e))


def test_a_wrong_softmax_gradient_is_caught(monkeypatch) -> None:
    """Negative control: the same comparison fails when the backward drops the rowsum term."""
    q, k, v, g = _inputs((2, 4, 33, 16))
    _, grads_e = _run(_explicit, q, k, v, g)
    monkeypatch.setattr(torch, "_softmax_backward_data", lambda dp, p, dim, dtype: p * dp)
    _, broken = _run(RecomputedAttention.apply, q, k, v, g)
    assert not all(torch.equal(a, b) for a, b in zip(broken, grads_e))


def test_error_against_float64_is_within_twice_torchs_own_bf16_kernels() -> None:
    q, k, v, g = _inputs((2, 6, 197, 64), seed=1)
    _, exact = _run(lambda a, b, c, s: torch.softmax((a @ b.transpose(-2, -1)) * s, -1) @ c, q, k, v, g,
                    dtype=torch.float64)
    _, mine = _run(RecomputedAttention.apply, q, k, v, g)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qb, kb, vb)
    torch_kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        g.bfloat16(), qb, kb, vb, out, lse, 0.0, False)
    for a, b, ref in zip(mine, torch_kernel, exact):
        err_mine = ((a.double() - ref).norm() / ref.norm()).item()
        err_torch = ((b.double() - ref).norm() / ref.norm()).item()
        assert err_mine < 2 * err_torch and err_mine < 2e-2, (err_mine, err_torch)


def _saved_bytes(fn, q, k, v) -> int:
    """Bytes autograd keeps for the backward of ``fn`` (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    leaves = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*leaves, q.shape[-1] ** -0.5)
    return sum(storages.values())


def test_it_keeps_no_attention_maps_for_the_backward() -> None:
    q, k, v, _ = _inputs((4, 6, 197, 64))
    qkv_bytes = 3 * q.numel() * 2  # q, k, v in bf16
    maps_bytes = 4 * 6 * 197 * 197 * 2  # one bf16 (B, H, T, T)
    assert _saved_bytes(RecomputedAttention.apply, q, k, v) == qkv_bytes
    assert _saved_bytes(_explicit, q, k, v) >= qkv_bytes + 3 * maps_bytes  # the explicit path: fp32 + bf16 maps
