"""vitlab.data: bundled MNIST, image folders, torchvision sets, sources and transforms."""

from __future__ import annotations

import collections

import gzip
import hashlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vitlab.data import (
    MNIST_CLASSES,
    AugmentConfig,
    ImageFolderDataset,
    Preprocess,
    TensorImageDataset,
    build_eval_transform,
    build_train_transform,
    describe_source,
    load_mnist_5k,
    load_mnist_test,
    open_source,
    open_torchvision,
)
from vitlab.data.image_ops import RandomAffine
from vitlab.data.mnist import _read_idx
from vitlab.data.bad_samples import ImagePolicy, SubstitutedLabel
from vitlab.errors import DataError

CIFAR_JPG = Path("/work/shared/data/cifar10_jpg")
GREY28 = Preprocess((28, 28), 1, (0.1307,), (0.3081,), 0.875, "bilinear")
RGB32 = Preprocess((32, 32), 3, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), 0.875, "bicubic")


def _image(path: Path, size: tuple[int, int] = (12, 10), color: tuple[int, int, int] = (200, 30, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _folder(root: Path, per_class: dict[str, int]) -> Path:
    for name, n in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _image(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist_5k()


@pytest.fixture(scope="module")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist_test()


# --- bundled MNIST ---------------------------------------------------------------------------


def test_mnist_5k_shapes_and_balance(mnist_5k):
    images, labels = mnist_5k
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (5000,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.float().mean() > 20  # real digits, not an empty array


def test_mnist_test_set_is_the_standard_one(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert MNIST_CLASSES == [str(i) for i in range(10)]


def test_mnist_5k_and_test_set_share_no_image(mnist_5k, mnist_test):
    def digests(images: torch.Tensor) -> set[bytes]:
        return {hashlib.sha1(row.tobytes()).digest() for row in images.reshape(len(images), -1).numpy()}

    train, test = digests(mnist_5k[0]), digests(mnist_test[0])
    assert len(train) == 5000 and len(test) == 10000
    assert train.isdisjoint(test)


def test_idx_with_wrong_magic_number_names_the_file(tmp_path):
    bad = tmp_path / "labels.gz"
    with gzip.open(bad, "wb") as f:
        f.write(np.array([2051, 3], dtype=">i4").tobytes() + bytes(3))
    with pytest.raises(DataError, match=r"labels\.gz.*magic number 2051, expected 2049"):
        _read_idx(bad, 2049, ())


def test_tensor_dataset_items(mnist_5k):
    images, labels = mnist_5k
    ds = TensorImageDataset(images, labels, MNIST_CLASSES, transform=lambda x: x.float())
    image, label = ds[4999]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28) and label == 9
    assert isinstance(label, int) and ds.targets[:3] == [0, 0, 0] and len(ds) == 5000
    with pytest.raises(DataError, match="labels"):
        TensorImageDataset(images, labels[:10], MNIST_CLASSES)


# --- image folders ---------------------------------------------------------------------------


def test_image_folder_ignores_hidden_and_non_image_entries(tmp_path):
    root = _folder(tmp_path / "data", {"cat": 2, "dog": 3})
    _image(root / ".ipynb_checkpoints" / "x.png")
    _image(root / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png")
    _image(root / "dog" / "nested" / "deep.JPG")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(root)
    assert ds.classes == ["cat", "dog"]
    assert len(ds) == 6 and ds.targets == [0, 0, 1, 1, 1, 1]
    assert all(".ipynb" not in str(p) and p.suffix.lower() in (".png", ".jpg") for p, _ in ds.samples)
    image, label = ds[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 0
    ds.verify()


@pytest.mark.parametrize("layout, message", [
    ("missing", "data folder not found"),
    ("file", "not a directory"),
    ("no_classes", "no class folders"),
    ("only_hidden", "no class folders"),
    ("all_empty", "no images in any class folder"),
])
def test_image_folder_errors_name_the_root(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("x")
    elif layout == "no_classes":
        _image(root / "loose.png")
    elif layout == "only_hidden":
        _image(root / ".ipynb_checkpoints" / "a.png")
    elif layout == "all_empty":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
    with pytest.raises(DataError, match=message) as err:
        ImageFolderDataset(root)
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_image_folder_class_without_images_is_named(tmp_path):
    root = _folder(tmp_path / "data", {"cat": 1, "dog": 0})
    (root / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="class folder has no images") as err:
        ImageFolderDataset(root)
    assert str(root / "dog") in str(err.value)


def test_corrupt_image_names_the_file(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 1})
    bad = root / "b" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg at all" * 10)
    ds = ImageFolderDataset(root, policy=ImagePolicy(strict=True))
    index = [p for p, _ in ds.samples].index(bad)
    with pytest.raises(DataError, match="cannot read image") as err:
        ds[index]
    assert str(bad) in str(err.value)
    with pytest.raises(DataError, match="cannot read image") as err:
        ds.verify()
    assert str(bad) in str(err.value)
    # The default policy replaces it by the next readable sample (wrapping), marked as a stand-in.
    _, label = ImageFolderDataset(root)[index]
    assert isinstance(label, SubstitutedLabel) and label == 0


def test_val_classes_must_match_train_classes(tmp_path):
    train = _folder(tmp_path / "train", {"cat": 1, "dog": 1, "fox": 1})
    val = _folder(tmp_path / "val", {"cat": 1, "dog": 1, "owl": 1})
    classes = ImageFolderDataset(train).classes
    with pytest.raises(DataError, match="missing fox; extra owl") as err:
        ImageFolderDataset(val, classes=classes)
    assert str(val) in str(err.value)
    # Same classes in another order: labels follow the given order.
    reordered = ImageFolderDataset(train, classes=["fox", "cat", "dog"])
    assert sorted((p.parent.name, y) for p, y in reordered.samples) == [("cat", 1), ("dog", 2), ("fox", 0)]


# --- transforms ------------------------------------------------------------------------------


def test_eval_transform_normalises_and_keeps_native_size():
    out = build_eval_transform(RGB32)(torch.full((3, 32, 32), 255, dtype=torch.uint8))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (1 - torch.tensor(RGB32.mean)) / torch.tensor(RGB32.std)
    torch.testing.assert_close(out, expected.view(3, 1, 1).expand(3, 32, 32))
    digit = load_mnist_test()[0][0]
    torch.testing.assert_close(build_eval_transform(GREY28)(digit), (digit / 255 - 0.1307) / 0.3081)


def test_eval_transform_resizes_and_center_crops_other_sizes():
    pre = Preprocess((16, 16), 3, (0.5,) * 3, (0.5,) * 3, 0.8, "bicubic")
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[:, :, 30:] = 255  # right half white
    out = build_eval_transform(pre)(image)
    # Shorter side 40 -> 20 (16 / 0.8), width 60 -> 30, then the central 16x16.
    assert out.shape == (3, 16, 16)
    assert out[:, :, :6].max() < -0.9 and out[:, :, 10:].min() > 0.9
    pil = build_eval_transform(pre)(Image.new("RGB", (100, 50), (255, 0, 0)))
    assert pil.shape == (3, 16, 16) and torch.allclose(pil[0], torch.ones(16, 16), atol=0.02)


def test_channel_conversions():
    to_rgb = build_eval_transform(RGB32)
    grey = torch.full((1, 32, 32), 128, dtype=torch.uint8)
    out = to_rgb(grey)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out[:, 0, 0], (128 / 255 - torch.tensor(RGB32.mean)) / torch.tensor(RGB32.std))
    assert to_rgb(Image.new("L", (32, 32), 128)).shape == (3, 32, 32)

    to_grey = build_eval_transform(GREY28)
    for image in (torch.full((3, 28, 28), 200, dtype=torch.uint8), Image.new("RGB", (28, 28), (200, 200, 200)),
                  Image.new("RGBA", (28, 28), (200, 200, 200, 255))):
        out = to_grey(image)
        assert out.shape == (1, 28, 28)
        torch.testing.assert_close(out, torch.full((1, 28, 28), (200 / 255 - 0.1307) / 0.3081), atol=0.02, rtol=0)
    red = to_grey(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 28, 28))
    assert abs(float(red[0, 0, 0]) * 0.3081 + 0.1307 - 0.299) < 0.01  # luma weights, not a channel mean


def test_default_augment_config_is_the_eval_transform(mnist_test):
    torch.manual_seed(0)
    for pre, image in ((GREY28, mnist_test[0][7]), (RGB32, torch.randint(0, 256, (3, 40, 36), dtype=torch.uint8))):
        torch.testing.assert_close(build_train_transform(pre, AugmentConfig())(image), build_eval_transform(pre)(image),
                                   rtol=0, atol=0)


def test_train_transform_with_every_augmentation(mnist_test):
    aug = AugmentConfig(hflip=0.5, random_resized_crop=True, scale=(0.5, 1.0), affine_degrees=15,
                        affine_translate=0.1, affine_scale=(0.9, 1.1), randaugment=True, color_jitter=0.3,
                        random_erasing=0.5)
    torch.manual_seed(0)
    for pre, image in ((GREY28, mnist_test[0][0]), (RGB32, Image.new("RGB", (50, 40), (10, 200, 30))),
                       (RGB32, mnist_test[0][1])):
        transform = build_train_transform(pre, aug)
        outs = [transform(image) for _ in range(4)]
        assert all(o.shape == (pre.in_chans, *pre.img_size) and o.dtype == torch.float32 for o in outs)
        assert all(torch.isfinite(o).all() for o in outs)
    torch.manual_seed(1)
    a = build_train_transform(GREY28, aug)(mnist_test[0][0])
    torch.manual_seed(1)
    assert torch.equal(a, build_train_transform(GREY28, aug)(mnist_test[0][0]))  # seeded by torch


@pytest.mark.parametrize("angle, translate, scale", [(0.0, (0, 0), 1.0), (30.0, (3, -2), 1.0), (-17.0, (1, 4), 0.8)])
def test_fast_affine_matches_torchvision(angle, translate, scale):
    image = torch.randint(0, 256, (3, 28, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = RandomAffine(0, 0, (1, 1)).apply(image, angle, translate, scale)
    theirs = F.affine(image, angle=angle, translate=list(translate), scale=scale, shear=[0.0, 0.0],
                      interpolation=InterpolationMode.BILINEAR)
    assert (ours.int() - theirs.int()).abs().max() <= 1


def test_preprocess_from_model_config():
    from vitlab.models.vit_config import ViTConfig

    pre = Preprocess.from_config(ViTConfig(img_size=(28, 28), in_chans=1, mean=(0.5,), std=(0.5,)))
    assert pre == Preprocess((28, 28), 1, (0.5,), (0.5,), 0.875, "bicubic")


# --- sources ---------------------------------------------------------------------------------


def test_open_source_bundled_mnist():
    """train = the 5k digits less a 10% stratified carve-out, val = that carve-out, test = the 10k test set."""
    train, val = open_source("mnist", "train"), open_source("mnist", "val", build_eval_transform(GREY28))
    test = open_source("mnist", "test", build_eval_transform(GREY28))
    assert (len(train), len(val), len(test)) == (4500, 500, 10000)
    assert train.classes == val.classes == test.classes == MNIST_CLASSES
    assert not set(train.indices) & set(val.indices) and train.base is not None
    assert sorted(collections.Counter(val.targets).values()) == [50] * 10  # stratified: 50 of each digit's 500
    assert test[0][0].shape == (1, 28, 28) and test[0][1] == 7
    assert len(open_source("mnist-test", "train")) == 10000 and len(open_source("MNIST-5k", "val")) == 5000
    assert open_source("mnist", "train").base.images is train.base.images  # read once per process
    loader = torch.utils.data.DataLoader(test, batch_size=8)
    images, labels = next(iter(loader))
    assert images.shape == (8, 1, 28, 28) and labels.tolist()[:5] == [7, 2, 1, 0, 4]
    assert "MNIST" in describe_source("mnist") and "\n" not in describe_source("mnist")


def test_open_source_folder_with_split_subfolders(tmp_path):
    _folder(tmp_path / "ds" / "train", {"a": 3, "b": 2})
    _folder(tmp_path / "ds" / "validation", {"a": 1, "b": 1})
    train = open_source(str(tmp_path / "ds"), "train")
    val = open_source(str(tmp_path / "ds"), "val", classes=train.classes)
    assert (len(train), len(val), val.classes) == (5, 2, ["a", "b"])
    assert str(tmp_path / "ds") in describe_source(str(tmp_path / "ds"))
    with pytest.raises(DataError, match="has no test split"):
        open_source(str(tmp_path / "ds"), "test")


def test_flat_folder_is_never_validated_on_its_own_training_images(tmp_path):
    _folder(tmp_path / "plain", {"x": 10, "y": 10})
    train, val = open_source(str(tmp_path / "plain"), "train"), open_source(str(tmp_path / "plain"), "val")
    assert (len(train), len(val)) == (18, 2)
    files = lambda ds: {ds.base.samples[i][0] for i in ds.indices}  # noqa: E731
    assert not files(train) & files(val)
    # A train/ without val/ gets its val carved from train/, never from test/.
    _folder(tmp_path / "tt" / "train", {"x": 10, "y": 10})
    _folder(tmp_path / "tt" / "test", {"x": 3, "y": 3})
    val, test = open_source(str(tmp_path / "tt"), "val"), open_source(str(tmp_path / "tt"), "test")
    assert len(val) == 2 and all(val.base.samples[i][0].parent.parent.name == "train" for i in val.indices)
    assert len(test) == 6 and test.samples[0][0].parent.parent.name == "test"


def test_open_source_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found.*'mnist' or 'torchvision:NAME'") as err:
        open_source(str(tmp_path / "nope"), "train")
    assert str(tmp_path / "nope") in str(err.value)


def test_unknown_torchvision_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="torchvision:imagenet22k: unknown dataset; known: .*cifar10"):
        open_source("torchvision:imagenet22k", "train", root=tmp_path)


def test_torchvision_without_network_fails_fast(tmp_path):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        start = time.monotonic()
        with pytest.raises(DataError, match="torchvision:cifar10: not found under .* could not be downloaded"):
            open_torchvision("cifar10", tmp_path, train=True)
        assert time.monotonic() - start < 15
        with pytest.raises(DataError, match="download is off"):
            open_source("torchvision:svhn", "val", root=tmp_path, download=False)
    finally:
        socket.setdefaulttimeout(previous)


@pytest.mark.skipif(not CIFAR_JPG.is_dir(), reason="shared cifar10_jpg folder not present")
def test_open_source_shared_cifar10_jpg():
    train = open_source(str(CIFAR_JPG), "train", build_eval_transform(RGB32))
    assert train.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert len(train) == 18000 and train.base.samples[0][0].parent.parent.name == "train"
    val = open_source(str(CIFAR_JPG), "val", classes=train.classes)  # 10% of each class of train/
    assert len(val) == 2000 and all(val.base.samples[i][0].parent.parent.name == "train" for i in val.indices)
    test = open_source(str(CIFAR_JPG), "test", classes=train.classes)
    assert len(test) == 10000 and test.samples[0][0].parent.parent.name == "test"
    image, label = train[0]
    assert image.shape == (3, 32, 32) and label == 0

