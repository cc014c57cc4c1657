"""RandAugment at any magnitude scale, with timm's per-op magnitude noise and probability.

The ops are torchvision's (``v2.RandAugment``: identity, shears, translations, rotation,
brightness, colour, contrast, sharpness, posterize, solarize, autocontrast, equalize; posterize
and solarize grow stronger with the magnitude, like timm's ``inc1`` variants). What timm's
``--aa rand-m9-mstd0.5`` adds on top is reproduced here: the magnitude is a level out of 10 (not
torchvision's 30), each of the ``n`` ops is applied with probability ``p`` (timm: 0.5), and each
application draws its magnitude from N(m, mstd) clipped to [0, levels]. All draws come from
torch's default generator, so :class:`vitlab.data.seeded.SeededTransform` keeps them exactly
resumable.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

from vitlab.errors import ConfigError

_STEPS = 10  # resolution of a noisy magnitude: 1/10 of a level (torchvision indexes magnitudes by bin)
TIMM_LEVELS = 10  # timm's _LEVEL_DENOM: m10 is each op's full range


class ScaledRandAugment(v2.RandAugment):
    """``num_ops`` random ops on a uint8 image (C, H, W) or PIL image; same type and shape out.

    Args:
        num_ops: ops drawn (with replacement) per image.
        magnitude: strength, ``magnitude / levels`` of each op's range.
        levels: the magnitude scale (torchvision 30, timm 10).
        magnitude_std: per-op normal noise on the magnitude; above 100, uniform in [0, magnitude].
        prob: probability that each drawn op is applied.
        interpolation: resampling of the geometric ops (nearest or bilinear for tensors).
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, levels: int = 30, magnitude_std: float = 0.0,
                 prob: float = 1.0, interpolation: v2.InterpolationMode = v2.InterpolationMode.NEAREST) -> None:
        if levels < 1 or not 0 <= magnitude <= levels or num_ops < 0 or magnitude_std < 0 or not 0 <= prob <= 1:
            raise ConfigError(f"RandAugment: need levels >= 1, 0 <= magnitude <= levels, num_ops >= 0, "
                              f"magnitude_std >= 0, prob in [0, 1]; got {levels}, {magnitude}, {num_ops}, "
                              f"{magnitude_std}, {prob}")
        # A whole, fixed magnitude indexes torchvision's own bins (levels + 1 of them): the same floats,
        # so the same images as v2.RandAugment; a noisy or fractional one needs finer bins.
        self.steps = 1 if magnitude_std == 0 and float(magnitude).is_integer() else _STEPS
        super().__init__(num_ops=1, magnitude=round(magnitude * self.steps), num_magnitude_bins=levels * self.steps + 1,
                         interpolation=interpolation)
        self.draws, self.level, self.levels, self.magnitude_std, self.prob = num_ops, magnitude, levels, magnitude_std, prob

    def _sample_level(self) -> float:
        if self.magnitude_std > 100:  # timm reads mstd > 100 as "uniform"
            return float(torch.rand(())) * self.level
        if self.magnitude_std > 0:
            return min(max(self.level + self.magnitude_std * float(torch.randn(())), 0.0), float(self.levels))
        return self.level

    def forward(self, *inputs: Any) -> Any:
        out = inputs if len(inputs) > 1 else inputs[0]
        for _ in range(self.draws):
            # No draw at all when prob is 1 and std 0: exactly torchvision's stream, as before.
            if self.prob < 1 and float(torch.rand(())) >= self.prob:
                continue
            self.magnitude = round(self._sample_level() * self.steps)
            out = super().forward(out)
        return out


_TIMM_KEYS = {"m": "ra_magnitude", "n": "ra_num_ops", "mstd": "ra_magnitude_std", "p": "ra_prob"}


def parse_timm_rand(spec: str) -> dict[str, Any]:
    """timm's ``--aa`` RandAugment string -> ``data.augment`` fields.

    ``rand-m9-mstd0.5`` -> randaugment on, magnitude 9 of 10, noise 0.5, 2 ops each with p=0.5
    (timm's defaults for n and p). Keys: m, n, mstd, p, inc (0 or 1: accepted, the op set is
    torchvision's either way). ConfigError for other policies (AutoAugment, AugMix) and keys.
    """
    parts = spec.strip().split("-")
    if parts[0] != "rand":
        raise ConfigError(f"--aa {spec}: only RandAugment is supported, as rand-m<M>[-n<N>][-mstd<S>][-p<P>] "
                          "(e.g. rand-m9-mstd0.5)")
    fields: dict[str, Any] = {"randaugment": True, "ra_levels": TIMM_LEVELS, "ra_magnitude": 10.0,
                              "ra_num_ops": 2, "ra_magnitude_std": 0.0, "ra_prob": 0.5}
    for part in parts[1:]:
        key = next((k for k in ("mstd", "inc", "m", "n", "p") if part.startswith(k)), None)
        raw = part[len(key):] if key else ""
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"--aa {spec}: cannot read {part!r} (keys: m<magnitude>, n<ops>, mstd<std>, p<prob>, "
                              "inc<0|1>)") from None
        if key == "inc":
            if value not in (0, 1):
                raise ConfigError(f"--aa {spec}: inc must be 0 or 1")
            continue
        if key in ("m", "n") and not value.is_integer():  # as timm reads them
            raise ConfigError(f"--aa {spec}: {key} must be a whole number")
        fields[_TIMM_KEYS[key]] = int(value) if key == "n" else value  # type: ignore[index]
    if not 0 <= fields["ra_magnitude"] <= TIMM_LEVELS:
        raise ConfigError(f"--aa {spec}: magnitude must be in [0, {TIMM_LEVELS}] (timm's scale)")
    return fields
