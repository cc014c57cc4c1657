"""vitlab: Vision Transformers on PyTorch.

>>> import vitlab
>>> model = vitlab.create_model("vit_tiny_patch16_224", num_classes=10)
>>> model.pretrained_cfg["crop_pct"], vitlab.data.create_transform(model)  # doctest: +SKIP

``import vitlab`` itself loads neither torch nor the models: the names below (and the
subpackages, ``vitlab.data`` ...) are imported on first use (PEP 562). torch and torchvision take
~5 s to import on a 2-core CPU, which ``vitlab --help``, argument errors and ``vitlab recipes``
should not pay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("create_model", "export_weights", "from_pretrained", "import_weights", "is_model", "list_models",
        "load_checkpoint", "register_model", "save_pretrained", "save_weights")
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from vitlab.api import (create_model, export_weights, from_pretrained, import_weights, is_model, list_models,
                            load_checkpoint, register_model, save_pretrained, save_weights)


def __getattr__(name: str) -> Any:
    """``vitlab.create_model`` etc. from :mod:`vitlab.api`, ``vitlab.<subpackage>`` by importing it."""
    if name in _API:
        from vitlab import api

        return getattr(api, name)
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"vitlab.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"vitlab.{name}":
                raise  # a submodule that exists but fails to import says why
    raise AttributeError(f"module 'vitlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
