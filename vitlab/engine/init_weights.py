"""Initialise a model from a checkpoint of another resolution or class count (fine-tuning)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from vitlab.engine.checkpoint import load_state_checked, read_metadata, read_tensors
from vitlab.layers.pos_embed import ResampleMethod, resample_pos_embed

log = logging.getLogger(__name__)


def load_for_finetune(model: nn.Module, path: str | Path, method: ResampleMethod = "bicubic") -> list[str]:
    """Load a vitlab checkpoint into ``model``, adapting what fine-tuning changes.

    * ``pos_embed`` is resampled in 2-D from the checkpoint's grid to the model's (class entry kept);
    * head weights whose shape differs (another class count) are dropped: the model keeps its
      freshly initialised head.
    Every other key must match exactly; nothing is copied unless all of them do.

    Returns the names of the dropped keys.
    """
    meta = read_metadata(path)
    state = dict(read_tensors(path))
    own = model.state_dict()
    src_cfg = meta["model"]["config"]
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        old_grid = tuple(s // src_cfg["patch_size"] for s in src_cfg["img_size"])
        state["pos_embed"] = resample_pos_embed(
            state["pos_embed"], model.patch_embed.grid_size, old_grid, model.num_prefix_tokens, method)
    dropped = [k for k in list(state) if k.startswith("head.") and k in own and state[k].shape != own[k].shape]
    for k in dropped:
        state[k] = own[k]
    if dropped:
        log.warning("re-initialised the head: dropped %s from %s", ", ".join(dropped), path)
    load_state_checked(model, {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}, str(path))
    return dropped
