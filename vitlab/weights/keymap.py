"""Explicit key maps between vitlab's state-dict names and another library's.

A :class:`Rule` ties one vitlab key to one or more foreign keys, with named transforms in both
directions (``{i}`` stands for the block index). :func:`to_vitlab` and :func:`from_vitlab`
apply a rule list, account for every key (unmapped foreign keys are *unexpected*, absent
required ones *missing*) and raise :class:`MappingError` listing them with their shapes.
:func:`load_into` checks every key and shape against the model before copying anything, so a
failed load leaves the model unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vitlab.weights.errors import MappingError

Tensor = torch.Tensor
Transform = Callable[..., Tensor]


# ------------------------------------------------------------------------- named transforms
def identity(t: Tensor) -> Tensor:
    return t


def cat0(*parts: Tensor) -> Tensor:
    """Separate q, k, v projections -> one fused qkv tensor (rows q | k | v)."""
    return torch.cat(parts, dim=0)


def split3(t: Tensor) -> list[Tensor]:
    """Fused qkv (3D, ...) -> [q, k, v]."""
    return list(t.chunk(3, dim=0))


@dataclass(frozen=True)
class Rule:
    """vitlab key ``ours`` <-> foreign key(s) ``theirs``; ``{i}`` is the block index.

    ``to_ours(*theirs_tensors) -> ours`` and ``to_theirs(ours) -> tensor or list`` are named
    functions (transposes, splits); identity when omitted. ``optional`` rules may be absent as
    a whole (a head, a class token), never in part.
    """

    ours: str
    theirs: str | tuple[str, ...]
    to_ours: Transform | None = None
    to_theirs: Callable[[Tensor], Tensor | Sequence[Tensor]] | None = None
    optional: bool = False

    @property
    def theirs_keys(self) -> tuple[str, ...]:
        return (self.theirs,) if isinstance(self.theirs, str) else tuple(self.theirs)

    @property
    def per_block(self) -> bool:
        return "{i}" in self.ours


def _expand(rules: Iterable[Rule], depth: int) -> list[tuple[Rule, str, tuple[str, ...]]]:
    out = []
    for rule in rules:
        for i in range(depth) if rule.per_block else [None]:
            fmt = (lambda s: s.replace("{i}", str(i))) if i is not None else (lambda s: s)
            out.append((rule, fmt(rule.ours), tuple(fmt(k) for k in rule.theirs_keys)))
    return out


def _shape_list(state: Mapping[str, Tensor], keys: Iterable[str], limit: int = 12) -> str:
    keys = list(keys)
    shown = [f"{k} {tuple(state[k].shape)}" if k in state else k for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more


def mapping_error(source: str, missing: Sequence[str], unexpected: Sequence[str], wrong: Sequence[str],
                  missing_shapes: Mapping[str, Tensor], unexpected_shapes: Mapping[str, Tensor]) -> MappingError:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {_shape_list(missing_shapes, missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {_shape_list(unexpected_shapes, unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es): {'; '.join(wrong[:8])}")
    return MappingError(f"{source}: weights do not fit: " + " | ".join(parts))


def block_depth(keys: Iterable[str], pattern: str) -> int:
    """Number of blocks: 1 + the largest index matched by ``pattern`` (a regex with one group)."""
    rx = re.compile(pattern)
    idx = [int(m.group(1)) for k in keys if (m := rx.match(k))]
    return max(idx) + 1 if idx else 0


def to_vitlab(theirs: Mapping[str, Tensor], rules: Sequence[Rule], depth: int, source: str,
              ignore: Callable[[str], bool] = lambda k: False) -> dict[str, Tensor]:
    """Map a foreign state dict onto vitlab names; every foreign key must be used or ignored."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for rule, ours, keys in _expand(rules, depth):
        present = [k for k in keys if k in theirs]
        if not present and rule.optional:
            continue
        if len(present) != len(keys):
            missing += [k for k in keys if k not in theirs]
            continue
        out[ours] = (rule.to_ours or identity)(*[theirs[k] for k in keys])
        used.update(keys)
    unexpected = sorted(k for k in theirs if k not in used and not ignore(k))
    if missing or unexpected:
        raise mapping_error(source, missing, unexpected, [], {}, theirs)
    return out


def from_vitlab(ours: Mapping[str, Tensor], rules: Sequence[Rule], depth: int, target: str) -> dict[str, Tensor]:
    """Map a vitlab state dict to foreign names; vitlab keys without a rule are an error."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for rule, our_key, keys in _expand(rules, depth):
        if our_key not in ours:
            if not rule.optional:
                missing.append(our_key)
            continue
        value = (rule.to_theirs or identity)(ours[our_key])
        values = [value] if isinstance(value, Tensor) else list(value)
        if len(values) != len(keys):
            raise MappingError(f"{target}: rule for {our_key} made {len(values)} tensors for {len(keys)} keys")
        out.update(zip(keys, values))
        used.add(our_key)
    unexpected = sorted(k for k in ours if k not in used)
    if missing or unexpected:
        raise mapping_error(f"export to {target}", missing, unexpected, [], {}, ours)
    return out


def check_fits(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise MappingError unless ``state`` has exactly the model's keys with the model's shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise mapping_error(source, missing, unexpected, wrong, own, state)


def load_into(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Validate every key and shape first, then copy (cast to each parameter's dtype); all or nothing."""
    check_fits(model, state, source)
    own = model.state_dict()
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(dtype=v.dtype))


def require_plain_vit(cfg: object, target: str, stems: tuple[str, ...] = ("patch",)) -> None:
    """Raise MappingError unless ``cfg`` is a ViT the target library can express (plain attention, known stem)."""
    attn = getattr(cfg, "attn_type", "mhsa")
    stem = getattr(cfg, "stem", "patch")
    if attn != "mhsa" or getattr(cfg, "scale_adjustment", 1.0) != 1.0 or stem not in stems:
        raise MappingError(f"export to {target}: attention {attn!r} / stem {stem!r} has no {target} equivalent "
                           "(plain multi-head attention and a patch stem are needed)")
