"""Name -> layer tables: each entry is a frozen dataclass of one layer's typed arguments.

A :class:`LayerTable` maps a variant name (``"conv"``, ``"reattention"``) to the dataclass holding
that variant's arguments; the dataclass knows how to check itself and how to build its layer, so a
new variant is one layer file (layer + arguments) plus one line in :mod:`vitlab.layers.tables`.
Configs store ``name`` + a plain ``dict`` of arguments (JSON in checkpoints); :meth:`LayerTable.parse`
turns that dict into the typed dataclass, coercing JSON lists to tuples and checking every value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Generic, Literal, TypeVar

from vitlab.errors import ConfigError

A = TypeVar("A")


class ArgError(ValueError):
    """A layer argument is invalid; ``arg`` names it (None: a constraint on the model, not an argument)."""

    def __init__(self, arg: str | None, message: str) -> None:
        super().__init__(message)
        self.arg = arg
        self.message = message


class LayerTable(Generic[A]):
    """Variant name -> arguments dataclass.

    Args:
        kind: what the table holds, used in messages and as the config prefix (``"stem"``,
            ``"attn"``: errors name ``stem_args.channels``).
        entries: name -> frozen dataclass type whose fields are the variant's arguments.
    """

    def __init__(self, kind: str, entries: Mapping[str, type[A]]) -> None:
        self.kind = kind
        self.entries = dict(entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def args_type(self, name: str) -> type[A]:
        """The arguments dataclass of ``name``; ConfigError naming the valid names otherwise."""
        if name not in self.entries:
            raise ConfigError(f"{self.kind} must be one of {', '.join(map(repr, self.entries))}, got {name!r}")
        return self.entries[name]

    def arg_names(self, name: str) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.args_type(name)))  # type: ignore[arg-type]

    def parse(self, name: str, args: Mapping[str, Any]) -> A:
        """Typed arguments of ``name`` from a plain mapping; unknown or ill-typed args raise ConfigError."""
        cls = self.args_type(name)
        valid = self.arg_names(name)
        unknown = sorted(set(args) - set(valid))
        if unknown:
            # A recipe's stem_args meant for another stem (mnist's conv stem under --model with a
            # patch stem) lands here: the message names the field and how to clear or replace it.
            raise ConfigError(f"{self.kind} {name!r}: unknown argument(s) {', '.join(unknown)} in "
                              f"model_args.{self.kind}_args; valid: {', '.join(valid) or '(none)'} (replace them with "
                              f"--set model_args.{self.kind}_args={{...}}, or {{}} for none)")
        hints = typing.get_type_hints(cls)
        fixed = {k: coerce(v, hints[k], f"{self.kind}_args.{k}") for k, v in args.items()}
        return cls(**fixed)

    def canonical(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """The full argument dict (defaults filled in, values coerced) of ``name``."""
        return dataclasses.asdict(self.parse(name, args))  # type: ignore[call-overload]


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a field type (bool, int, float, str, Literal, tuple[T, ...], X | None).

    JSON gives lists for tuples and ints for floats; those are converted, everything else that does
    not fit raises ConfigError naming ``where``.
    """
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in params:
            return None
        inner = [p for p in params if p is not type(None)]
        return coerce(value, inner[0], where) if len(inner) == 1 else value
    if origin is Literal:
        if value not in params:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, params))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = params[0] if params else Any
        return tuple(coerce(v, item, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value
