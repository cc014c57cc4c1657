"""Google's JAX checkpoints (.npz) -> vitlab: the original vision_transformer code, AugReg and
big_vision.

Layout differences handled, each by a named step:

* prefixes: optimizer-wrapped ``opt/target/`` and big_vision's ``params/`` are stripped;
* scanned blocks: ``Transformer/encoderblock/<leaf>`` with a leading layer axis is unstacked
  into ``encoderblock_{i}``;
* sub-module numbering: vision_transformer counts LayerNorm_0, MultiHeadDotProductAttention_1,
  LayerNorm_2, MlpBlock_3; big_vision LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0;
* big_vision's ``pos_embedding`` has no class entry (the class token gets no position): a zero
  entry is prepended, which computes the same function;
* the in21k ``pre_logits`` layer (Dense + tanh) becomes vitlab's ``representation_size``.

Named transposes: conv kernels HWIO -> OIHW, Dense kernels (in, out) -> (out, in), attention
kernels (D, heads, head_dim) -> (heads * head_dim, D). Flax's LayerNorm eps is 1e-6 and its
``nn.gelu`` is the tanh approximation, so imports default to ``act="gelu_tanh"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.keymap import Rule, block_depth, to_vitlab
from vitlab.weights.source import Source

PREFIXES = ("opt/target/", "params/img/", "params/")


# ------------------------------------------------------------------------------- transposes
def hwio_to_oihw(k: torch.Tensor) -> torch.Tensor:
    """Conv kernel (P, P, C_in, D) -> (D, C_in, P, P)."""
    return k.permute(3, 2, 0, 1)


def dense_to_linear(k: torch.Tensor) -> torch.Tensor:
    """Dense kernel (in, out) -> Linear weight (out, in)."""
    return k.T


def qkv_from_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Three (D, heads, head_dim) kernels -> fused (3 * D, D) qkv weight, rows q | k | v."""
    return torch.cat([t.reshape(t.shape[0], -1).T for t in (q, k, v)], 0)


def qkv_bias_from_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Three (heads, head_dim) biases -> (3 * D,)."""
    return torch.cat([t.reshape(-1) for t in (q, k, v)], 0)


def out_from_heads(k: torch.Tensor) -> torch.Tensor:
    """Output kernel (heads, head_dim, D) -> Linear weight (D, heads * head_dim)."""
    return k.reshape(-1, k.shape[-1]).T


def flatten(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


# ---------------------------------------------------------------------------------- layout
def normalise(arrays: Mapping[str, np.ndarray], source: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Strip the prefix, unstack scanned blocks; tensors as float32 torch."""
    keys = list(arrays)
    if prefix is None:
        prefix = next((p for p in PREFIXES if f"{p}embedding/kernel" in arrays), "")
    if f"{prefix}embedding/kernel" not in arrays:
        raise MappingError(f"{source}: no embedding/kernel (looked under {prefix or 'no prefix'!r}); "
                           f"first keys: {', '.join(keys[:5])}")
    out: dict[str, torch.Tensor] = {}
    for key, arr in arrays.items():
        if not key.startswith(prefix):
            raise MappingError(f"{source}: key {key!r} lies outside the model prefix {prefix!r}")
        name = key[len(prefix):]
        if arr.dtype.kind not in "fiu":
            raise MappingError(f"{source}: {key} has dtype {arr.dtype}, not a number")
        t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32))
        if name.startswith("Transformer/encoderblock/"):  # scanned: (L, ...) stacked over blocks
            leaf = name[len("Transformer/encoderblock/"):]
            for i in range(t.shape[0]):
                out[f"Transformer/encoderblock_{i}/{leaf}"] = t[i].clone()
        else:
            out[name] = t
    return out


def _sub_names(state: Mapping[str, torch.Tensor]) -> tuple[str, str, str, str]:
    if any("/MultiHeadDotProductAttention_0/" in k for k in state):  # big_vision numbering
        return "LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"
    return "LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"


def rules(state: Mapping[str, torch.Tensor]) -> tuple[Rule, ...]:
    ln1, mha, ln2, mlp = _sub_names(state)
    b = "Transformer/encoderblock_{i}/"
    a = f"{b}{mha}/"
    pos = "pos_embedding" if "pos_embedding" in state else "Transformer/posembed_input/pos_embedding"
    return (
        Rule("cls_token", "cls", optional=True),
        Rule("pos_embed", pos),
        Rule("patch_embed.proj.weight", "embedding/kernel", hwio_to_oihw),
        Rule("patch_embed.proj.bias", "embedding/bias"),
        Rule("blocks.{i}.norm1.weight", f"{b}{ln1}/scale"),
        Rule("blocks.{i}.norm1.bias", f"{b}{ln1}/bias"),
        Rule("blocks.{i}.attn.qkv.weight", (f"{a}query/kernel", f"{a}key/kernel", f"{a}value/kernel"), qkv_from_heads),
        Rule("blocks.{i}.attn.qkv.bias", (f"{a}query/bias", f"{a}key/bias", f"{a}value/bias"), qkv_bias_from_heads),
        Rule("blocks.{i}.attn.proj.weight", f"{a}out/kernel", out_from_heads),
        Rule("blocks.{i}.attn.proj.bias", f"{a}out/bias"),
        Rule("blocks.{i}.norm2.weight", f"{b}{ln2}/scale"),
        Rule("blocks.{i}.norm2.bias", f"{b}{ln2}/bias"),
        Rule("blocks.{i}.mlp.fc1.weight", f"{b}{mlp}/Dense_0/kernel", dense_to_linear),
        Rule("blocks.{i}.mlp.fc1.bias", f"{b}{mlp}/Dense_0/bias"),
        Rule("blocks.{i}.mlp.fc2.weight", f"{b}{mlp}/Dense_1/kernel", dense_to_linear),
        Rule("blocks.{i}.mlp.fc2.bias", f"{b}{mlp}/Dense_1/bias"),
        Rule("norm.weight", "Transformer/encoder_norm/scale"),
        Rule("norm.bias", "Transformer/encoder_norm/bias"),
        Rule("pre_logits.0.weight", "pre_logits/kernel", dense_to_linear, optional=True),
        Rule("pre_logits.0.bias", "pre_logits/bias", optional=True),
        Rule("head.weight", "head/kernel", dense_to_linear, optional=True),
        Rule("head.bias", "head/bias", optional=True),
    )


def import_state(arrays: Mapping[str, np.ndarray], source: str = "npz", prefix: str | None = None,
                 **known: Any) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """(config, vitlab state) from the arrays of a Google .npz checkpoint."""
    state = normalise(arrays, source, prefix)
    depth = block_depth(state, r"Transformer/encoderblock_(\d+)/")
    ours = to_vitlab(state, rules(state), depth, source)
    if "head.weight" in ours and ours["head.weight"].shape[0] == 0:
        ours.pop("head.weight"), ours.pop("head.bias")
    n_prefix = int("cls_token" in ours)
    q = state[f"Transformer/encoderblock_0/{_sub_names(state)[1]}/query/kernel"]
    if q.ndim != 3:
        raise MappingError(f"{source}: query kernel of shape {tuple(q.shape)}; expected (D, heads, head_dim)")
    if n_prefix and _needs_class_entry(ours, known.get("img_size")):
        pos = ours["pos_embed"]
        ours["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], 1)
    defaults = dict(num_heads=int(q.shape[1]), norm_eps=1e-6, act="gelu_tanh")
    return infer_vit_config(ours, source, **{**defaults, **known}), ours


def _needs_class_entry(ours: Mapping[str, torch.Tensor], img_size: Any) -> bool:
    """True when the table's length is a patch grid by itself (big_vision: no class entry)."""
    from vitlab.weights.convert_timm import _is_grid

    n = ours["pos_embed"].shape[1]
    return _is_grid(n, img_size, ours) and not _is_grid(n - 1, img_size, ours)


def describe(arrays: Mapping[str, np.ndarray]) -> str:
    """A one-line summary (layout, depth) for messages."""
    keys = list(arrays)
    scanned = any(re.search(r"encoderblock/", k) for k in keys)
    return f"{len(keys)} arrays, {'scanned' if scanned else 'per-block'} layout"


# ------------------------------------------------------------ the format table's row (formats.py)
def source_from(arrays: Mapping[str, np.ndarray], source: str, known: Mapping[str, Any]) -> Source:
    """The arrays of a Google .npz checkpoint in vitlab's layout."""
    cfg, state = import_state(arrays, source, **known)
    return Source(cfg, state, [], {})
