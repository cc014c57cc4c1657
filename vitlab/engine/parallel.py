"""Data-parallel wrapping (DDP / FSDP2), torch.compile, and full (unsharded) state under FSDP."""

from __future__ import annotations

import torch
from torch import nn

from vitlab.engine.distributed import DistInfo


def wrap(model: nn.Module, info: DistInfo, device: torch.device, fsdp: bool, compile: bool,
         find_unused_parameters: bool = False) -> nn.Module:
    """The module the loop trains: DDP or FSDP2 under torchrun, then optionally compiled."""
    wrapped = model
    if info.enabled and fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model, "blocks", []):
            fully_shard(block)
        fully_shard(model)
    elif info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=find_unused_parameters)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo, fsdp: bool) -> dict:
    """The optimizer's state; under FSDP gathered into full (unsharded) tensors on every rank."""
    if not (info.enabled and fsdp):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, info: DistInfo,
                         fsdp: bool) -> None:
    if not (info.enabled and fsdp):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def full_weights(model: nn.Module, info: DistInfo, fsdp: bool) -> dict | None:
    """The full (unsharded) weights under FSDP, gathered on every rank; None otherwise."""
    if not (info.enabled and fsdp):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
