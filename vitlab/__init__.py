"""vitlab: Vision Transformers on PyTorch.

>>> import vitlab
>>> model = vitlab.create_model("vit_tiny_patch16_224", num_classes=10)
"""

from vitlab.api import create_model, is_model, list_models, load_checkpoint, register_model

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "is_model", "list_models", "load_checkpoint", "register_model"]
