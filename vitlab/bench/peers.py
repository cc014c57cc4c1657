"""The models under test: vitlab's and the same architecture built by each installed peer library.

Each peer is built from its own library's description of the architecture (timm's
``VisionTransformer``, transformers' ``ViTForImageClassification`` with its default SDPA attention,
torchvision's ``VisionTransformer``), then given vitlab's weights through vitlab's exporters, and
checked to compute the same logits on a random batch, so every row times the same function.
A peer that is not installed, or cannot express the architecture, is skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vitlab.api import create_model
from vitlab.errors import ConfigError
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError

FRAMEWORKS = ("vitlab", "timm", "hf", "torchvision")
_PACKAGES = {"timm": "timm", "hf": "transformers", "torchvision": "torchvision"}


@dataclass
class Entry:
    """One library's model: ``logits(images (B, C, H, W)) -> (B, num_classes)``; ``check`` says it matches vitlab."""

    name: str
    model: nn.Module
    logits: Callable[[torch.Tensor], torch.Tensor]
    check: str


def _timm(cfg: ViTConfig, vitlab_model: nn.Module) -> tuple[nn.Module, Callable]:
    from vitlab.weights.convert_timm import build_timm, export_state

    peer = build_timm(cfg)
    peer.load_state_dict(export_state(vitlab_model))
    return peer, peer


def _hf(cfg: ViTConfig, vitlab_model: nn.Module) -> tuple[nn.Module, Callable]:
    from vitlab.weights.convert_hf import build_hf, check_exportable, rules_in_memory
    from vitlab.weights.keymap import from_vitlab

    check_exportable(cfg)
    peer = build_hf(cfg)
    # transformers 5 names its modules (layers.{i}.attention.q_proj) unlike its files; map to those
    peer.load_state_dict(from_vitlab(vitlab_model.state_dict(), rules_in_memory("vit."), cfg.depth, "hf"))
    return peer, lambda x: peer(pixel_values=x).logits


def _torchvision(cfg: ViTConfig, vitlab_model: nn.Module) -> tuple[nn.Module, Callable]:
    from vitlab.weights.convert_torchvision import build_torchvision, export_state

    peer = build_torchvision(cfg)
    peer.load_state_dict(export_state(vitlab_model))
    return peer, peer


_BUILDERS = {"timm": _timm, "hf": _hf, "torchvision": _torchvision}


def check_frameworks(frameworks: Sequence[str]) -> None:
    """ConfigError naming ``--frameworks`` for an unknown name."""
    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if unknown or "vitlab" not in frameworks:
        raise ConfigError(f"--frameworks: {', '.join(unknown) or 'vitlab missing'}; choose from {', '.join(FRAMEWORKS)} "
                          "(vitlab is always included)")


def build_entries(name: str, frameworks: Sequence[str], device: torch.device, seed: int = 0) -> tuple[list[Entry], list[str]]:
    """vitlab's ``name`` (random weights from ``seed``) and each requested peer holding the same weights.

    Returns:
        (entries in ``frameworks`` order, notes on the peers skipped and why).
    """
    torch.manual_seed(seed)
    ours = create_model(name).eval()
    head = getattr(ours, "head", None)
    if isinstance(head, nn.Linear):  # a zero-initialised head would make every logit 0 and the check below empty
        nn.init.normal_(head.weight, std=0.02)
    entries = [Entry("vitlab", ours, ours, "reference")]
    notes: list[str] = []
    for fw in frameworks:
        if fw == "vitlab":
            continue
        try:
            peer, logits = _BUILDERS[fw](ours.config, ours)
        except ImportError:
            notes.append(f"{fw}: {_PACKAGES[fw]} is not installed; skipped")
            continue
        except (MappingError, RuntimeError, ValueError) as err:
            notes.append(f"{fw}: cannot build {name} ({str(err).splitlines()[0]}); skipped")
            continue
        entries.append(Entry(fw, peer.eval(), logits, ""))
    for entry in entries:
        entry.model.to(device)
    _check_same_function(entries, ours.config, device)
    return entries, notes


@torch.no_grad()
def _check_same_function(entries: list[Entry], cfg: ViTConfig, device: torch.device) -> None:
    # The peers hold vitlab's weights; their logits on one random batch must agree (fp32 rounding
    # apart), else the bench would be timing different functions.
    x = torch.rand(2, cfg.in_chans, *cfg.img_size, device=device) * 2 - 1
    ref = entries[0].logits(x).float()
    for entry in entries[1:]:
        diff = (entry.logits(x).float() - ref).abs().max().item()
        if not diff <= 1e-3 * max(1.0, ref.abs().max().item()):
            raise RuntimeError(f"bench: {entry.name}'s {type(entry.model).__name__} differs from vitlab's model "
                               f"by {diff:.3g} on the same weights; the timings would compare different functions")
        entry.check = f"same weights as vitlab: max |logit diff| {diff:.1e} (logits up to {ref.abs().max().item():.2f})"
