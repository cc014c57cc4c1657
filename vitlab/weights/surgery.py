"""Model surgery on weights: new resolution, new patch size, new number of classes.

Each function changes the model in place only after every check has passed, keeps the model's
config in step, and returns a small record (what was done, how) that callers store with the
weights (``info["surgery"]`` of a vitlab checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers import to_2tuple
from vitlab.layers.patch_embed import PatchEmbed, grid_for
from vitlab.layers.pos_embed import resample_pos_embed as _resample
from vitlab.weights.errors import MappingError

log = logging.getLogger("vitlab.weights")

PosMethod = Literal["bicubic-aa", "bicubic", "bilinear", "nearest"]
POS_METHODS: tuple[str, ...] = ("bicubic-aa", "bicubic", "bilinear", "nearest")


def _mode(method: str) -> tuple[str, bool]:
    if method not in POS_METHODS:
        raise MappingError(f"unknown resampling method {method!r}; choose from {', '.join(POS_METHODS)}")
    return ("bicubic", True) if method == "bicubic-aa" else (method, False)


def resample_pos_embed(pos: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], num_prefix_tokens: int,
                       method: PosMethod = "bicubic-aa", align_corners: bool = False) -> torch.Tensor:
    """(1, prefix + gh*gw, D) -> (1, prefix + gh'*gw', D); prefix (class / dist) entries kept as they are."""
    mode, aa = _mode(method)
    return _resample(pos, tuple(new_grid), tuple(old_grid), num_prefix_tokens, mode, aa, align_corners)


def _set_config(model: nn.Module, **changes: Any) -> None:
    if getattr(model, "config", None) is not None:
        model.config = dataclasses.replace(model.config, **changes)


def set_resolution(model: nn.Module, img_size: int | tuple[int, int], method: PosMethod = "bicubic-aa",
                   align_corners: bool = False) -> dict[str, Any]:
    """Run ``model`` at ``img_size``: resample its learned position table; returns the record."""
    img_size = to_2tuple(img_size)
    old_grid = model.patch_embed.grid_size
    try:
        new_grid = grid_for(img_size, model.patch_embed.patch_size)
    except ValueError as err:
        raise MappingError(str(err)) from None
    record = {"op": "resample_pos_embed", "from_grid": list(old_grid), "to_grid": list(new_grid), "method": method,
              "align_corners": align_corners, "img_size": list(img_size)}
    if model.pos_embed is not None:
        with torch.no_grad():
            new = resample_pos_embed(model.pos_embed.data, new_grid, old_grid, model.num_prefix_tokens, method, align_corners)
        model.pos_embed = nn.Parameter(new, requires_grad=model.pos_embed.requires_grad)
        model.patch_embed.set_input_size(img_size)
        _set_config(model, img_size=img_size)
    else:
        model.set_input_size(img_size)  # fixed tables are recomputed
    return record


# ------------------------------------------------------------------------------- patch size
def _resize_matrix(old: tuple[int, int], new: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    """(new_h*new_w, old_h*old_w): the linear map 'resize an old-size patch to the new size'."""
    eye = torch.eye(old[0] * old[1], dtype=torch.float64).reshape(-1, 1, *old)
    kw = {"antialias": antialias, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(eye, size=new, mode=mode, **kw)  # each basis patch, resized
    return out.reshape(old[0] * old[1], -1).T


def resample_patch_kernel(weight: torch.Tensor, new_size: int | tuple[int, int], method: PosMethod = "bicubic-aa") -> torch.Tensor:
    """FlexiViT's pseudo-inverse resize (Beyer et al. 2023, Eq. 4) of a (D, C, p, p) patch kernel.

    Finds w' with <resize(x), w'> = <x, w> for every old-size patch x (least squares when
    shrinking): w' = pinv(R^T) w, R the resize matrix. Upsampled inputs then give the old tokens.
    """
    new = to_2tuple(new_size)
    old = tuple(weight.shape[-2:])
    if new == old:
        return weight
    mode, aa = _mode(method)
    mat = _resize_matrix(old, new, mode, aa)  # (new², old²)
    pinv = torch.linalg.pinv(mat.T)  # (new², old²)
    flat = weight.detach().to(torch.float64).reshape(-1, old[0] * old[1])  # (D*C, old²)
    return (flat @ pinv.T).reshape(*weight.shape[:2], *new).to(weight.dtype)


def set_patch_size(model: nn.Module, patch_size: int, method: PosMethod = "bicubic-aa") -> dict[str, Any]:
    """New patch size at the same image size: pseudo-inverse kernel resize, position table resampled."""
    embed = model.patch_embed
    if not isinstance(embed, PatchEmbed):
        raise MappingError(f"patch-size change needs a linear patch stem, not {type(embed).__name__}")
    img = embed.img_size
    try:
        new_grid = grid_for(img, patch_size)
    except ValueError as err:
        raise MappingError(str(err)) from None
    old_patch, old_grid = embed.patch_size, embed.grid_size
    w = resample_patch_kernel(embed.proj.weight.data, patch_size, method)
    pos = None
    if model.pos_embed is not None:
        pos = resample_pos_embed(model.pos_embed.data, new_grid, old_grid, model.num_prefix_tokens, method)
    proj = nn.Conv2d(w.shape[1], w.shape[0], patch_size, patch_size, bias=embed.proj.bias is not None,
                     device=w.device, dtype=w.dtype)
    with torch.no_grad():
        proj.weight.copy_(w)
        if embed.proj.bias is not None:
            proj.bias.copy_(embed.proj.bias)
    embed.proj, embed.patch_size, embed.grid_size = proj, patch_size, new_grid
    if pos is not None:
        model.pos_embed = nn.Parameter(pos)
    _set_config(model, patch_size=patch_size)
    return {"op": "resample_patch_embed", "from_patch": old_patch, "to_patch": patch_size, "method": method}


# ---------------------------------------------------------------------------------- classes
def change_num_classes(model: nn.Module, num_classes: int) -> dict[str, Any]:
    """Re-initialise the head(s) for ``num_classes``; logs and returns the dropped keys with shapes."""
    dropped = {k: list(v.shape) for k, v in model.state_dict().items() if k.split(".")[0] in ("head", "head_dist")}
    model.reset_classifier(num_classes)
    if dropped:
        log.warning("new head for %d classes; dropped %s", num_classes, ", ".join(f"{k} {tuple(s)}" for k, s in dropped.items()))
    return {"op": "reset_classifier", "num_classes": num_classes, "dropped": dropped}


# ------------------------------------------------------------------------------------ audit
def smooth_images(n: int, chans: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Image-like test inputs: coarse noise upsampled bicubically (natural images are smooth)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, chans, max(2, size[0] // 8), max(2, size[1] // 8), generator=g)
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)


@torch.no_grad()
def audit_resolution(model: nn.Module, img_size: int | tuple[int, int], methods: tuple[str, ...] = POS_METHODS,
                     images: torch.Tensor | None = None, align_corners: bool = False) -> list[dict[str, Any]]:
    """How the logits move when ``model`` runs at ``img_size``, for each resampling method.

    The same images are fed at the model's size and, resized bicubically, at the new size; each
    row reports the largest / mean absolute logit change and the top-1 agreement.
    """
    model = model.eval()
    base_size = model.patch_embed.img_size
    x = images if images is not None else smooth_images(8, model.patch_embed.proj.in_channels if hasattr(model.patch_embed, "proj") else 3, base_size)
    ref = model(x)
    x_new = F.interpolate(x, size=to_2tuple(img_size), mode="bicubic", align_corners=False, antialias=True)
    rows = []
    for method in methods:
        m = copy.deepcopy(model)
        set_resolution(m, img_size, method, align_corners)  # type: ignore[arg-type]
        out = m(x_new)
        diff = (out - ref).abs()
        rows.append({"method": method, "max_abs": diff.max().item(), "mean_abs": diff.mean().item(),
                     "top1_agree": (out.argmax(-1) == ref.argmax(-1)).float().mean().item()})
    return rows
