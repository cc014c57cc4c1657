"""Run weights in their own ecosystem: the check behind ``vitlab convert --verify``.

:func:`peer_forward` loads a file with the library it came from (timm, transformers,
torchvision; vitlab itself for vitlab files; timm's own .npz loader for Google checkpoints) and
returns ``images -> logits``. Comparing source and result this way tests the conversion against
an implementation that shares none of its key map.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError

Forward = Callable[[torch.Tensor], torch.Tensor]


def peer_forward(fmt: str, path: str | Path, cfg: ViTConfig) -> Forward:
    """``images -> logits`` of the file at ``path`` run by its own library; ``cfg`` describes its architecture."""
    path = Path(path)
    if fmt == "vitlab":
        from vitlab.weights.rebuild import load_checkpoint

        model = load_checkpoint(path).model.eval()
        return model
    if fmt in ("timm", "npz"):
        from vitlab.weights.convert_timm import build_timm

        model = build_timm(cfg).eval()
        if fmt == "npz":
            from timm.models.vision_transformer import _load_weights

            _load_weights(model, str(path))
        else:
            from vitlab.weights.io import read_safetensors, read_torch

            state = read_safetensors(path)[0] if path.suffix == ".safetensors" else read_torch(path)
            model.load_state_dict(state, strict=True)
        return model
    if fmt == "torchvision":
        from vitlab.weights.convert_torchvision import build_torchvision
        from vitlab.weights.io import read_torch

        model = build_torchvision(cfg).eval()
        model.load_state_dict(read_torch(path), strict=True)
        return model
    if fmt == "hf":
        import transformers

        model = transformers.AutoModel.from_pretrained(path) if not cfg.num_classes else \
            transformers.ViTForImageClassification.from_pretrained(path)
        model = model.eval()
        if cfg.num_classes:
            return lambda x: model(pixel_values=x).logits
        return lambda x: model(pixel_values=x).pooler_output if cfg.representation_size else model(pixel_values=x).last_hidden_state[:, 0]
    raise MappingError(f"no peer library to run {fmt!r} files with here (mindcv needs MindSpore)" if fmt == "mindspore"
                       else f"no peer library to run {fmt!r} files with")


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
