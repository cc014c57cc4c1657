"""vitlab: Vision Transformers on PyTorch.

>>> import vitlab
>>> model = vitlab.create_model("vit_tiny_patch16_224", num_classes=10)
>>> model.pretrained_cfg["crop_pct"], vitlab.data.create_transform(model)  # doctest: +SKIP
"""

from vitlab.api import (create_model, export_weights, from_pretrained, import_weights, is_model, list_models,
                        load_checkpoint, register_model, save_pretrained, save_weights)

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "export_weights", "from_pretrained", "import_weights", "is_model",
           "list_models", "load_checkpoint", "register_model", "save_pretrained", "save_weights"]
