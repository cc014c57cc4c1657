"""DETR: detection as direct set prediction (Carion et al. 2020, "End-to-End Object Detection
with Transformers").

backbone -> 1x1 projection to the model width -> + sine position encodings -> Transformer
encoder-decoder with ``num_queries`` learned object queries -> per slot a class head
(``num_classes + 1`` logits, the last one "no object") and a 3-layer box MLP with a sigmoid
(normalised cx, cy, w, h of the unpadded image). Every decoder layer is read out by the same heads
for the auxiliary losses.

:class:`DetrConfig` is what checkpoints store; :func:`build_detr` is its only reader.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.models.detr.backbone import build_backbone
from vitlab.models.detr.position_encoding import PositionEmbeddingSine
from vitlab.models.detr.transformer import Transformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetrConfig:
    """Everything needed to rebuild a DETR (paper defaults; R50 backbone)."""

    num_classes: int = 91  # the authors' COCO head: max category id + 1
    num_queries: int = 100
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    aux_loss: bool = True
    backbone: str = "resnet50"  # resnet18/34/50/101 or a registered vitlab ViT name
    backbone_args: dict[str, Any] = field(default_factory=dict)  # overrides for a ViT backbone
    train_backbone: bool = True
    # Preprocessing the model expects; travels with checkpoints so eval / predict need nothing else.
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    min_size: int = 800  # eval resize: shorter side
    max_size: int = 1333  # eval resize: cap on the longer side
    # Remedies for DETR's slow convergence; the defaults are the original DETR (HF parity).
    anchor_queries: bool = False  # DAB-DETR anchor boxes + iterative refinement (anchor_decoder.py)
    class_head: str = "softmax"  # "sigmoid": one logit per class, focal loss and cost (Deformable DETR)

    def validate(self) -> None:
        if self.hidden_dim % self.nheads:
            raise ConfigError(f"hidden_dim {self.hidden_dim} is not divisible by nheads {self.nheads}")
        if self.hidden_dim % 4:
            raise ConfigError(f"hidden_dim must be divisible by 4 for sine encodings, got {self.hidden_dim}")
        for name in ("num_classes", "num_queries", "enc_layers", "dec_layers"):
            if getattr(self, name) < (0 if name == "enc_layers" else 1):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.class_head not in ("softmax", "sigmoid"):
            raise ConfigError(f"class_head must be 'softmax' or 'sigmoid', got {self.class_head!r}")
        if self.min_size < 1 or self.max_size < self.min_size:
            raise ConfigError(f"need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}")

    def replace(self, **overrides: Any) -> DetrConfig:
        """A copy with fields overridden; unknown names raise ConfigError listing the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown DETR option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        fixed = dict(overrides)
        for key in ("mean", "std"):
            if key in fixed:
                fixed[key] = tuple(fixed[key])
        if "backbone_args" in fixed:
            fixed["backbone_args"] = dict(fixed["backbone_args"] or {})
        return dataclasses.replace(self, **fixed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetrConfig:
        return cls().replace(**data)


class MLP(nn.Module):
    """Linear-ReLU stack: ``num_layers`` linears, ReLU between them (the box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class DETR(nn.Module):
    """DETR with an injected backbone, position encoding and transformer.

    Args:
        backbone: module ``(images, mask) -> (features, mask)`` with a ``num_channels`` attribute.
        position_encoding: module ``mask -> (B, D, h, w)``.
        transformer: :class:`Transformer`.
        num_classes: object classes (the head has one more, "no object", last).
        num_queries: object slots, the most objects one image can get.
        aux_loss: also read out every decoder layer (``aux_outputs``).
    """

    def __init__(self, backbone: nn.Module, position_encoding: nn.Module, transformer: Transformer,
                 num_classes: int, num_queries: int, aux_loss: bool = True, class_head: str = "softmax") -> None:
        super().__init__()
        d = transformer.d_model
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.aux_loss = aux_loss
        self.class_head = class_head
        self.backbone = backbone
        self.position_encoding = position_encoding
        self.input_proj = nn.Conv2d(backbone.num_channels, d, kernel_size=1)
        self.transformer = transformer
        if transformer.anchor_queries:
            self.refpoint_embed = nn.Embedding(num_queries, 4)
        else:
            self.query_embed = nn.Embedding(num_queries, d)
        self.class_embed = nn.Linear(d, num_classes + (class_head == "softmax"))
        self.bbox_embed = MLP(d, d, 4, 3)
        if class_head == "sigmoid":
            # Deformable DETR's prior: every class starts at probability 0.01, so the focal loss
            # of the many empty slots does not swamp the first steps.
            nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))
        if transformer.anchor_queries:
            _init_anchors(self.refpoint_embed.weight, self.bbox_embed)
        self.config: DetrConfig | None = None  # set by build_detr

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                return_attn: bool = False) -> dict[str, Any]:
        """Detect objects.

        Args:
            images: (B, 3, H, W) normalised, zero-padded batch.
            mask: (B, H, W) bool, True on padding (None: no padding).
            return_attn: also return the last decoder layer's cross-attention.

        Returns:
            ``pred_logits`` (B, Q, num_classes + 1) with the softmax head, (B, Q, num_classes)
            with the sigmoid head; ``pred_boxes`` (B, Q, 4) normalised cxcywh;
            ``aux_outputs``: for decoder layers 0..L-2, dicts with the same two keys (empty list
            when aux_loss is off); ``cross_attn``: (B, Q, h*w) or None; ``feature_size``: (h, w);
            ``class_head``: "softmax" or "sigmoid" (how to read the logits).
        """
        if mask is None:
            mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        feats, fmask = self.backbone(images, mask)
        pos = self.position_encoding(fmask, feats.dtype).to(feats.dtype)
        if self.transformer.anchor_queries:
            out = self.transformer(self.input_proj(feats), fmask, self.refpoint_embed.weight, pos, return_attn,
                                   box_head=self.bbox_embed)
            boxes = out["boxes"]  # (L, B, Q, 4), refined layer by layer
        else:
            out = self.transformer(self.input_proj(feats), fmask, self.query_embed.weight, pos, return_attn)
            boxes = self.bbox_embed(out["hs"]).sigmoid()
        logits = self.class_embed(out["hs"])  # hs: (L, B, Q, D)
        aux = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])] if self.aux_loss else []
        return {"pred_logits": logits[-1], "pred_boxes": boxes[-1], "aux_outputs": aux,
                "cross_attn": out["cross_attn"], "feature_size": tuple(feats.shape[-2:]), "class_head": self.class_head}


def _init_anchors(weight: torch.Tensor, bbox_embed: MLP) -> None:
    """Anchors (Q, 4) as logits: centres uniform over the image, sides 0.25 of it; the box head's
    last layer at zero, so the first predictions are the anchors themselves (DAB-DETR)."""
    with torch.no_grad():
        weight[:, :2].uniform_(0.02, 0.98).logit_()
        weight[:, 2:].fill_(math.log(0.25 / 0.75))
    nn.init.zeros_(bbox_embed.layers[-1].weight)
    nn.init.zeros_(bbox_embed.layers[-1].bias)


def build_detr(cfg: DetrConfig) -> DETR:
    """Construct a :class:`DETR` from a config; the only reader of DetrConfig."""
    cfg.validate()
    backbone = build_backbone(cfg.backbone, dict(cfg.backbone_args), cfg.train_backbone)
    transformer = Transformer(cfg.hidden_dim, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward, cfg.dropout,
                              cfg.anchor_queries)
    model = DETR(backbone, PositionEmbeddingSine(cfg.hidden_dim // 2, normalize=True), transformer,
                 cfg.num_classes, cfg.num_queries, cfg.aux_loss, cfg.class_head)
    model.config = cfg
    return model


# name -> config overrides. The paper's model, and small ones that train on a CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "detr_resnet50": {},
    "detr_resnet101": {"backbone": "resnet101"},
    "detr_resnet18_small": {"backbone": "resnet18", "hidden_dim": 128, "dim_feedforward": 512,
                            "enc_layers": 3, "dec_layers": 3, "min_size": 384, "max_size": 512},
    # A ViT-S/16 backbone at 512x512 (pad to it; images resized to max_size 512).
    "detr_vit_small_patch16_512": {"backbone": "vit_small_patch16_224", "backbone_args": {"img_size": 512},
                                   "min_size": 448, "max_size": 512},
    # CPU benchmark on real photos (tiny_coco): a 3-block ViT, patch 16, images up to 192x192.
    "detr_vit_tiny_192": {"backbone": "vit_pico_patch4_32",
                          "backbone_args": {"img_size": 192, "patch_size": 16, "depth": 3, "embed_dim": 128,
                                            "num_heads": 4, "mlp_dim": 256, "pos_embed": "sincos"},
                          "hidden_dim": 128, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 512,
                          "num_queries": 40, "min_size": 192, "max_size": 192},
    # CPU demo / tests: a 2-block ViT with patch 8 (8x8 tokens) on images up to 64x64.
    "detr_vit_pico_64": {"backbone": "vit_pico_patch4_32",
                         "backbone_args": {"img_size": 64, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4,
                                           "mlp_dim": 128, "pos_embed": "sincos"},
                         "hidden_dim": 64, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 128,
                         "num_queries": 10, "dropout": 0.0, "min_size": 64, "max_size": 64,
                         "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    # The same at 128x128 (16x16 tokens), 20 queries.
    "detr_vit_pico_128": {"backbone": "vit_pico_patch4_32",
                          "backbone_args": {"img_size": 128, "patch_size": 8, "depth": 2, "pos_embed": "sincos"},
                          "hidden_dim": 64, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 128,
                          "num_queries": 20, "dropout": 0.0, "min_size": 128, "max_size": 128,
                          "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}


def list_detr_models() -> list[str]:
    return sorted(PRESETS)


def create_detr(name: str, **overrides: Any) -> DETR:
    """Build a DETR preset with config overrides (e.g. ``num_classes``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown DETR model {name!r}; known: {', '.join(sorted(PRESETS))}")
    model = build_detr(DetrConfig().replace(**PRESETS[name]).replace(**overrides))
    model.model_name = name
    return model
