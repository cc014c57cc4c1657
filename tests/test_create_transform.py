"""``vitlab.data.create_transform``: the weights' eval preprocessing, pixel for pixel against timm and transformers.

On real photos (imagenette, already 224 x 224: the case where vitlab's old eval transform skipped
the resize and crop that timm does), and on non-square cuts of them. The references are timm's
``resolve_data_config`` + ``create_transform`` from timm's own pretrained_cfg, and the image
processors transformers builds from a folder's preprocessor_config.json. A difference of 1e-5
after normalisation is far below one grey level (1 / 255 / 0.5 = 7.8e-3), so the pixels agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from vitlab.data import Preprocess, build_eval_transform, create_transform
from vitlab.weights import pretrained_cfg as pcfg
from vitlab.weights.specs import get_spec

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenette_224_val500" / "val"
PIXEL = 1e-5


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    files = sorted(PHOTOS.glob("*/*.JPEG"))[::97][:5] if PHOTOS.is_dir() else []
    if not files:
        pytest.skip(f"no photos at {PHOTOS}")
    images = [Image.open(f).convert("RGB") for f in files]
    assert all(im.size == (224, 224) for im in images)  # at the model size already
    return images + [images[0].crop((0, 0, 224, 171)), images[1].crop((13, 0, 163, 224))]  # and non-square


def _timm_transform(pretrained_cfg: dict):
    timm_data = pytest.importorskip("timm.data")
    return timm_data.create_transform(**timm_data.resolve_data_config(pretrained_cfg=pretrained_cfg), is_training=False)


def _worst(ours, theirs, images) -> float:
    return max((ours(im) - theirs(im)).abs().max().item() for im in images)


def test_matches_timm_on_the_weights_own_config(photos: list[Image.Image]) -> None:
    timm = pytest.importorskip("timm")
    name = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    theirs_cfg = timm.models.get_pretrained_cfg(name).to_dict()
    spec = get_spec(*name.split("."))
    with torch.device("meta"):
        model = vitlab.create_model(spec.model)
    ours_cfg = pcfg.from_spec(spec, model.config.replace(crop_pct=spec.crop_pct, interpolation=spec.interpolation,
                                                          mean=spec.mean, std=spec.std))
    for key in ("crop_pct", "interpolation", "mean", "std", "input_size"):  # vitlab's spec table states what timm does
        assert ours_cfg[key] == (tuple(theirs_cfg[key]) if isinstance(theirs_cfg[key], list) else theirs_cfg[key]), key
    theirs = _timm_transform(theirs_cfg)
    assert _worst(create_transform(ours_cfg), theirs, photos) < PIXEL
    # negative control: vitlab's training-time eval transform leaves 224 x 224 photos uncropped
    old = build_eval_transform(Preprocess((224, 224), 3, spec.mean, spec.std, spec.crop_pct, "bicubic"))
    assert _worst(old, theirs, photos[:5]) > 0.1


@pytest.mark.parametrize("cfg", [
    dict(input_size=(3, 224, 224), crop_pct=224 / 256, interpolation="bilinear",
         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_mode="center"),  # torchvision's eval
    dict(input_size=(3, 160, 224), crop_pct=0.875, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3,
         crop_mode="center"),  # non-square target: timm's ResizeKeepRatio
    dict(input_size=(3, 192, 192), crop_pct=1.0, interpolation="nearest", mean=(0.5,) * 3, std=(0.5,) * 3,
         crop_mode="squash"),
], ids=["tv", "non-square", "squash"])
def test_matches_timm_rules(cfg: dict, photos: list[Image.Image]) -> None:
    theirs = _timm_transform(dict(cfg))
    ours = create_transform(dict(cfg))
    assert _worst(ours, theirs, photos) < PIXEL
    uint8 = [torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous() for im in photos[:2]]
    assert max((ours(t) - ours(im)).abs().max().item() for t, im in zip(uint8, photos)) == 0.0  # tensors alike


def _hf_folder(folder: Path, processor) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=224, patch_size=32, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, num_labels=2)
    transformers.ViTForImageClassification(cfg).save_pretrained(folder)
    processor.save_pretrained(folder)


def _pil_processor(transformers, name: str):
    """transformers' PIL image processor (``ViTImageProcessorPil`` in 5.x; the plain class in 4.x)."""
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


@pytest.mark.parametrize("resample", [2, 3])
def test_matches_the_hf_image_processor(tmp_path: Path, photos: list[Image.Image], resample: int) -> None:
    transformers = pytest.importorskip("transformers")
    kw = dict(size={"height": 224, "width": 224}, resample=resample, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    proc = _pil_processor(transformers, "ViTImageProcessor")(**kw)
    _hf_folder(tmp_path / "hf", proc)
    model = vitlab.import_weights(tmp_path / "hf").model
    imported = vitlab.from_pretrained(tmp_path / "hf")
    assert imported.pretrained_cfg["interpolation"] == {2: "bilinear", 3: "bicubic"}[resample]
    ours = create_transform(imported)
    theirs = lambda im: proc(images=im, return_tensors="pt")["pixel_values"][0]  # noqa: E731
    assert _worst(ours, theirs, photos) < PIXEL
    # negative control: the model's config alone (centre crop) prepares the non-square cuts differently
    assert _worst(create_transform(model.config), theirs, photos[5:]) > 0.1
    # transformers 5's default ViTImageProcessor resizes uint8 tensors with torchvision: a grey level
    # apart from PIL at a few pixels of the non-square cuts (exact on the 224 x 224 photos: no resize)
    tv = getattr(transformers, "ViTImageProcessor")(**kw)
    tv_run = lambda im: tv(images=im, return_tensors="pt")["pixel_values"][0]  # noqa: E731
    assert _worst(ours, tv_run, photos[:5]) < PIXEL and _worst(ours, tv_run, photos) <= 1 / 255 / 0.2 + PIXEL


def test_hf_export_writes_a_processor_that_prepares_images_alike(tmp_path: Path, photos: list[Image.Image]) -> None:
    transformers = pytest.importorskip("transformers")
    for crop_pct, kind in ((0.9, "ConvNextImageProcessor"), (1.0, "ViTImageProcessor")):
        model = vitlab.create_model("vit_pico_patch4_32", img_size=224, num_classes=2, depth=1, crop_pct=crop_pct,
                                    interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
        vitlab.export_weights(model, tmp_path / kind, "hf")
        proc = transformers.AutoImageProcessor.from_pretrained(tmp_path / kind, use_fast=False)
        assert type(proc).__name__.startswith(kind)
        theirs = lambda im: proc(images=im, return_tensors="pt")["pixel_values"][0]  # noqa: E731
        square = photos[:5]  # ConvNext's processor floors an odd crop margin where timm rounds it
        assert _worst(create_transform(model), theirs, square) < PIXEL
        back = vitlab.from_pretrained(tmp_path / kind)  # and the import reads it back
        assert (back.pretrained_cfg["crop_pct"], back.pretrained_cfg["interpolation"]) == (crop_pct, "bicubic")


@pytest.mark.parametrize("name,kw", [
    ("DeiTImageProcessor", dict(size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224},
                                do_center_crop=True, resample=3)),  # squash to 256, crop 224
    ("CLIPImageProcessor", dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                do_center_crop=True, resample=3)),  # shorter side to 224, crop 224
], ids=["deit", "clip"])
def test_reads_cropping_hf_processors(tmp_path: Path, photos: list[Image.Image], name: str, kw: dict) -> None:
    transformers = pytest.importorskip("transformers")
    proc = _pil_processor(transformers, name)(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3], **kw)
    _hf_folder(tmp_path / "hf", proc)
    model = vitlab.from_pretrained(tmp_path / "hf")
    theirs = lambda im: proc(images=im, return_tensors="pt")["pixel_values"][0]  # noqa: E731
    # HF floors an odd crop margin where timm / torchvision round it: square photos (even margins) only
    assert _worst(create_transform(model), theirs, photos[:5]) < PIXEL
    if name.startswith("DeiT"):  # the control: reading the size and not the crop (squash to 224) is off
        assert _worst(create_transform(model, crop_pct=1.0), theirs, photos[:5]) > 0.1


def test_vitlab_trained_checkpoints_keep_their_training_eval_transform(tmp_path: Path, photos: list[Image.Image]) -> None:
    """A checkpoint without a pretrained_cfg (written by vitlab's trainer) is evaluated with the
    transform the trainer validated with, so ``vitlab eval`` reproduces training's figures."""
    from vitlab.weights.vitlab_format import save_weights

    model = vitlab.create_model("vit_pico_patch4_32", img_size=224, depth=1, crop_pct=0.875, interpolation="bicubic")
    save_weights(tmp_path / "trained.safetensors", model, [str(i) for i in range(10)])
    ckpt = vitlab.load_checkpoint(tmp_path / "trained.safetensors")
    assert ckpt.model.pretrained_cfg["crop_mode"] == "vitlab"
    trainer_eval = build_eval_transform(Preprocess.from_config(ckpt.model.config))
    assert _worst(create_transform(ckpt.model), trainer_eval, photos) == 0.0
    timm_rule = create_transform(ckpt.model, crop_mode="center")  # the control: timm's rule crops 224 px photos
    assert _worst(timm_rule, trainer_eval, photos[:5]) > 0.1
