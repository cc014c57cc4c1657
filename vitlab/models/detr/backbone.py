"""Backbones: image batch + padding mask -> one feature map + its mask.

Two kinds, one face (``forward(images, mask) -> (features (B, C, h, w), mask (B, h, w))`` and a
``num_channels`` attribute):

* :class:`ResNetBackbone`: a torchvision ResNet (built with ``weights=None``; load weights
  separately) with frozen BatchNorm; the stem and layer1 are frozen too, as in the paper.
* :class:`ViTBackbone`: any vitlab ViT through ``forward_intermediates``; the patch tokens of the
  last block (after the final norm) become a (D, gh, gw) map. A ViT has a fixed input size, so
  the batch is padded up to it (and the mask marks the padding).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from vitlab.errors import ConfigError

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool padding mask -> (B, h, w) by nearest-neighbour sampling."""
    return F.interpolate(mask[None].float(), size=size).to(torch.bool)[0]


class ResNetBackbone(nn.Module):
    """torchvision ResNet up to layer4 (stride 32) with frozen BatchNorm.

    Args:
        name: resnet18 / resnet34 / resnet50 / resnet101.
        train_backbone: if False every backbone weight is frozen; if True layer2-4 train and the
            stem and layer1 stay frozen (the authors' recipe).
    """

    def __init__(self, name: str = "resnet50", train_backbone: bool = True) -> None:
        super().__init__()
        import torchvision

        if name not in RESNETS:
            raise ConfigError(f"unknown ResNet backbone {name!r}; expected one of {', '.join(RESNETS)}")
        net = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        self.body = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
        for pname, p in self.body.named_parameters():
            trainable = train_backbone and pname.split(".")[0] in ("layer2", "layer3", "layer4")
            p.requires_grad_(trainable)
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048
        self.stride = 32

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W), mask (B, H, W) -> features (B, C, H/32, W/32), mask (B, H/32, W/32)."""
        feats = self.body(images)
        return feats, downsample_mask(mask, feats.shape[-2:])


class ViTBackbone(nn.Module):
    """A vitlab ViT as a single-scale backbone (stride = patch size).

    The ViT attends over padded patches too (it has no key mask); the DETR encoder and decoder
    do mask them.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        if not hasattr(vit, "forward_intermediates"):
            raise ConfigError(f"{type(vit).__name__} has no forward_intermediates; cannot be a DETR backbone")
        self.vit = vit
        self.num_channels = vit.embed_dim
        self.img_size = tuple(vit.patch_embed.img_size)
        self.stride = vit.patch_embed.patch_size

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) with H, W <= the ViT's size -> (B, D, gh, gw), mask (B, gh, gw)."""
        H, W = self.img_size
        h, w = images.shape[-2:]
        if h > H or w > W:
            raise ValueError(f"input {h}x{w} is larger than the ViT backbone's {H}x{W}; "
                             f"resize images to at most {H}x{W} (max_size) or build the ViT larger")
        if (h, w) != (H, W):
            images = F.pad(images, (0, W - w, 0, H - h))
            mask = F.pad(mask, (0, W - w, 0, H - h), value=True)
        out = self.vit.forward_intermediates(images, indices=1)
        tokens = out["features"][:, out["num_prefix_tokens"]:]  # (B, gh*gw, D)
        gh, gw = out["grid_size"]
        feats = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)
        return feats, downsample_mask(mask, (gh, gw))


def build_backbone(name: str, args: dict[str, Any], train_backbone: bool = True) -> nn.Module:
    """``resnet*`` -> :class:`ResNetBackbone`; a registered vitlab model name -> :class:`ViTBackbone`."""
    if name in RESNETS:
        if args:
            raise ConfigError(f"backbone_args {sorted(args)} are not used by {name}")
        return ResNetBackbone(name, train_backbone)
    from vitlab.registry import build_model, is_model

    if not is_model(name):
        raise ConfigError(f"unknown backbone {name!r}: expected {', '.join(RESNETS)} or a vitlab model name")
    vit = build_model(name, **{**args, "num_classes": 0})
    return ViTBackbone(vit)
