"""Model registry: names (timm's convention) -> builder functions.

``register_model`` adds a builder (a duplicate name raises); ``create_model(name, **overrides)``
builds one, with overrides such as ``num_classes`` or ``img_size``; ``list_models(pattern)``
lists the names matching a shell-style pattern.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from vitlab.errors import UnknownModelError

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Decorator: register ``fn`` under its ``__name__``. Raises ValueError on a duplicate name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def _ensure_builtin_models() -> None:
    # Importing the model package runs the @register_model decorators of the built-in families.
    import vitlab.models  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching ``pattern`` (fnmatch syntax), sorted."""
    _ensure_builtin_models()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    _ensure_builtin_models()
    return name in _REGISTRY


def create_model(name: str, pretrained: str | None = None, weights: str | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace fields of its config.

    ``pretrained=TAG`` loads the checkpoint ``name.TAG`` of :mod:`vitlab.weights.specs`
    (downloaded into the cache with a hash check); ``weights=FILE`` loads a local file of any
    format :mod:`vitlab.weights` reads. Both convert to this model's size and classes.

    Raises:
        UnknownModelError: the name is not registered (the message suggests close names).
        ConfigError: an override is unknown or invalid.
    """
    _ensure_builtin_models()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `vitlab models` lists them"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    if pretrained is not None:
        from vitlab.weights.hub import pretrained_overrides

        overrides = {**pretrained_overrides(name, pretrained), **overrides}
    model = _REGISTRY[name](**overrides)
    model.model_name = name
    if pretrained is not None or weights is not None:
        from vitlab.weights.hub import load_weights_into

        load_weights_into(model, name, pretrained=pretrained, weights=weights)
    return model
