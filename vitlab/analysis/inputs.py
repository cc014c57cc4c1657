"""What the analysis commands run on: a model (checkpoint or registered name) and a set of images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitlab.data import Preprocess, build_eval_transform, open_source
from vitlab.data.files import images_in, open_image
from vitlab.errors import ConfigError, DataError

_SOURCE_PREFIXES = ("mnist", "torchvision:")


@dataclass
class LoadedModel:
    """A model ready for analysis with what is needed to feed it images."""

    model: nn.Module
    class_names: list[str]
    preprocess: Preprocess | None  # None for a DETR (its eval transform resizes, see DetrConfig)
    name: str
    info: dict

    @property
    def is_detr(self) -> bool:
        from vitlab.models.detr import DETR

        return isinstance(self.model, DETR)


def load_model(spec: str, img_size: int | None = None, device: torch.device | str = "cpu", seed: int = 0) -> LoadedModel:
    """``spec``: a vitlab checkpoint (.safetensors), a registered model or DETR preset name (random init, seeded).

    ``img_size`` changes a registered model's input size, or runs a checkpoint at another
    resolution (position embeddings resampled).
    """
    from vitlab.models.detr import DETR, create_detr
    from vitlab.models.detr import PRESETS as DETR_PRESETS
    from vitlab.weights.rebuild import load_checkpoint
    from vitlab.registry import build_model, is_model

    path = Path(spec).expanduser()
    if path.suffix == ".safetensors" or path.exists():
        ckpt = load_checkpoint(path, device)
        model, classes, info, name = ckpt.model, list(ckpt.class_names), dict(ckpt.info), path.name
        if img_size is not None:
            if not hasattr(model, "set_input_size"):
                raise ConfigError(f"{name}: --img-size does not apply to a {type(model).__name__} (it resizes per image)")
            model.set_input_size(img_size)
    elif is_model(spec) or spec in DETR_PRESETS:
        overrides = {"img_size": (img_size, img_size)} if img_size and is_model(spec) else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = (build_model(spec, **overrides) if is_model(spec) else create_detr(spec)).to(device)
        classes = [str(i) for i in range(getattr(model, "num_classes", 0))]
        info, name = {"note": "random initialisation"}, spec
    else:
        raise ConfigError(f"--model {spec}: neither a checkpoint file nor a registered model name "
                          "(`vitlab models` lists them)")
    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError(f"{name}: the model carries no config to derive its preprocessing from")
    if isinstance(model, DETR):
        return LoadedModel(model.eval(), classes, None, name, info)
    return LoadedModel(model.eval(), classes, Preprocess.from_config(config), name, info)


@dataclass
class ImageSet:
    """Preprocessed images plus what is needed to show and score them."""

    tensors: torch.Tensor  # (N, C, H, W) normalised, the model's input
    display: list[np.ndarray]  # N uint8 arrays (H, W) or (H, W, 3): exactly what the model sees
    names: list[str]
    truths: list[str | None]  # the class name of each image where known

    def __len__(self) -> int:
        return len(self.names)

    def batches(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), size):
            yield self.tensors[start:start + size]

    def labels(self, class_names: Sequence[str]) -> list[int] | None:
        """Indices into ``class_names`` if every image has a truth among them, else None."""
        index = {c: i for i, c in enumerate(class_names)}
        if not self.truths or any(t is None or t not in index for t in self.truths):
            return None
        return [index[t] for t in self.truths]


def _display(x: torch.Tensor, pre: Preprocess) -> np.ndarray:
    """Undo the normalisation of a (C, H, W) input -> uint8 (H, W) or (H, W, 3)."""
    mean = torch.tensor(pre.mean).view(-1, 1, 1)
    std = torch.tensor(pre.std).view(-1, 1, 1)
    img = ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def _dataset_items(spec: str, limit: int):
    """(name, raw image, class name) from a data source or a class-subfolder tree, spread over the set."""
    ds = open_source(spec, "val", None)
    if len(ds) == 0:
        raise DataError(f"{spec}: no images")
    step = max(1, len(ds) // limit)
    for idx in list(range(0, len(ds), step))[:limit]:
        raw, label = ds[idx]
        yield f"{spec}[{idx}]", raw, ds.classes[label]


def load_images(specs: Sequence[str], pre: Preprocess, limit: int = 16) -> ImageSet:
    """Images from files, folders (class subfolders give truths) or data sources (``mnist-test``, ...).

    At most ``limit`` images in total, transformed by the model's eval transform.
    """
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    transform = build_eval_transform(pre)
    items: list[tuple[str, object, str | None]] = []
    for spec in specs:
        left = limit - len(items)
        if left <= 0:
            break
        path = Path(spec).expanduser()
        if path.is_file():
            items.append((str(path), open_image(path), None))
        elif path.is_dir():
            subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
            if subdirs:
                items += list(_dataset_items(spec, left))
            else:
                files = images_in(path)
                if not files:
                    raise DataError(f"{path}: no images in this folder")
                items += [(str(f), open_image(f), None) for f in files[:left]]
        elif spec.strip().lower().startswith(_SOURCE_PREFIXES):
            items += list(_dataset_items(spec, left))
        else:
            raise DataError(f"{spec}: image, folder or data source not found")
    if not items:
        raise DataError("no images given")
    tensors = torch.stack([transform(raw) for _, raw, _ in items])
    return ImageSet(tensors, [_display(t, pre) for t in tensors], [n for n, _, _ in items], [t for _, _, t in items])
