"""Patch-whitening initialisation (``init.whiten_images``): the analytic property, where it applies,
and the trainer's use of it (training images only, nothing else in the model changed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitlab.api import create_model
from vitlab.config import TrainConfig, resolve_config
from vitlab.errors import ConfigError
from vitlab.layers.whiten_init import first_image_conv, patch_covariance, whiten_conv_


def _smooth_images(n: int = 64) -> torch.Tensor:
    """(n, 3, 32, 32) images with strongly correlated neighbouring pixels (as in photos)."""
    torch.manual_seed(0)
    return F.avg_pool2d(torch.randn(n, 3, 36, 36), 5, 1) * 3


def test_whitened_filters_decorrelate_the_patches_they_read() -> None:
    x = _smooth_images()
    conv = nn.Conv2d(3, 60, 3, stride=2, padding=1, bias=True)  # 27 patch dimensions: 27 pairs, 6 channels left
    before = conv.weight[54:].clone()
    cov = patch_covariance(x, conv)
    w0 = conv.weight[:27].reshape(27, -1).double()
    r0 = w0 @ cov @ w0.T
    # negative control: the random init does not whiten (its filters' responses are correlated)
    assert (r0 / r0.diagonal().outer(r0.diagonal()).sqrt() - torch.eye(27, dtype=torch.double)).abs().max() > 0.3
    assert whiten_conv_(conv, x, eps=0.0) == 27
    w = conv.weight.detach().reshape(60, -1).double()
    torch.testing.assert_close(w[:27] @ cov @ w[:27].T, torch.eye(27, dtype=torch.double), atol=1e-6, rtol=0)
    torch.testing.assert_close(conv.weight[27:54], -conv.weight[:27])  # each filter with its negative
    assert torch.equal(conv.weight[54:], before)  # channels beyond the pairs keep their init
    assert torch.equal(conv.bias, torch.zeros(60))
    # the leading filter is the direction of largest patch variance
    lead = w[0] / w[0].norm()
    assert float(lead @ cov @ lead) == pytest.approx(float(torch.linalg.eigvalsh(cov)[-1]), rel=1e-6)


def test_pairs_are_capped_by_the_patch_dimension() -> None:
    conv = nn.Conv2d(1, 21, 4, stride=4)  # 16 patch dimensions, 21 channels: 10 pairs, the odd last one left
    x = _smooth_images()[:, :1]
    before = conv.weight[20:].clone()
    assert whiten_conv_(conv, x) == 10
    assert torch.equal(conv.weight[20:], before)


def test_first_image_conv_finds_the_stem_of_each_model_kind() -> None:
    conv_stem = create_model("vit_pico_patch4_32", stem="conv", stem_args={"channels": (48, 96), "extra": 1})
    assert first_image_conv(conv_stem, 3) is conv_stem.patch_embed.stem[0]
    plain = create_model("vit_pico_patch4_32")
    assert first_image_conv(plain, 3) is plain.patch_embed.proj
    with pytest.raises(ValueError, match="no convolution over the 5-channel image"):
        first_image_conv(plain, 5)
    with pytest.raises(ValueError, match="grouped or dilated"):
        first_image_conv(nn.Sequential(nn.Conv2d(3, 6, 3, groups=3)), 3)


def _cfg(whiten: int, **init: object) -> TrainConfig:
    return resolve_config(None, [{"model": "vit_pico_patch4_28", "precision": "fp32", "model_args": {
        "stem": "conv", "stem_args": {"channels": [16, 32]}, "depth": 1, "embed_dim": 32, "num_heads": 2,
        "mlp_dim": 64}, "data": {"train": "mnist", "test": None, "batch_size": 16,
                                                     "augment": {"hflip": 0.0, "random_resized_crop": False}},
        "init": {"whiten_images": whiten, **init}}])


def test_the_trainer_whitens_from_training_images_and_changes_nothing_else() -> None:
    from vitlab.data import Preprocess, build_eval_transform
    from vitlab.trainer import _prepare

    plain = _prepare(_cfg(0), echo=lambda line: None)
    lines: list[str] = []
    prep = _prepare(_cfg(200), echo=lines.append)
    assert any("16 filters, 3x3 stride 2) starts as 8 whitening filter pairs of 200 training images" in s for s in lines)
    a, b = plain.model.state_dict(), prep.model.state_dict()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed == ["patch_embed.stem.0.weight"]  # the seed's init everywhere else
    # by hand: the same 200 seeded images of the *training* view (the carved val is not in it)
    train = prep.train_ds.dataset
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:200].tolist()
    tf = build_eval_transform(Preprocess.from_config(prep.model.config))
    images = torch.stack([tf(train[i][0]) for i in idx])
    conv = nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False)
    whiten_conv_(conv, images)
    torch.testing.assert_close(b["patch_embed.stem.0.weight"], conv.weight.detach(), rtol=0, atol=0)


def test_whitening_refuses_pretrained_starts_and_negative_counts() -> None:
    with pytest.raises(ConfigError, match="init.whiten_images and init.weights"):
        _cfg(10, weights="w.safetensors").validate()
    with pytest.raises(ConfigError, match="init.whiten_images"):
        _cfg(-1).validate()


def test_vitlab_train_whitens_from_the_cli_and_refuses_a_negative_count(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vitlab.cli.main import main

    tiny = ["--data", "mnist", "--model", "vit_pico_patch7_28", "--set", "model_args.depth=1",
            "--set", "model_args.embed_dim=32", "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64",
            "--device", "cpu", "--no-progress", "--set", "tensorboard=false", "--epochs", "1",
            "--set", "max_steps_per_epoch=2", "--set", "data.test=null"]
    assert main(["train", *tiny, "--set", "init.whiten_images=100", "--out", str(tmp_path / "r")]) == 0
    # the 7x7 / 7 patch projection: 49 patch dimensions, 32 channels -> 16 pairs
    assert "(32 filters, 7x7 stride 7) starts as 16 whitening filter pairs of 100 training images" in \
        capsys.readouterr().out
    assert "whiten_images: 100" in (tmp_path / "r" / "config.yaml").read_text()
    assert main(["train", *tiny, "--set", "init.whiten_images=-3", "--out", str(tmp_path / "bad")]) == 2
    assert "init.whiten_images" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_covariance_in_batches_equals_the_covariance_of_all_patches() -> None:
    x = _smooth_images(30)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    whole = torch.cov(F.unfold(x.double(), 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 27).T)
    torch.testing.assert_close(patch_covariance(x, conv), whole)
    torch.testing.assert_close(patch_covariance(iter([x[:7], x[7:19], x[19:]]), conv), whole)
    with pytest.raises(ValueError, match="no image patches"):
        patch_covariance(iter([]), conv)
