"""Analyses of the weights alone (ViT paper, Fig. 7 left and centre): no images needed."""

from __future__ import annotations

import torch
from torch import nn

from vitlab.analysis.layout import layout_of
from vitlab.errors import ConfigError


def position_embedding_similarity(model: nn.Module) -> torch.Tensor:
    """(gh, gw, gh, gw): cosine similarity of each patch position's embedding with every other's.

    ``sim[r, c]`` is the (gh, gw) map of position (r, c) against the whole grid (prefix tokens
    excluded). Learned embeddings of a trained ViT show row / column structure and locality.
    """
    layout = layout_of(model)
    pos = getattr(model, "pos_embed", None)
    if pos is None:
        if getattr(model, "pos_embed_type", None) == "none":
            raise ConfigError(f"{type(model).__name__} has no position embedding (pos_embed='none')")
        pos = getattr(model, "pos_embed_fixed", None)
    if pos is None:
        raise ConfigError(f"{type(model).__name__} has no pos_embed to analyse")
    table = pos.detach().double().reshape(-1, pos.shape[-1])
    if table.shape[0] != layout.num_tokens:
        raise ConfigError(f"pos_embed has {table.shape[0]} rows for {layout.num_tokens} tokens")
    unit = nn.functional.normalize(table[layout.num_prefix:], dim=-1)
    return (unit @ unit.T).reshape(*layout.grid, *layout.grid).float()


def patch_embedding_components(model: nn.Module, k: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """The leading principal components of the linear patch projection, as (k, C, P, P) filters.

    The projection's D filters (each C x P x P) are centred and decomposed by SVD; returns the
    ``k`` components (sign fixed so the largest entry is positive) and their explained-variance
    ratios (k,). Needs a linear patch projection (a conv with kernel = stride = P).
    """
    proj = _linear_patch_projection(model)
    w = proj.weight.detach().double()  # (D, C, P, P)
    flat = w.reshape(w.shape[0], -1)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(flat, full_matrices=False)
    k = min(k, vh.shape[0])
    comps = vh[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    var = s**2
    return comps.reshape(k, *w.shape[1:]).float(), (var[:k] / var.sum().clamp_min(1e-30)).float()


def _linear_patch_projection(model: nn.Module) -> nn.Conv2d:
    """The patch embedding's projection when it is a linear map of image pixels, else ConfigError.

    Linear means: the only convolution of the stem, kernel = stride (non-overlapping patches), and
    its input channels are the image's. A conv / CNN / ResNet stem's last projection acts on learned
    feature maps (e.g. 64 channels): its weights are not image filters and are not drawn as such.
    """
    embed = getattr(model, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    name = type(model).__name__
    if not isinstance(proj, nn.Conv2d):
        raise ConfigError(f"{name} has no patch projection (patch_embed.proj) to draw as filters")
    convs = [m for m in embed.modules() if isinstance(m, nn.Conv2d)]
    in_chans = getattr(getattr(model, "config", None), "in_chans", proj.in_channels)
    linear = convs == [proj] and proj.kernel_size == proj.stride and proj.in_channels == in_chans
    if not linear:
        raise ConfigError(f"{name} has no linear patch projection of the image: its stem ({type(embed).__name__}) "
                          f"projects {proj.in_channels} feature channels after {len(convs) - 1} conv(s), so its "
                          "weights are not image filters; the filter figure is for the 'patch' stem")
    return proj
