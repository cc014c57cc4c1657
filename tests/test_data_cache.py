"""data.cache (image folders decoded into memory once) and the CIFAR-style padded crop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from PIL import Image

from vitlab.cli.main import main
from vitlab.data import ImageFolderDataset
from vitlab.data.cache import cache_folder
from vitlab.data.image_ops import RandomCropPad
from vitlab.data.transforms import AugmentConfig
from vitlab.errors import ConfigError, DataError

TINY = ["--model", "vit_pico_patch7_28", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64", "--batch-size", "8",
        "--epochs", "2", "--no-progress", "--device", "cpu", "--set", "data.eval_batch_size=16",
        "--set", "data.augment.crop_padding=2", "--set", "data.augment.hflip=0.5"]


def _colour_folder(root: Path, size: tuple[int, int] = (12, 10), fmt: str = "jpg") -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            # Smooth gradients plus noise: a photo-like JPEG, not a flat colour.
            yy, xx = np.mgrid[0:size[1], 0:size[0]]
            img = np.stack([xx * 20, yy * 20, (xx + yy) * 9], -1) + rng.integers(0, 40, (size[1], size[0], 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / c / f"{i}.{fmt}", quality=75)
    return root


@pytest.mark.parametrize("fmt", ["jpg", "png", "bmp"])
def test_cache_has_the_same_pixels_as_pil(tmp_path: Path, fmt: str) -> None:
    ds = ImageFolderDataset(_colour_folder(tmp_path, fmt=fmt))
    cached = cache_folder(ds)
    assert cached.images.shape == (6, 3, 10, 12) and cached.images.dtype == torch.uint8
    assert cached.classes == ds.classes and cached.targets == ds.targets
    for i in range(len(ds)):
        pil = torch.from_numpy(np.asarray(ds[i][0])).permute(2, 0, 1)
        assert torch.equal(cached[i][0], pil), f"image {i} ({fmt}) decodes differently"


def test_cache_of_shared_cifar_matches_pil() -> None:
    # The shared data folder sits beside the checkout; computed here so the test runs from any cwd.
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = shared / "cifar10_jpg" / "test" / "cat"
    if not folder.is_dir():
        pytest.skip("../shared/data/cifar10_jpg not present")
    ds = ImageFolderDataset(folder.parent)
    ds.samples = ds.samples[3000:3050]  # 50 cats
    ds.targets = ds.targets[3000:3050]
    cached = cache_folder(ds)
    for i in range(len(ds)):
        assert torch.equal(cached[i][0], torch.from_numpy(np.asarray(ds[i][0])).permute(2, 0, 1))


def test_cache_refuses_mixed_sizes(tmp_path: Path) -> None:
    root = _colour_folder(tmp_path)
    Image.new("RGB", (20, 20)).save(root / "b" / "odd.png")
    with pytest.raises(DataError, match=r"odd\.png: 20x20 differs from 12x10"):
        cache_folder(ImageFolderDataset(root))


def test_cache_names_a_corrupt_file(tmp_path: Path) -> None:
    root = _colour_folder(tmp_path)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg: cannot read image"):
        cache_folder(ImageFolderDataset(root))


def test_random_crop_pad_is_a_shifted_window() -> None:
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    for mode in ("constant", "reflect"):
        op = RandomCropPad(3, mode)
        padded = nnf.pad(image.float().unsqueeze(0), (3, 3, 3, 3), mode=mode).squeeze(0).to(torch.uint8)
        seen = set()
        for _ in range(200):
            out = op(image)
            assert out.shape == image.shape and out.dtype == torch.uint8
            hits = [(t, l) for t in range(7) for l in range(7) if torch.equal(out, padded[:, t:t + 8, l:l + 8])]
            assert hits, "output is not a window of the padded image"
            seen.add(hits[0])
        assert len(seen) > 30  # offsets cover the 7 x 7 range
    assert RandomCropPad(0)(image) is image


def test_crop_options_validated() -> None:
    with pytest.raises(ConfigError, match="crop_padding and random_resized_crop"):
        AugmentConfig(crop_padding=4, random_resized_crop=True)
    with pytest.raises(ConfigError, match="crop_padding"):
        AugmentConfig(crop_padding=-1)


def test_training_with_cache_equals_training_from_files(digit_folder: Path, tmp_path: Path) -> None:
    """Same pixels, same seeded augmentation: the per-step losses and final weights are identical."""
    from vitlab.weights.vitlab_format import read_tensors

    runs = {}
    for cache in ("false", "true"):
        out = tmp_path / f"cache_{cache}"
        assert main(["train", "--data", str(digit_folder), *TINY, "--set", f"data.cache={cache}", "--out", str(out)]) == 0
        steps = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        runs[cache] = ([r["loss"] for r in steps if r.get("kind") == "train"],
                       read_tensors(out / "checkpoints" / "last.safetensors"))
    (la, wa), (lb, wb) = runs["false"], runs["true"]
    assert la and la == lb
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_tensor_rgb_to_grey_equals_pil() -> None:
    from vitlab.data.image_ops import ToChannels

    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pil = torch.from_numpy(np.asarray(Image.fromarray(rgb).convert("L")).copy()).unsqueeze(0)
    assert torch.equal(ToChannels(1)(torch.from_numpy(rgb).permute(2, 0, 1)), pil)
    grey = torch.full((3, 4, 4), 200, dtype=torch.uint8)
    assert ToChannels(1)(grey).unique().tolist() == [200]  # v2's rgb_to_grayscale gives 199


def test_random_hflip_draws_like_v2() -> None:
    from torchvision.transforms import v2

    from vitlab.data.image_ops import RandomHFlip

    image = torch.arange(2 * 3 * 5, dtype=torch.uint8).reshape(2, 3, 5)
    for p in (0.0, 0.3, 1.0):
        for seed in range(20):
            torch.manual_seed(seed)
            ours = RandomHFlip(p)(image)
            torch.manual_seed(seed)
            assert torch.equal(ours, v2.RandomHorizontalFlip(p)(image))


def test_a_carved_val_shares_the_training_folders_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flat folder, val carved from it, data.cache: every file is decoded once (it was twice), and
    both views hold the pixels an uncached run reads from the files."""
    import vitlab.data.cache as cache_mod
    from vitlab.config import resolve_config
    from torchvision.transforms.v2.functional import pil_to_tensor

    from vitlab.trainer import _prepare

    root = tmp_path / "flat"
    for c in ("a", "b"):
        _colour_folder(tmp_path / "src" / c, size=(28, 28))
    for c in ("a", "b"):  # ROOT/<class>/<img>: 6 images a class
        (root / c).mkdir(parents=True)
        for i, f in enumerate(sorted((tmp_path / "src" / c).rglob("*.jpg"))):
            f.rename(root / c / f"{i}.jpg")
    calls: list[Path] = []
    real = cache_mod._decode
    monkeypatch.setattr(cache_mod, "_decode", lambda path, limit: calls.append(path) or real(path, limit))
    views = {}
    for cache in (True, False):
        cfg = resolve_config(None, [{"model": "vit_pico_patch7_28", "precision": "fp32", "data": {
            "train": str(root), "test": None, "cache": cache, "batch_size": 2, "val_fraction": 0.5,
            "augment": {"hflip": 0.0, "random_resized_crop": False}}}])
        prep = _prepare(cfg, echo=lambda line: None)
        views[cache] = (prep.train_ds.dataset, prep.val_ds)
    assert len(calls) == 12 and len(set(calls)) == 12  # the cached run's decodes; the uncached one reads files
    for cached, files in zip(views[True], views[False]):
        assert len(cached) == len(files) == 6
        for i in range(len(files)):
            (a, label_a), (b, label_b) = cached[i], files[i]
            b = b if isinstance(b, torch.Tensor) else pil_to_tensor(b)  # the raw training view: PIL from files
            assert label_a == label_b and torch.equal(a, b)
