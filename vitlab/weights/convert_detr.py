"""Weights from other DETR implementations, as pure key maps with checks (DESIGN rule 4).

* The authors' layout (facebookresearch/detr, ``detr-r50-*.pth``: ``{"model": state_dict}``):
  vitlab's module names follow theirs, so the map is one prefix (``backbone.0.body.`` ->
  ``backbone.body.``); :func:`load_authors_checkpoint` reads the file with
  ``torch.load(weights_only=True)`` (plain tensors only; files that also pickle their argparse
  arguments are refused with a message saying how to re-save them) and infers the config.
* Hugging Face transformers' ``DetrForObjectDetection``: separate q/k/v projections are
  concatenated into ``in_proj_*``; the backbone is a timm ResNet (torchvision's layout) or an HF
  ``ResNetBackbone`` (``embedder`` / ``encoder.stages``), both mapped onto torchvision's names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitlab.errors import CheckpointError
from vitlab.models.detr.detr import DETR, DetrConfig, build_detr
from vitlab.weights.vitlab_format import load_state_checked

# ----------------------------------------------------------------------------------- authors
_AUTHORS_BACKBONE = "backbone.0.body."
_VITLAB_BACKBONE = "backbone.body."


def authors_to_vitlab(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' DETR state dict -> vitlab DETR keys (tensors are shared, not copied)."""
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue  # frozen BatchNorm has no counter
        out[_VITLAB_BACKBONE + k[len(_AUTHORS_BACKBONE):] if k.startswith(_AUTHORS_BACKBONE) else k] = v
    return out


def vitlab_to_authors(state: Mapping[str, torch.Tensor], class_head: str = "softmax") -> dict[str, torch.Tensor]:
    """Inverse of :func:`authors_to_vitlab` (ResNet backbones only): the original DETR's layout.

    The original DETR has neither anchor queries (``anchor_queries``: ``refpoint_embed``) nor a
    sigmoid class head (``class_head``, which the state alone cannot show: its ``class_embed`` has
    no "no object" row, and the authors' code would read its last class as one); both are refused.
    """
    if "refpoint_embed.weight" in state:
        raise CheckpointError("an anchor-query DETR (anchor_queries: refpoint_embed) has no counterpart in the "
                              "original DETR's layout")
    if class_head != "softmax":
        raise CheckpointError(f"a {class_head!r} class head has no counterpart in the original DETR's layout "
                              "(softmax with a 'no object' class)")
    return {(_AUTHORS_BACKBONE + k[len(_VITLAB_BACKBONE):] if k.startswith(_VITLAB_BACKBONE) else k): v
            for k, v in state.items()}


def _resnet_name(state: Mapping[str, torch.Tensor], prefix: str) -> str:
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"layer3\.(\d+)\.", k))}
    bottleneck = any(k.startswith(prefix + "layer1.0.conv3.") for k in state)
    names = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101"}
    key = (bottleneck, len(blocks))
    if key not in names:
        raise CheckpointError(f"unrecognised ResNet backbone ({len(blocks)} blocks in layer3, bottleneck={bottleneck})")
    return names[key]


def _count(state: Mapping[str, Any], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def config_from_authors(state: Mapping[str, torch.Tensor], nheads: int = 8, **overrides: Any) -> DetrConfig:
    """Infer the DetrConfig of an authors'-layout state dict (heads cannot be inferred: default 8)."""
    try:
        return DetrConfig(
            num_classes=state["class_embed.weight"].shape[0] - 1,
            num_queries=state["query_embed.weight"].shape[0],
            hidden_dim=state["query_embed.weight"].shape[1],
            nheads=nheads,
            enc_layers=_count(state, r"transformer\.encoder\.layers\.(\d+)\."),
            dec_layers=_count(state, r"transformer\.decoder\.layers\.(\d+)\."),
            dim_feedforward=state["transformer.decoder.layers.0.linear1.weight"].shape[0],
            backbone=_resnet_name(state, _AUTHORS_BACKBONE),
        ).replace(**overrides)
    except KeyError as err:
        raise CheckpointError(f"not an authors'-layout DETR state dict: missing {err}") from None


def load_authors_checkpoint(path: str | Path, nheads: int = 8, **overrides: Any) -> DETR:
    """Build a vitlab DETR from the authors' ``.pth`` (``{"model": state_dict}``)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except Exception as err:  # noqa: BLE001 - torch raises several types for non-plain pickles
        raise CheckpointError(f"{path}: cannot be read with weights_only=True ({str(err).splitlines()[0][:200]}); "
                              "if it also stores training args, re-save only checkpoint['model'] "
                              "where you trust the file") from None
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict")
    model = build_detr(config_from_authors(state, nheads, **overrides))
    load_state_checked(model, authors_to_vitlab(state), str(path))
    return model


# ------------------------------------------------------------------------- Hugging Face
_HF_TRANSFORMER = [  # (HF pattern, vitlab replacement); applied after the backbone prefix is handled
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
    (r"^model\.decoder\.layernorm\.", "transformer.decoder.norm."),
    (r"^model\.(encoder|decoder)\.layers\.(\d+)\.", r"transformer.\1.layers.\2."),
    (r"\.encoder_attn_layer_norm\.", ".norm2."),
    (r"\.encoder_attn\.", ".multihead_attn."),
    (r"\.(mlp\.)?fc1\.", ".linear1."),
    (r"\.(mlp\.)?fc2\.", ".linear2."),
    (r"\.(o_proj|out_proj)\.", ".out_proj."),
]


def _hf_layer_norms(key: str) -> str:
    # self_attn_layer_norm -> norm1 everywhere; final_layer_norm -> norm2 (encoder) / norm3 (decoder)
    key = key.replace(".self_attn_layer_norm.", ".norm1.")
    if ".final_layer_norm." in key:
        key = key.replace(".final_layer_norm.", ".norm3." if ".decoder." in key else ".norm2.")
    return key


def _hf_resnet_key(rest: str) -> str | None:
    """HF ResNetBackbone names (after ``model.backbone.model.``) -> torchvision names."""
    if rest.startswith("embedder.embedder."):
        return rest.replace("embedder.embedder.convolution.", "conv1.").replace("embedder.embedder.normalization.", "bn1.")
    m = re.match(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(shortcut|layer\.(\d+))\.(convolution|normalization)\.(.+)", rest)
    if not m:
        return None
    stage, block, kind, idx, part, leaf = m.groups()
    base = f"layer{int(stage) + 1}.{block}."
    if kind == "shortcut":
        return base + f"downsample.{0 if part == 'convolution' else 1}.{leaf}"
    return base + f"{'conv' if part == 'convolution' else 'bn'}{int(idx) + 1}.{leaf}"


def hf_to_vitlab(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``DetrForObjectDetection.state_dict()`` -> vitlab DETR keys; q/k/v are concatenated."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        m = re.match(r"^model\.backbone\.(?:conv_encoder\.)?model\.(.+)$", k)
        if m:
            rest = m.group(1)
            name = _hf_resnet_key(rest) if rest.startswith(("embedder.", "encoder.")) else rest
            if name is None:
                unknown.append(k)
                continue
            out[_VITLAB_BACKBONE + name] = v
            continue
        new = k
        for pat, rep in _HF_TRANSFORMER:
            new = re.sub(pat, rep, new)
        new = _hf_layer_norms(new)
        m = re.match(r"^(.*\.(?:self_attn|multihead_attn))\.([qkv])_proj\.(weight|bias)$", new)
        if m:
            qkv.setdefault(f"{m.group(1)}.in_proj_{m.group(3)}", {})[m.group(2)] = v
            continue
        if new == k:
            unknown.append(k)
            continue
        out[new] = v
    if unknown:
        raise CheckpointError(f"{len(unknown)} Hugging Face DETR key(s) have no vitlab name, e.g. {', '.join(unknown[:3])}")
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{name}: found only {sorted(parts)} of the q/k/v projections")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


def config_from_hf(hf_config: Any, **overrides: Any) -> DetrConfig:
    """A transformers ``DetrConfig`` -> vitlab :class:`DetrConfig` (ResNet backbones only)."""
    c = hf_config
    if c.encoder_attention_heads != c.decoder_attention_heads or c.encoder_ffn_dim != c.decoder_ffn_dim:
        raise CheckpointError("vitlab's DETR uses the same heads and FFN width in encoder and decoder")
    if getattr(c, "position_embedding_type", "sine") != "sine" or getattr(c, "dilation", False):
        raise CheckpointError("only sine position embeddings without dilation (DC5) are supported")
    bb = c.backbone_config
    if getattr(bb, "model_type", None) == "timm_backbone":
        backbone = bb.backbone
    else:
        kind = (getattr(bb, "layer_type", None), tuple(getattr(bb, "depths", ())))
        names = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                 ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101"}
        if kind not in names or getattr(bb, "downsample_in_bottleneck", False):
            raise CheckpointError(f"unsupported HF backbone {getattr(bb, 'model_type', bb)!r} {kind}")
        backbone = names[kind]
    return DetrConfig(num_classes=c.num_labels, num_queries=c.num_queries, hidden_dim=c.d_model,
                      nheads=c.encoder_attention_heads, enc_layers=c.encoder_layers, dec_layers=c.decoder_layers,
                      dim_feedforward=c.encoder_ffn_dim, dropout=float(c.dropout), backbone=backbone).replace(**overrides)


def from_hf(hf_model: Any, **overrides: Any) -> DETR:
    """A vitlab DETR with the weights of a transformers ``DetrForObjectDetection``."""
    model = build_detr(config_from_hf(hf_model.config, **overrides))
    load_state_checked(model, hf_to_vitlab(hf_model.state_dict()), type(hf_model).__name__)
    return model
