"""Downloads with hash verification into a local cache, and loading weights into registry models.

``download`` streams a URL to a temporary file beside the target while hashing it, checks the
sha256 (or, for torchvision-style names such as ``vit_b_16-c867db91.pth``, the hash prefix in
the name), then renames it into place: the cache never holds a partial or unverified file. The
cache folder is an argument (default ``~/.cache/vitlab``); the CLI may fill it from the
environment. ``file://`` URLs work, which is how the tests run offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from torch import nn

from vitlab.weights.errors import HashMismatchError, MappingError
from vitlab.weights.specs import WeightSpec, get_spec

DEFAULT_CACHE = Path("~/.cache/vitlab").expanduser()
_CHUNK = 1 << 20
# Architecture fields a file must agree on with the model it is loaded into.
ARCH_FIELDS = ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_dim", "qkv_bias", "class_token",
               "dist_token", "global_pool", "fc_norm", "representation_size", "stem", "norm_eps", "act")


def resolve_url(url: str) -> str:
    """``hf://<org>/<repo>/<file>`` -> the hub's resolve URL; other URLs unchanged."""
    if url.startswith("hf://"):
        org, repo, file = url[len("hf://"):].split("/", 2)
        return f"https://huggingface.co/{org}/{repo}/resolve/main/{file}"
    return url


def _name_hash(url: str) -> str | None:
    m = re.search(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$", url)
    return m.group(1) if m else None


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check(digest: str, url: str, sha256: str | None) -> None:
    if sha256 and digest != sha256.lower():
        raise HashMismatchError(f"{url}: sha256 {digest} differs from the expected {sha256}")
    prefix = _name_hash(url)
    if not sha256 and prefix and not digest.startswith(prefix):
        raise HashMismatchError(f"{url}: sha256 {digest[:16]}... does not start with {prefix} from the file name")


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is there; atomic rename after the hash check."""
    dest = Path(dest)
    url = resolve_url(url)
    if dest.is_file():
        _check(sha256_of(dest), url, sha256)  # a cached file is re-verified, never trusted blindly
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - https / file only
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _check(h.hexdigest(), url, sha256)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def fetch(spec: WeightSpec, cache_dir: str | Path | None = None) -> Path:
    """The local, verified file of a spec (downloaded on first use)."""
    if not spec.url.startswith(("https://", "hf://", "file://")):
        raise MappingError(f"{spec.name}: refusing to download from {spec.url!r} (https, hf:// or file:// only)")
    return download(spec.url, Path(cache_dir or DEFAULT_CACHE) / spec.filename, spec.sha256)


def pretrained_overrides(model_name: str, tag: str) -> dict[str, Any]:
    """Config fields a spec fixes: preprocessing, classes, input size and numerics."""
    spec = get_spec(model_name, tag)
    return dict(mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct, interpolation=spec.interpolation,
                num_classes=spec.num_classes, img_size=spec.img_size, **spec.extra)


def load_weights_into(model: nn.Module, model_name: str, pretrained: str | None = None, weights: str | Path | None = None,
                      cache_dir: str | Path | None = None, resample: str = "bicubic-aa") -> dict[str, Any]:
    """Fill a freshly built registry model from a spec tag (downloaded) or a local file (offline).

    The file is converted at the model's numerics and resampled to its input size; a different
    number of classes gives a new head. Architecture mismatches raise before anything is copied.
    """
    from vitlab.weights.api import import_weights
    from vitlab.weights.keymap import load_into

    if (pretrained is None) == (weights is None):
        raise MappingError("give exactly one of pretrained= (a tag) and weights= (a file)")
    fmt = None
    if pretrained is not None:
        spec = get_spec(model_name, pretrained)
        path, fmt = fetch(spec, cache_dir), spec.fmt
    else:
        path = Path(weights)
    cfg = model.config
    imp = import_weights(path, fmt, img_size=cfg.img_size, num_classes=cfg.num_classes, num_heads=cfg.num_heads,
                         norm_eps=cfg.norm_eps, act=cfg.act, resample=resample)
    got = imp.model.config
    wrong = [f"{f}: file {getattr(got, f)!r} vs model {getattr(cfg, f)!r}" for f in ARCH_FIELDS if getattr(got, f) != getattr(cfg, f)]
    if wrong:
        raise MappingError(f"{path}: weights do not fit {model_name}: " + "; ".join(wrong))
    load_into(model, imp.model.state_dict(), str(path))
    model.class_names = imp.class_names
    model.weights_info = imp.info
    return imp.info
