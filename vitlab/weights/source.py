"""What every weight reader yields, and what every peer runner returns (shared by the converters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from vitlab.models.vit_config import ViTConfig

# images (N, C, H, W) -> logits (N, classes) or features (N, D)
Forward = Callable[[torch.Tensor], torch.Tensor]


class Source(NamedTuple):
    """Weights read from any format, already in vitlab's layout.

    ``config`` is the architecture at the weights' native size; ``class_names`` is empty when the
    file names no classes; ``info`` carries what the conversion noticed (e.g. skipped keys).
    """

    config: ViTConfig
    state: dict[str, torch.Tensor]
    class_names: list[str]
    info: dict[str, Any]
