"""Model size and compute: parameter count and multiply-accumulates of one forward pass.

Both work on models built on the meta device (``with torch.device("meta"):``), so ``vitlab models``
can report ViT-H/14 without allocating its weights or running real arithmetic.

MACs count the matrix products (linear layers, convolutions, the two attention products) as
:class:`torch.utils.flop_counter.FlopCounterMode` does, one MAC = two flops; element-wise work
(norms, activations, softmax, residual adds) is left out, as in fvcore and timm's tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitlab.errors import VitlabError
from vitlab.layers import Attention
from vitlab.utils.atomic import atomic_write


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones once; buffers such as fixed position tables excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_shape`` = (B, C, H, W).

    The count is for the whole batch (it scales with B). The model is left as it was: its
    train / eval mode and every attention layer's ``fused`` flag are restored afterwards.
    """
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x = torch.zeros(input_shape, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with _explicit_attention(model), _eval_mode(model), _frozen(model), torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2


@contextmanager
def _explicit_attention(model: nn.Module) -> Iterator[None]:
    # Why not count the fused path: FlopCounterMode only sees SDPA when the backend it dispatches
    # to has a registered formula. On meta tensors SDPA decomposes into matmuls (counted), on CUDA
    # the flash / efficient kernels are registered, but on CPU (torch 2.x) the
    # `_scaled_dot_product_flash_attention_for_cpu` kernel is not, so the attention products would
    # silently vanish from the count. The explicit path (q k^T, softmax, attn v) is two batched
    # matmuls on every device and computes the same function, so count through it.
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    saved = [m.fused for m in layers]
    for m in layers:
        m.fused = False
    try:
        yield
    finally:
        for m, fused in zip(layers, saved):
            m.fused = fused


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    # FlopCounterMode's module tracker hooks every module input that requires grad. A parameter fed
    # to a module as it is (an attention-pool latent, expanded to batch 1 on the meta device) has no
    # grad_fn there and the hook fails; no parameter needs grad to be counted, so none asks for it.
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Eval mode so dropout / drop-path draw no random numbers (the count does not depend on it).
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitlab")
    except PackageNotFoundError:  # a source tree on sys.path
        return "source"


def default_cache_file() -> Path:
    """Where ``vitlab models --macs`` keeps its counts: ``$VITLAB_CACHE/macs.json`` (default ~/.cache/vitlab)."""
    return Path(os.environ.get("VITLAB_CACHE") or "~/.cache/vitlab").expanduser() / "macs.json"


class MacsCache:
    """MACs per model configuration, kept in one JSON file so a count is computed once per machine.

    The key is a digest of the model's config dataclass, the input shape and the package version:
    any change of architecture (or of vitlab's counting) gives a new key, never a stale count.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_file()
        self.dirty = False
        try:
            self.entries: dict[str, int] = json.loads(self.path.read_text())
        except (OSError, ValueError):  # missing or torn: start afresh, the counts are cheap to redo
            self.entries = {}

    @staticmethod
    def key(model: nn.Module, input_shape: tuple[int, ...]) -> str:
        cfg = getattr(model, "config", None)
        fields = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else repr(cfg)
        blob = json.dumps([type(model).__qualname__, fields, list(input_shape), _version()], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def macs(self, model: nn.Module, input_shape: tuple[int, int, int, int]) -> int:
        """The cached count, else :func:`count_macs` (remembered until :meth:`save`)."""
        k = self.key(model, input_shape)
        if k not in self.entries:
            self.entries[k] = count_macs(model, input_shape)
            self.dirty = True
        return self.entries[k]

    def save(self) -> str | None:
        """Write the file if anything was added; returns why it could not be written, else None."""
        if not self.dirty:
            return None
        blob = json.dumps(self.entries, sort_keys=True).encode()
        try:
            atomic_write(self.path, lambda f: f.write(blob))
        except (VitlabError, OSError) as err:  # a read-only, full or blocked cache folder costs speed, not correctness
            return str(err)
        self.dirty = False
        return None
