"""Elastic distortion: the same draws and output as torchvision's ElasticTransform, faster; wired into the recipes."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from vitlab.data.elastic import RandomElastic
from vitlab.data.mnist import load_mnist_5k
from vitlab.data.transforms import AugmentConfig, Preprocess, build_train_transform
from vitlab.errors import ConfigError


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_mnist_5k()[0][:12]  # (12, 1, 28, 28) uint8


@pytest.mark.parametrize("alpha,sigma", [(34.0, 4.0), (8.0, 3.0), (50.0, 5.0)])
def test_matches_torchvision_elastic_transform(digits, alpha, sigma):
    ours, theirs = RandomElastic(alpha, sigma), v2.ElasticTransform(alpha=alpha, sigma=sigma)
    for i, digit in enumerate(digits):
        torch.manual_seed(i)
        expected = theirs(digit)
        torch.manual_seed(i)
        got = ours(digit)
        assert got.dtype == torch.uint8 and torch.equal(got, expected)
        as_float = digit.float() / 255
        torch.manual_seed(i)
        expected_f = theirs(as_float)
        torch.manual_seed(i)
        torch.testing.assert_close(ours(as_float), expected_f, atol=1e-5, rtol=0)


def test_it_moves_pixels_and_each_draw_differs(digits):
    # negative controls: a distortion that did nothing, or the same field every time, fails here
    warp = RandomElastic(34.0, 4.0)
    torch.manual_seed(0)
    a, b = warp(digits[0]), warp(digits[0])
    assert (a != digits[0]).float().mean() > 0.05 and not torch.equal(a, b)


def test_zero_strength_is_the_identity_and_rgb_works():
    image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    assert torch.equal(RandomElastic(0.0, 2.0)(image), image)
    assert RandomElastic(10.0, 2.0)(image).shape == (3, 20, 24)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="larger than 16 pixels"):
        RandomElastic(34.0, 4.0)(torch.zeros(1, 12, 12, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="elastic_alpha must be >= 0 and elastic_sigma > 0"):
        AugmentConfig(elastic_alpha=1.0, elastic_sigma=0.0)


def test_the_training_transform_applies_it(digits):
    pre = Preprocess((28, 28), 1, (0.5,), (0.5,), 1.0, "bilinear")
    plain = build_train_transform(pre, AugmentConfig())
    elastic = build_train_transform(pre, AugmentConfig(elastic_alpha=34.0))
    assert any(isinstance(t, RandomElastic) for t in elastic.transforms)
    torch.manual_seed(0)
    assert not torch.equal(plain(digits[0]), elastic(digits[0]))
