"""One table of weight formats: every source and target vitlab knows, one record each.

A :class:`WeightFormat` says which file suffixes the format uses, how to recognise a file, how
to read it, how to turn what was read into vitlab's layout, how to write a vitlab model in it,
and how to run a file in the format's own library (the peer behind ``vitlab convert --verify``).
:mod:`vitlab.weights.api`, :mod:`vitlab.weights.verify`, the CLI's ``--from`` / ``--to`` /
``--format`` choices and the pretrained specs' cache names all derive from :data:`FORMATS`, so a
new source is one converter file (``convert_<name>.py``) plus one record here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
# module imports, not ``from vitlab.weights import``: that would import the package's __init__,
# which imports vitlab.weights.api, which imports this table
import vitlab.weights.convert_hf as convert_hf
import vitlab.weights.convert_hf_dinov2 as convert_hf_dinov2
import vitlab.weights.convert_mindspore as convert_mindspore
import vitlab.weights.convert_npz as convert_npz
import vitlab.weights.convert_timm as convert_timm
import vitlab.weights.convert_torchvision as convert_torchvision
import vitlab.weights.convert_vitlab as convert_vitlab
from vitlab.weights.errors import MalformedFileError, MappingError
from vitlab.weights.io import read_npz, read_state
from vitlab.weights.mindspore_ckpt import read_ckpt
from vitlab.weights.source import Forward, Source

Reader = Callable[[Path], Any]
ToVitlab = Callable[[Any, str, Mapping[str, Any]], Source]
Writer = Callable[[VisionTransformer, Path, list[str], Mapping[str, Any]], None]
Peer = Callable[[Path, ViTConfig], Forward]


@dataclass(frozen=True)
class WeightFormat:
    """One weight format. A missing callable means the direction is not supported."""

    name: str
    summary: str
    suffixes: tuple[str, ...]  # of the weight files (inside the folder for hf); the first names a download
    detect: Callable[[Path], bool] | None = None  # True when a path surely is this format; None: never guessed
    read: Reader | None = None  # path -> the file's content, in the format's own names
    to_vitlab: ToVitlab | None = None  # (content, source name, known config fields) -> vitlab layout
    from_vitlab: Writer | None = None  # (model, path, class names, info) -> file(s) in this format
    peer: Peer | None = None  # (path, architecture) -> images -> logits, run by the format's own library
    no_peer_why: str = ""  # said when peer is None
    # The architecture fields a file of this format cannot state for a given config (never guessed
    # silently: they come from flags, the file's metadata or a published architecture; see published.py).
    unstated: Callable[[ViTConfig], tuple[str, ...]] | None = None
    # Numerics every file of the format has, because it cannot record others (export refuses a
    # model with other numerics rather than drop them; imports assume these). None: recorded.
    fixed_numerics: Mapping[str, Any] | None = None

    @property
    def records_heads(self) -> bool:
        """Whether the files state the attention heads (for a plain ViT)."""
        return self.unstated is None or "num_heads" not in self.unstated(ViTConfig())

    @property
    def readable(self) -> bool:
        return self.read is not None and self.to_vitlab is not None

    @property
    def writable(self) -> bool:
        return self.from_vitlab is not None

    @property
    def download_suffix(self) -> str:
        """The suffix of a downloaded file of this format, without the dot."""
        return self.suffixes[0].lstrip(".")


def _heads(cfg: ViTConfig) -> tuple[str, ...]:
    return ("num_heads",)


def _timm_unstated(cfg: ViTConfig) -> tuple[str, ...]:
    # A class token without fc_norm pools the token in timm's defaults, or the average when the
    # model was built with global_pool="avg", fc_norm=False: the state dicts are identical.
    pool = ("global_pool",) if cfg.class_token and not cfg.fc_norm and not cfg.dist_token and cfg.global_pool != "map" else ()
    # timm's pre-norm (CLIP) towers use LayerNorm eps 1e-5, not the 1e-6 of its other ViTs
    eps = ("norm_eps",) if cfg.pre_norm else ()
    return ("num_heads", *pool, *eps)


def _suffix_in(*suffixes: str) -> Callable[[Path], bool]:
    """A detector by file suffix (a folder is never a single-file format)."""
    return lambda path: path.suffix.lower() in suffixes and not path.is_dir()


# Detection tries the records in this order and takes the first match: vitlab comes before timm
# because both use .safetensors (a vitlab file says so in its metadata).
_TABLE = (
    WeightFormat("vitlab", "vitlab's self-describing .safetensors", (".safetensors",), convert_vitlab.is_vitlab_file,
                 convert_vitlab.read_file, convert_vitlab.source_from, convert_vitlab.write_file, convert_vitlab.peer),
    WeightFormat("timm", "timm vit_* / deit_* / ResNet hybrid state dict, or a timm hub folder",
                 (".safetensors", ".pth", ".pt", ".bin"), convert_timm.is_timm, convert_timm.read_file,
                 convert_timm.source_from, convert_timm.write_file, convert_timm.peer, unstated=_timm_unstated),
    # before "hf", whose detector takes any folder: this one's config.json names a DINOv2 model type
    WeightFormat("hf_dinov2", "Hugging Face transformers Dinov2Model / Dinov2WithRegistersModel folder (import only)",
                 (".safetensors", ".bin"), convert_hf_dinov2.is_dinov2_folder, convert_hf_dinov2.read_folder,
                 convert_hf_dinov2.source_from, None, convert_hf_dinov2.peer),
    WeightFormat("hf", "Hugging Face transformers ViT folder", (".safetensors", ".bin"), lambda path: path.is_dir(),
                 convert_hf.read_folder, convert_hf.source_from, convert_hf.write_file, convert_hf.peer),
    WeightFormat("torchvision", "torchvision vit_* state dict", (".pth",), None, read_state,
                 convert_torchvision.source_from, convert_torchvision.write_file, convert_torchvision.peer,
                 unstated=_heads, fixed_numerics={"norm_eps": 1e-6, "act": "gelu"}),
    WeightFormat("npz", "Google JAX / big_vision .npz", (".npz",), _suffix_in(".npz"), read_npz,
                 convert_npz.source_from, None, convert_timm.peer_npz, fixed_numerics={"norm_eps": 1e-6, "act": "gelu_tanh"}),
    WeightFormat("mindspore", "MindSpore / mindcv .ckpt", (".ckpt",), _suffix_in(".ckpt"), read_ckpt,
                 convert_mindspore.source_from, convert_mindspore.write_file, None,
                 no_peer_why="mindcv needs MindSpore", unstated=_heads,
                 fixed_numerics={"norm_eps": 1e-7, "act": "gelu_tanh"}),
)
FORMATS: dict[str, WeightFormat] = {f.name: f for f in _TABLE}


def readable() -> tuple[str, ...]:
    """Names of the formats vitlab reads (the CLI's ``--from`` choices)."""
    return tuple(f.name for f in _TABLE if f.readable)


def writable() -> tuple[str, ...]:
    """Names of the formats vitlab writes (the CLI's ``--to`` choices)."""
    return tuple(f.name for f in _TABLE if f.writable)


def get_format(name: str, direction: str = "source") -> WeightFormat:
    """The record of ``name``, checked for ``direction`` ("source" or "target"); MappingError otherwise."""
    names = readable() if direction == "source" else writable()
    if name not in names:
        raise MappingError(f"unknown {direction} format {name!r}; choose from {', '.join(names)}")
    return FORMATS[name]


def detect_format(path: str | Path) -> str:
    """Guess the source format from the path (folder, suffix, leading bytes)."""
    path = Path(path)
    for fmt in _TABLE:
        if fmt.detect is not None and fmt.detect(path):
            return fmt.name
    raise MalformedFileError(f"{path}: cannot tell the format from the name; pass --from")


def read_source(path: str | Path, fmt: str, **known: Any) -> Source:
    """(config at the weights' native size, vitlab-named state, class names, info) for any source."""
    record = get_format(fmt, "source")
    path = Path(path)
    return record.to_vitlab(record.read(path), str(path), known)
