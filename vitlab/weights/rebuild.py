"""A vitlab checkpoint back into a model: the description picks the family, the tensors fill it.

:func:`vitlab.api.load_checkpoint` is the public face; this lives in the weights layer so that
``--verify`` (a vitlab file's own peer) and the engine's compatibility module share it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitlab.models.factory import build_from_description
from vitlab.weights.vitlab_format import Checkpoint, load_state_checked, read_metadata, read_tensors


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model stored in a vitlab checkpoint, load its weights, and put it in eval mode.

    Eval mode because a loaded checkpoint is almost always used for inference; a caller who
    fine-tunes it calls ``.train()`` (otherwise dropout would silently make outputs random).
    Every byte is checked against the file's checksum first: a changed file raises
    CheckpointError naming it (exit code 4) and is never used; a file from before checksums
    loads with one warning that it is unverified.
    """
    path = Path(path)
    meta = read_metadata(path)
    model = build_from_description(meta["model"], source=str(path))
    load_state_checked(model, read_tensors(path), str(path))
    return Checkpoint(model=model.to(device).eval(), class_names=meta["class_names"], info=meta["info"], path=path)
