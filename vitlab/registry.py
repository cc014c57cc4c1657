"""Model registry, a leaf: names (timm's convention) -> builder functions, and model classes ->
checkpoint arch names.

``register_model`` adds a builder (a duplicate name raises); ``build_model(name, **overrides)``
builds one without weights, with overrides such as ``num_classes`` or ``img_size``;
``list_models(pattern)`` lists the names matching a shell-style pattern. Loading pretrained
weights lives one layer up, in :func:`vitlab.api.create_model`.

This module imports nothing from ``vitlab.models`` or ``vitlab.weights``: the model families
import it to register themselves, when anything under ``vitlab.models`` is first imported
(:mod:`vitlab.api`, every converter and the analyses do; ``vitlab.create_model`` goes through
:mod:`vitlab.api`). ``import vitlab`` alone loads nothing (it is lazy), so a lookup in a registry
that is still empty is an error saying so, never an empty answer.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from vitlab.errors import ConfigError, UnknownModelError

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}
# model class -> the arch name a checkpoint stores (models/factory.py fills it)
_ARCHS: dict[type, str] = {}


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Decorator: register ``fn`` under its ``__name__``. Raises ValueError on a duplicate name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def _registered() -> dict[str, ModelBuilder]:
    if not _REGISTRY:
        raise ConfigError("no models are registered yet: import vitlab.models first, or use vitlab.list_models / "
                          "vitlab.create_model, which do")
    return _REGISTRY


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching ``pattern`` (fnmatch syntax), sorted."""
    _registered()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _registered()


def get_builder(name: str) -> ModelBuilder:
    """The builder registered as ``name``; UnknownModelError (suggesting close names) otherwise."""
    if name not in _registered():
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `vitlab models` lists them"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model with random weights; ``overrides`` replace fields of its config.

    Raises:
        UnknownModelError: the name is not registered (the message suggests close names).
        ConfigError: an override is unknown or invalid.
    """
    model = get_builder(name)(**overrides)
    model.model_name = name
    return model


def create_model(name: str, pretrained: str | None = None, weights: str | None = None, **overrides: Any) -> nn.Module:
    """Deprecated alias of :func:`build_model`, kept for callers not yet moved to :mod:`vitlab.api`.

    Loading weights would need the weights layer above this leaf, so ``pretrained=`` and
    ``weights=`` are refused here with a pointer to :func:`vitlab.api.create_model`.
    """
    if pretrained is not None or weights is not None:
        raise ConfigError("vitlab.registry.create_model builds without weights; "
                          "use vitlab.api.create_model(name, pretrained=..., weights=...)")
    return build_model(name, **overrides)


def register_arch(name: str, model_cls: type) -> None:
    """Record that instances of ``model_cls`` (and subclasses) are stored as arch ``name``."""
    _ARCHS[model_cls] = name


def arch_of(model: nn.Module) -> str:
    """The arch name under which ``model`` is stored in checkpoints (nearest registered base class)."""
    for cls in type(model).__mro__:
        if cls in _ARCHS:
            return _ARCHS[cls]
    raise ConfigError(f"no checkpoint arch known for {type(model).__name__}")
