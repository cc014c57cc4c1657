"""Run weights in their own ecosystem: the check behind ``vitlab convert --verify``.

:func:`peer_forward` loads a file with the library it came from (timm, transformers,
torchvision; vitlab itself for vitlab files; timm's own .npz loader for Google checkpoints) and
returns ``images -> logits``. Which library runs which format is the ``peer`` of each record in
:mod:`vitlab.weights.formats`. Comparing source and result this way tests the conversion against
an implementation that shares none of its key map.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

import vitlab.weights.formats as formats
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.source import Forward

__all__ = ["Forward", "compare", "peer_forward"]


def peer_forward(fmt: str, path: str | Path, cfg: ViTConfig) -> Forward:
    """``images -> logits`` of the file at ``path`` run by its own library; ``cfg`` describes its architecture."""
    record = formats.FORMATS.get(fmt)
    if record is None or record.peer is None:
        why = f" here ({record.no_peer_why})" if record is not None and record.no_peer_why else ""
        raise MappingError(f"no peer library to run {fmt!r} files with{why}")
    return record.peer(Path(path), cfg)


@torch.no_grad()
def compare(source: Forward, result: Forward, src_cfg: ViTConfig, dst_cfg: ViTConfig, n: int = 4, seed: int = 0) -> dict:
    """Largest absolute logit difference and top-1 agreement of two runs on the same random images.

    When the resolution changed, the result sees the images resized (bicubic) to its size.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, src_cfg.in_chans, *src_cfg.img_size, generator=g)
    y = x if dst_cfg.img_size == src_cfg.img_size else F.interpolate(x, size=dst_cfg.img_size, mode="bicubic", antialias=True)
    a, b = source(x).float(), result(y).float()
    if a.shape != b.shape:
        raise MappingError(f"cannot compare outputs of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return {"max_abs_diff": (a - b).abs().max().item(), "top1_agree": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
            "resized": dst_cfg.img_size != src_cfg.img_size}
