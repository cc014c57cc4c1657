"""Small image steps the transform pipelines are built from (tensors (C, H, W); PIL only at the entry).

They are plain callables, usable inside ``torchvision.transforms.v2.Compose``. Written here rather
than taken from v2 where v2's per-call overhead dominates on small images (MNIST, CIFAR): these run
in the data loader on few CPU cores, once per image per epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vitlab.errors import DataError


class ToChannels:
    """PIL image or tensor (C, H, W) / (H, W) -> tensor (in_chans, H, W) of the same dtype (uint8 from PIL).

    RGB -> grey uses the ITU-R 601 luma weights; on uint8 tensors in PIL's fixed-point form, so a
    decoded-in-memory image and the same file through PIL give the same grey pixels. Grey -> RGB
    repeats the channel; an alpha channel is dropped.
    """

    def __init__(self, in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        self.in_chans = in_chans

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            # convert() also resolves palette, 16-bit and CMYK modes that pil_to_tensor would pass through raw.
            return F.pil_to_tensor(image.convert("L" if self.in_chans == 1 else "RGB"))
        if not isinstance(image, torch.Tensor) or image.ndim not in (2, 3):
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise DataError(f"expected a PIL image or a (C, H, W) tensor, got {shape}")
        if image.ndim == 2:
            image = image.unsqueeze(0)
        chans = image.shape[0]
        if chans in (2, 4):  # grey + alpha, RGB + alpha
            image, chans = image[: chans - 1], chans - 1
        if chans == self.in_chans:
            return image
        if chans == 3:
            return _luma(image)
        if chans == 1:
            return image.repeat(3, 1, 1)
        raise DataError(f"cannot convert a {chans}-channel image to {self.in_chans} channels")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in_chans={self.in_chans})"


def _luma(image: torch.Tensor) -> torch.Tensor:
    """RGB (3, H, W) -> (1, H, W); uint8 exactly as PIL's ``convert("L")`` (v2's truncates: v -> v - 1)."""
    if image.dtype != torch.uint8:
        return F.rgb_to_grayscale(image, num_output_channels=1)
    r, g, b = image.to(torch.int32).unbind(0)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)


class ResizeCenterCrop:
    """Resize then center-crop to ``size`` (H, W); a no-op when the image already has that size.

    The resize target is ``size / crop_pct`` (the shorter side when ``size`` is square), as in timm
    and torchvision eval presets. Skipping same-size inputs keeps MNIST / CIFAR at native
    resolution instead of blurring them through an upscale-and-crop.
    """

    def __init__(self, size: tuple[int, int], crop_pct: float, interpolation: InterpolationMode) -> None:
        self.size = (int(size[0]), int(size[1]))
        scaled = [math.floor(s / crop_pct) for s in self.size]
        self.resize_to = [scaled[0]] if scaled[0] == scaled[1] else scaled
        self.interpolation = interpolation

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) == self.size:
            return image
        image = F.resize(image, self.resize_to, interpolation=self.interpolation, antialias=True)
        return F.center_crop(image, list(self.size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, resize_to={self.resize_to}, {self.interpolation.value})"


class RandomAffine:
    """Random rotation, integer translation and scale of a tensor (C, H, W), bilinear, zero fill.

    Same sampling and the same output as ``v2.RandomAffine(degrees, translate, scale,
    interpolation=BILINEAR)`` (up to rounding), about 8x faster on 28x28 images: v2 rebuilds the
    pixel grid on every call, here it is cached per size and only a 2x3 matrix is new.
    """

    def __init__(self, degrees: float, translate: float, scale: tuple[float, float]) -> None:
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = (float(scale[0]), float(scale[1]))
        self._grids: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        u = torch.rand(4).tolist()  # torch's RNG, so torch.manual_seed and loader workers seed it
        angle = (2 * u[0] - 1) * self.degrees
        tx = round((2 * u[1] - 1) * self.translate * w)
        ty = round((2 * u[2] - 1) * self.translate * h)
        scale = self.scale[0] + u[3] * (self.scale[1] - self.scale[0])
        return self.apply(image, angle, (tx, ty), scale)

    def apply(self, image: torch.Tensor, angle: float, translate: tuple[float, float], scale: float) -> torch.Tensor:
        """The deterministic warp: ``angle`` degrees, ``translate`` (x, y) pixels, about the image center."""
        h, w = image.shape[-2:]
        # Inverse map output -> input in pixels about the center (torchvision's convention), then
        # divided by the half-size so grid_sample gets normalised coordinates.
        rot = math.radians(angle)
        cos, sin = math.cos(rot) / scale, math.sin(rot) / scale
        tx, ty = translate
        sx, sy = 2 / w, 2 / h
        theta = torch.tensor([[cos * sx, sin * sx, (-cos * tx - sin * ty) * sx],
                              [-sin * sy, cos * sy, (sin * tx - cos * ty) * sy]])
        grid = self._base_grid(h, w) @ theta.T  # (H, W, 2)
        floating = image.is_floating_point()
        out = nnf.grid_sample(image.unsqueeze(0).to(torch.float32), grid.unsqueeze(0), mode="bilinear",
                              padding_mode="zeros", align_corners=False).squeeze(0)
        # Bilinear weights are convex, so uint8 input stays within [0, 255]: rounding is enough.
        return out.to(image.dtype) if floating else out.round_().to(image.dtype)

    def _base_grid(self, h: int, w: int) -> torch.Tensor:
        """Pixel centers relative to the image center, homogeneous: (H, W, 3)."""
        grid = self._grids.get((h, w))
        if grid is None:
            ys = torch.arange(h, dtype=torch.float32) - h / 2 + 0.5
            xs = torch.arange(w, dtype=torch.float32) - w / 2 + 0.5
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grid = self._grids[(h, w)] = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)
        return grid

    def __repr__(self) -> str:
        return f"{type(self).__name__}(degrees={self.degrees}, translate={self.translate}, scale={self.scale})"


class RandomCropPad:
    """Pad a tensor (C, H, W) by ``padding`` pixels on every side, then crop a random H x W window.

    The CIFAR-style crop (``v2.RandomCrop(size, padding)``): a shift of up to ``padding`` pixels in
    each direction, the uncovered border filled with zeros (``"constant"``) or the mirrored image
    (``"reflect"``). One offset draw and a slice, so it costs microseconds per image.
    """

    def __init__(self, padding: int, mode: str = "constant") -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if mode not in ("constant", "reflect"):
            raise ValueError(f"mode must be 'constant' or 'reflect', got {mode!r}")
        self.padding = int(padding)
        self.mode = mode

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if p == 0:
            return image
        h, w = image.shape[-2:]
        top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()  # torch's RNG, seeded per sample
        if self.mode == "reflect":
            # reflect padding is not implemented for uint8; pad in float and round-trip exactly.
            padded = nnf.pad(image.unsqueeze(0).float(), (p, p, p, p), mode="reflect").squeeze(0).to(image.dtype)
            return padded[..., top:top + h, left:left + w].contiguous()
        # Zero fill: copy the overlap into a blank image (a third of the time of pad + slice).
        dy, dx = top - p, left - p  # the window's offset in the original image
        out = torch.zeros_like(image)
        out[..., max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
            image[..., max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(padding={self.padding}, mode={self.mode!r})"


class RandomHFlip:
    """Mirror a tensor (C, H, W) left-right with probability ``p``.

    The same draw as ``v2.RandomHorizontalFlip`` (one ``torch.rand(1)``, flip when below ``p``), so
    seeded runs see the same flips, without v2's per-call dispatch (~40 us, more than the flip).
    """

    def __init__(self, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(1).item() >= self.p:
            return image
        return image.flip(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class ToFloatNormalize:
    """uint8 (C, H, W) -> float32 ``(x / 255 - mean) / std``; float input is taken as already in [0, 1].

    What ``v2.ToDtype(scale=True)`` then ``v2.Normalize`` compute (to float rounding), as one
    multiply and one subtract: ~8 us on a 32x32 image instead of ~55 through v2's kernels.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        # One multiply-subtract: x * 1 / (255 std) - mean / std, per channel (C, 1, 1).
        std_t = torch.tensor(self.std).view(-1, 1, 1)
        self._scale_u8 = 1.0 / (255.0 * std_t)
        self._scale = 1.0 / std_t
        self._shift = torch.tensor(self.mean).view(-1, 1, 1) / std_t

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        scale = self._scale_u8 if image.dtype == torch.uint8 else self._scale
        return image.to(torch.float32).mul_(scale).sub_(self._shift)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"
