"""Pretrained weights as data: a table of known public checkpoints, not code.

Each :class:`WeightSpec` says where a checkpoint lives (a Hugging Face hub id + file, or a URL),
its sha256 where known, what it expects (input size, mean, std, crop, interpolation), what it
predicts (number of classes, label set), its source format and license. ``create_model(name,
pretrained=TAG)`` (or ``create_model("name.TAG")``) looks ``name.TAG`` up here and downloads through
:mod:`vitlab.weights.hub`; ``pretrained=True`` takes the model's first tag (:func:`default_tag`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from vitlab.errors import ConfigError
from vitlab.weights.formats import FORMATS

INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@lru_cache(maxsize=1)
def _imagenet1k() -> tuple[str, ...]:
    text = resources.files("vitlab.weights").joinpath("imagenet1k_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, len(names)
    return names


def imagenet1k_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (shipped with the package)."""
    return list(_imagenet1k())


@dataclass(frozen=True)
class WeightSpec:
    """One public checkpoint; ``model`` is the vitlab registry name it loads into."""

    model: str
    tag: str
    fmt: str  # a readable record of vitlab.weights.formats.FORMATS: timm, hf, torchvision, npz, mindspore
    url: str  # https URL, or "hf://<repo id>/<file>" for the Hugging Face hub
    sha256: str | None = None
    img_size: int = 224
    mean: tuple[float, float, float] = INCEPTION[0]
    std: tuple[float, float, float] = INCEPTION[1]
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    num_classes: int = 1000
    label_set: str = "imagenet-1k"
    license: str = "apache-2.0"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a spec names a source the format table can read; a typo would only fail at download time
        if self.fmt not in FORMATS or not FORMATS[self.fmt].readable:
            raise ConfigError(f"spec {self.model}.{self.tag}: unknown source format {self.fmt!r}")

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def filename(self) -> str:
        """Cache file name: the URL's own suffix where it has a known one, else the format's."""
        suffix = self.url.rsplit(".", 1)[-1].lower()
        return f"{self.name}.{suffix if suffix in _SUFFIXES else FORMATS[self.fmt].download_suffix}"


# every suffix some format uses (from the format table), without the dot
_SUFFIXES = {s.lstrip(".") for f in FORMATS.values() for s in f.suffixes}
_HFT = "hf://timm/{}/model.safetensors"
_TV = "https://download.pytorch.org/models/{}"
_GS = "https://storage.googleapis.com/vit_models/{}"
_MS = "https://download.mindspore.cn/toolkits/mindcv/vit/{}"

# sha256 values are pinned only where a publisher states the full digest (none of these does):
# the hf:// files are checked against the hub's own SHA-256 of each file, torchvision's and
# mindcv's against the 8 hex digits of SHA-256 in their file names (hub.py); see hash_check().
SPECS: tuple[WeightSpec, ...] = (
    WeightSpec("vit_tiny_patch16_224", "augreg_in21k_ft_in1k", "timm", _HFT.format("vit_tiny_patch16_224.augreg_in21k_ft_in1k")),
    WeightSpec("vit_small_patch16_224", "augreg_in21k_ft_in1k", "timm", _HFT.format("vit_small_patch16_224.augreg_in21k_ft_in1k")),
    WeightSpec("vit_base_patch16_224", "augreg2_in21k_ft_in1k", "timm", _HFT.format("vit_base_patch16_224.augreg2_in21k_ft_in1k")),
    WeightSpec("vit_base_patch16_224", "augreg_in21k", "timm", _HFT.format("vit_base_patch16_224.augreg_in21k"),
               num_classes=21843, label_set="imagenet-21k"),
    WeightSpec("vit_base_patch16_384", "augreg_in21k_ft_in1k", "timm", _HFT.format("vit_base_patch16_384.augreg_in21k_ft_in1k"),
               img_size=384, crop_pct=1.0),
    WeightSpec("vit_base_patch32_224", "augreg_in21k_ft_in1k", "timm", _HFT.format("vit_base_patch32_224.augreg_in21k_ft_in1k")),
    WeightSpec("vit_large_patch16_224", "augreg_in21k_ft_in1k", "timm", _HFT.format("vit_large_patch16_224.augreg_in21k_ft_in1k")),
    WeightSpec("vit_base_patch16_224", "google_npz_in21k_ft_in1k", "npz", _GS.format("imagenet21k+imagenet2012/ViT-B_16-224.npz"),
               extra={"act": "gelu_tanh"}),
    WeightSpec("vit_base_patch16_224", "tv_in1k", "torchvision", _TV.format("vit_b_16-c867db91.pth"),
               mean=IMAGENET[0], std=IMAGENET[1], crop_pct=224 / 256, interpolation="bilinear", license="bsd-3-clause"),
    WeightSpec("vit_base_patch32_224", "tv_in1k", "torchvision", _TV.format("vit_b_32-d86f8d99.pth"),
               mean=IMAGENET[0], std=IMAGENET[1], crop_pct=224 / 256, interpolation="bilinear", license="bsd-3-clause"),
    WeightSpec("vit_large_patch16_224", "tv_in1k", "torchvision", _TV.format("vit_l_16-852ce7e3.pth"),
               mean=IMAGENET[0], std=IMAGENET[1], crop_pct=224 / 242, interpolation="bilinear", license="bsd-3-clause"),
    WeightSpec("vit_large_patch32_224", "tv_in1k", "torchvision", _TV.format("vit_l_32-c7638314.pth"),
               mean=IMAGENET[0], std=IMAGENET[1], crop_pct=224 / 256, interpolation="bilinear", license="bsd-3-clause"),
    WeightSpec("vit_base_patch32_224", "mindcv_in1k", "mindspore", _MS.format("vit_b_32_224-f50866e8.ckpt"),
               mean=IMAGENET[0], std=IMAGENET[1], crop_pct=0.875, interpolation="bilinear",
               extra={"act": "gelu_tanh", "norm_eps": 1e-7}),
    WeightSpec("vit_large_patch16_224", "mindcv_in1k", "mindspore", _MS.format("vit_l_16_224-97d0fdbc.ckpt"),
               mean=IMAGENET[0], std=IMAGENET[1], crop_pct=0.875, interpolation="bilinear",
               extra={"act": "gelu_tanh", "norm_eps": 1e-7}),
    WeightSpec("vit_large_patch32_224", "mindcv_in1k", "mindspore", _MS.format("vit_l_32_224-b80441df.ckpt"),
               mean=IMAGENET[0], std=IMAGENET[1], crop_pct=0.875, interpolation="bilinear",
               extra={"act": "gelu_tanh", "norm_eps": 1e-7}),
)


def name_hash(url: str) -> str | None:
    """The SHA-256 prefix torchvision / mindcv put in a file name (``vit_b_16-c867db91.pth``), if any."""
    m = re.search(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$", url)
    return m.group(1) if m else None


def hash_check(spec: WeightSpec) -> str:
    """What a download of ``spec`` is verified against (:mod:`vitlab.weights.hub` applies it):
    ``pinned sha256``, ``hub sha256`` (the Hugging Face hub's SHA-256 of the file), ``sha256
    prefix in the name`` (8 hex digits, 32 bits), or ``none``."""
    if spec.sha256:
        return "pinned sha256"
    if spec.url.startswith("hf://"):
        return "hub sha256"
    if name_hash(spec.url):
        return "sha256 prefix in the name"
    return "none"


def list_specs(model: str | None = None) -> list[WeightSpec]:
    """Specs, all or those of one registered model."""
    return [s for s in SPECS if model is None or s.model == model]


def default_tag(model: str) -> str:
    """The tag ``pretrained=True`` loads: a model's first spec in :data:`SPECS` (as timm's first
    pretrained tag is its default); ConfigError when none is listed."""
    for spec in SPECS:
        if spec.model == model:
            return spec.tag
    raise ConfigError(f"no pretrained weights are listed for {model}; pass weights=FILE (CLI: --weights FILE), "
                      "or pretrained=False for an untrained model")


def get_spec(model: str, tag: str) -> WeightSpec:
    """The spec ``model.tag``; ConfigError lists the tags that exist for the model."""
    for spec in SPECS:
        if spec.model == model and spec.tag == tag:
            return spec
    tags = [s.tag for s in SPECS if s.model == model]
    hint = f"known tags: {', '.join(tags)}" if tags else "no pretrained weights are listed for it"
    raise ConfigError(f"no pretrained tag {tag!r} for {model}; {hint}")
