"""The fast training paths compute what the reference paths compute (no timing here).

* the engine's step (fused AdamW, clipping, label-smoothed loss) follows timm's train.py step from
  the same init on the same batches: the peer built from timm's own description, fed vitlab's
  weights through vitlab's timm converter (benchmarks/train_speed.py times exactly these two);
* the fused AdamW kernel the engine picks equals torch's per-tensor reference loop;
* capturing every layer's attention returns the maps timm's own extractor reads from its
  unfused attention, and leaves the forward's output as it was.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitlab.analysis.capture import capture_attention
from vitlab.api import create_model
from vitlab.engine.loop import EpochTotals, StepOptions, train_one_epoch
from vitlab.engine.nonfinite import NonFiniteGuard
from vitlab.engine.optim import build_optimizer
from vitlab.tasks.classification import ClassificationTask

LR, WD, SMOOTH, CLIP = 1e-2, 0.05, 0.1, 1.0
TINY = dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, num_classes=5)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("vit_pico_patch4_32", **TINY)
    nn.init.normal_(model.head.weight, std=0.02)  # the zero-initialised head would hide the logits
    return model


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [(torch.rand(8, 3, 32, 32, generator=g) * 2 - 1, torch.randint(0, 5, (8,), generator=g)) for _ in range(n)]


def _engine_losses(model: nn.Module, data: list) -> list[float]:
    """Losses of the engine's steps, one batch per call of train_one_epoch."""
    task = ClassificationTask(None, None, [str(i) for i in range(5)], label_smoothing=SMOOTH)  # type: ignore[arg-type]
    opt = build_optimizer(model, "adamw", LR, WD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    records: list[dict[str, Any]] = []
    for batch in data:
        train_one_epoch(task, model, [batch], opt, sched, torch.device("cpu"), 0, 0, StepOptions(clip_grad=CLIP),
                        1, EpochTotals(), NonFiniteGuard("stop"), log=records.append, progress=False)
    return [r["loss"] for r in records]


def _timm_losses(model: nn.Module, data: list, smoothing: float) -> list[float]:
    """timm train.py's step: create_optimizer_v2, LabelSmoothingCrossEntropy, dispatch_clip_grad."""
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import dispatch_clip_grad

    opt = create_optimizer_v2(model, "adamw", lr=LR, weight_decay=WD)
    loss_fn = LabelSmoothingCrossEntropy(smoothing) if smoothing else nn.CrossEntropyLoss()
    out = []
    model.train()
    for x, y in data:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        dispatch_clip_grad(model.parameters(), CLIP, mode="norm")
        opt.step()
        out.append(loss.item())
    return out


def _timm_copy(model: nn.Module) -> nn.Module:
    pytest.importorskip("timm")
    from vitlab.weights.convert_timm import build_timm, export_state

    peer = build_timm(model.config)
    peer.load_state_dict(export_state(model))
    return peer


def test_engine_step_follows_timm_train_step_from_the_same_init() -> None:
    ours = _tiny()
    peer, control = _timm_copy(ours), _timm_copy(ours)
    data = _batches(4)
    mine, theirs = _engine_losses(ours, data), _timm_losses(peer, data, SMOOTH)
    torch.testing.assert_close(torch.tensor(mine), torch.tensor(theirs), atol=1e-5, rtol=0)
    assert mine[-1] != mine[0]  # the weights moved: the curve compares training, not four forwards
    x = data[0][0]
    with torch.no_grad():  # the weights after the steps agree too, not just the losses
        torch.testing.assert_close(ours.eval()(x), peer.eval()(x), atol=1e-5, rtol=0)
    # Negative control: the same timm step without label smoothing leaves the curve at once.
    other = _timm_losses(control, data, 0.0)
    assert abs(other[0] - mine[0]) > 1e-3


def test_fused_adamw_equals_the_per_tensor_reference() -> None:
    model = _tiny()
    ref = _tiny()
    fused = build_optimizer(model, "adamw", LR, WD)
    assert fused.defaults["fused"]  # the engine takes the fused kernel on the CPU
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": list(r)}
              for g, r in zip(fused.param_groups, _regroup(ref, fused, model))]
    loop = torch.optim.AdamW(groups, lr=LR, foreach=False, fused=False)
    for x, y in _batches(3):
        for m, opt in ((model, fused), (ref, loop)):
            F.cross_entropy(m(x), y).backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # Negative control: one more step of only the fused model separates them.
    x, y = _batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    fused.step()
    assert max((a - b).abs().max().item() for a, b in zip(model.parameters(), ref.parameters())) > 1e-4


def _regroup(ref: nn.Module, opt: torch.optim.Optimizer, model: nn.Module) -> list[list[nn.Parameter]]:
    """``ref``'s parameters arranged in the groups ``opt`` holds ``model``'s in."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    mine = list(ref.parameters())
    return [[mine[index[id(p)]] for p in g["params"]] for g in opt.param_groups]


def test_capture_of_every_layer_returns_timm_maps_and_keeps_the_output() -> None:
    pytest.importorskip("timm")
    from timm.utils import AttentionExtract

    ours = _tiny().eval()
    peer = _timm_copy(ours).eval()
    for m in peer.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False  # timm's hooks need the explicit softmax
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        plain = ours(x)
        with capture_attention(ours) as rec:
            captured = ours(x)
        theirs = list(AttentionExtract(peer, method="hook")(x).values())
    torch.testing.assert_close(captured, plain, atol=1e-6, rtol=0)
    assert len(rec.softmax) == len(theirs) == TINY["depth"]
    for got, want in zip(rec.maps("softmax"), theirs):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # Negative control: layer 0's maps are not layer 1's.
    assert (rec.layer(0) - theirs[1]).abs().max() > 1e-4


def _reference_attention(layer: nn.Module, x: torch.Tensor, swap_kv: bool = False) -> torch.Tensor:
    """The attention written out with plain autograd ops from the layer's weights: (B, T, D) -> (B, T, D)."""
    B, T, D = x.shape
    qkv = F.linear(x, layer.qkv.weight, layer.qkv.bias).reshape(B, T, 3, layer.num_heads, D // layer.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    if swap_kv:
        k, v = v, k
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D)
    return F.linear(out, layer.proj.weight, layer.proj.bias)


def test_training_split_of_the_heads_has_the_reference_gradients() -> None:
    from vitlab.layers.attention import Attention

    torch.manual_seed(0)
    layer = Attention(48, 3).train()  # training + grad: the one-pass backward of the head split
    x = torch.randn(4, 10, 48, requires_grad=True)
    g = torch.randn(4, 10, 48)

    def grads(fn) -> list[torch.Tensor]:
        x.grad = None
        layer.zero_grad()
        fn().backward(g)
        return [x.grad.clone(), layer.qkv.weight.grad.clone(), layer.qkv.bias.grad.clone()]

    mine = grads(lambda: layer(x))
    for got, want in zip(mine, grads(lambda: _reference_attention(layer, x))):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # Negative control: the reference with k and v swapped has other gradients.
    other = grads(lambda: _reference_attention(layer, x, swap_kv=True))
    assert (mine[1] - other[1]).abs().max() > 1e-3
