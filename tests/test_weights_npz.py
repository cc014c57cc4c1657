"""Google .npz checkpoints (vision_transformer, AugReg, big_vision) against an independent reference.

The files are written from known tensors in Google's layout; the reference forward pass below is
plain numpy on those same Google-named arrays with flax's semantics (NHWC patches, einsums over
(D, heads, head_dim) kernels, LayerNorm eps 1e-6, tanh-approximate GELU). It shares no code with
the importer's key map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.weights import import_weights
from vitlab.weights.errors import MappingError

D, H, HD, M, P, L = 32, 2, 16, 64, 4, 2


def _ln(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * scale + bias


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def reference(w: dict[str, np.ndarray], x_nchw: np.ndarray, big_vision: bool, pool: str = "tok") -> np.ndarray:
    """Flax ViT on Google-named arrays (per-block, unprefixed names), float64."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = x_nchw.astype(np.float64).transpose(0, 2, 3, 1)  # NHWC
    b, hh, ww, c = x.shape
    patches = x.reshape(b, hh // P, P, ww // P, P, c).transpose(0, 1, 3, 2, 4, 5)  # (B, gh, gw, P, P, C)
    tok = np.einsum("bhwijc,ijcd->bhwd", patches, w["embedding/kernel"]) + w["embedding/bias"]
    tok = tok.reshape(b, -1, D)
    if big_vision:
        tok = tok + w["pos_embedding"]  # positions for patches only
        if pool == "tok":
            tok = np.concatenate([np.broadcast_to(w["cls"], (b, 1, D)), tok], 1)
        ln1, mha, ln2, mlp = "LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"
    else:
        tok = np.concatenate([np.broadcast_to(w["cls"], (b, 1, D)), tok], 1) + w["Transformer/posembed_input/pos_embedding"]
        ln1, mha, ln2, mlp = "LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"
    for i in range(L):
        p = f"Transformer/encoderblock_{i}/"
        y = _ln(tok, w[f"{p}{ln1}/scale"], w[f"{p}{ln1}/bias"])
        q, k, v = (np.einsum("btd,dhk->bthk", y, w[f"{p}{mha}/{n}/kernel"]) + w[f"{p}{mha}/{n}/bias"] for n in ("query", "key", "value"))
        logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(HD)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("bhqs,bshk->bqhk", att, v)
        tok = tok + np.einsum("bqhk,hkd->bqd", o, w[f"{p}{mha}/out/kernel"]) + w[f"{p}{mha}/out/bias"]
        y = _ln(tok, w[f"{p}{ln2}/scale"], w[f"{p}{ln2}/bias"])
        y = _gelu_tanh(y @ w[f"{p}{mlp}/Dense_0/kernel"] + w[f"{p}{mlp}/Dense_0/bias"])
        tok = tok + y @ w[f"{p}{mlp}/Dense_1/kernel"] + w[f"{p}{mlp}/Dense_1/bias"]
    tok = _ln(tok, w["Transformer/encoder_norm/scale"], w["Transformer/encoder_norm/bias"])
    feat = tok[:, 0] if pool == "tok" else tok.mean(1)
    if "pre_logits/kernel" in w:
        feat = np.tanh(feat @ w["pre_logits/kernel"] + w["pre_logits/bias"])
    return feat @ w["head/kernel"] + w["head/bias"]


def google_arrays(grid: tuple[int, int], classes: int, big_vision: bool, pre_logits: int = 0, pool: str = "tok",
                  seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def r(*shape: int, s: float = 0.1) -> np.ndarray:
        return (rng.standard_normal(shape) * s).astype(np.float32)

    n = grid[0] * grid[1]
    ln1, mha, ln2, mlp = (("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0") if big_vision
                          else ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"))
    w = {"embedding/kernel": r(P, P, 3, D), "embedding/bias": r(D)}
    if pool == "tok":
        w["cls"] = r(1, 1, D, s=1.0)
    if big_vision:
        w["pos_embedding"] = r(1, n, D, s=0.5)
    else:
        w["Transformer/posembed_input/pos_embedding"] = r(1, n + 1, D, s=0.5)
    for i in range(L):
        p = f"Transformer/encoderblock_{i}/"
        for ln in (ln1, ln2):
            w[f"{p}{ln}/scale"], w[f"{p}{ln}/bias"] = 1 + r(D), r(D)
        for name in ("query", "key", "value"):
            w[f"{p}{mha}/{name}/kernel"], w[f"{p}{mha}/{name}/bias"] = r(D, H, HD, s=0.3), r(H, HD)
        w[f"{p}{mha}/out/kernel"], w[f"{p}{mha}/out/bias"] = r(H, HD, D, s=0.3), r(D)
        w[f"{p}{mlp}/Dense_0/kernel"], w[f"{p}{mlp}/Dense_0/bias"] = r(D, M, s=0.3), r(M)
        w[f"{p}{mlp}/Dense_1/kernel"], w[f"{p}{mlp}/Dense_1/bias"] = r(M, D, s=0.3), r(D)
    w["Transformer/encoder_norm/scale"], w["Transformer/encoder_norm/bias"] = 1 + r(D), r(D)
    feat = D
    if pre_logits:
        w["pre_logits/kernel"], w["pre_logits/bias"] = r(D, pre_logits, s=0.3), r(pre_logits)
        feat = pre_logits
    w["head/kernel"], w["head/bias"] = r(feat, classes, s=0.5), r(classes)
    return w


def scan(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision's scanned layout: per-block arrays stacked on a leading layer axis."""
    out = {k: v for k, v in w.items() if not k.startswith("Transformer/encoderblock_")}
    leaves = sorted({k.split("/", 2)[2] for k in w if k.startswith("Transformer/encoderblock_0/")})
    for leaf in leaves:
        out[f"Transformer/encoderblock/{leaf}"] = np.stack([w[f"Transformer/encoderblock_{i}/{leaf}"] for i in range(L)])
    return out


def _x(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((3, 3, *size)).astype(np.float32)


def _check(model: torch.nn.Module, ref: np.ndarray, x: np.ndarray) -> float:
    with torch.no_grad():
        out = model(torch.from_numpy(x)).double().numpy()
    diff = float(np.abs(out - ref).max())
    assert diff <= 1e-5 and (out.argmax(-1) == ref.argmax(-1)).all(), diff
    return diff


@pytest.mark.parametrize("prefix", ["", "opt/target/"])
def test_vision_transformer_layout_in21k_pre_logits(prefix: str, tmp_path: Path) -> None:
    w = google_arrays((4, 4), 11, big_vision=False, pre_logits=24)
    np.savez(tmp_path / "vit.npz", **{prefix + k: v for k, v in w.items()})
    imp = import_weights(tmp_path / "vit.npz", "npz")
    cfg = imp.model.config
    assert (cfg.num_heads, cfg.representation_size, cfg.act, cfg.norm_eps, cfg.img_size) == (H, 24, "gelu_tanh", 1e-6, (16, 16))
    x = _x((16, 16))
    _check(imp.model, reference(w, x, big_vision=False), x)


def test_big_vision_scanned_nonsquare_no_class_entry(tmp_path: Path) -> None:
    w = google_arrays((3, 5), 7, big_vision=True)
    np.savez(tmp_path / "bv.npz", **{"params/" + k: v for k, v in scan(w).items()})
    imp = import_weights(tmp_path / "bv.npz", "npz", img_size=(12, 20))
    assert imp.model.pos_embed.shape == (1, 16, D) and torch.equal(imp.model.pos_embed[0, 0], torch.zeros(D))
    x = _x((12, 20))
    _check(imp.model, reference(w, x, big_vision=True), x)


def test_big_vision_gap_per_block(tmp_path: Path) -> None:
    w = google_arrays((4, 4), 5, big_vision=True, pool="gap")
    np.savez(tmp_path / "gap.npz", **{"params/" + k: v for k, v in w.items()})
    imp = import_weights(tmp_path / "gap.npz", "npz")
    assert imp.model.global_pool == "avg" and imp.model.cls_token is None
    x = _x((16, 16))
    _check(imp.model, reference(w, x, big_vision=True, pool="gap"), x)


def test_swapped_q_and_k_fails(tmp_path: Path) -> None:
    w = google_arrays((4, 4), 6, big_vision=False)
    bad = dict(w)
    for i in range(L):
        p = f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/"
        for leaf in ("kernel", "bias"):
            bad[f"{p}query/{leaf}"], bad[f"{p}key/{leaf}"] = w[f"{p}key/{leaf}"], w[f"{p}query/{leaf}"]
    np.savez(tmp_path / "bad.npz", **bad)
    x = _x((16, 16))
    with pytest.raises(AssertionError):
        _check(import_weights(tmp_path / "bad.npz", "npz").model, reference(w, x, big_vision=False), x)


def test_unknown_keys_are_listed_with_shapes(tmp_path: Path) -> None:
    w = google_arrays((4, 4), 6, big_vision=False)
    w["MAPHead_0/probe"] = np.zeros((1, 1, D), np.float32)
    del w["Transformer/encoder_norm/bias"]
    np.savez(tmp_path / "odd.npz", **w)
    with pytest.raises(MappingError, match=r"missing 1: Transformer/encoder_norm/bias.*unexpected 1: MAPHead_0/probe \(1, 1, 32\)"):
        import_weights(tmp_path / "odd.npz", "npz")


def test_timm_npz_loader_agrees(tmp_path: Path) -> None:
    """A second, independent importer (timm's own) reads the same file to the same logits."""
    pytest.importorskip("timm")
    from vitlab.weights.verify import peer_forward

    w = google_arrays((4, 4), 6, big_vision=False)
    np.savez(tmp_path / "vit.npz", **w)
    imp = import_weights(tmp_path / "vit.npz", "npz")
    x = torch.from_numpy(_x((16, 16)))
    with torch.no_grad():
        diff = (peer_forward("npz", tmp_path / "vit.npz", imp.model.config)(x) - imp.model(x)).abs().max().item()
    assert diff <= 1e-5
