"""Downloads with hash verification into a local cache, and loading weights into registry models.

``download`` streams a URL to a temporary file beside the target while hashing it, checks it,
then renames it into place: the cache never holds a partial or unverified file. What it is
checked against, in this order (docs/weights.md lists it per spec):

1. the SHA-256 pinned in the spec table, when there is one: all 256 bits;
2. for ``hf://`` files, the Hugging Face hub's own SHA-256 of the file: the spec table's hub
   files are fetched by :func:`fetch` through ``huggingface_hub`` (:mod:`vitlab.weights.hfhub`:
   its cache, offline mode, revisions) and checked against the SHA-256 their cache blob is named
   by; :func:`download` of an ``hf://`` URL reads it from ``X-Linked-Etag`` on the resolve URL
   and keeps it beside the cached file (``NAME.sha256``) so the cache is re-verified offline;
3. for torchvision / mindcv style names (``vit_b_16-c867db91.pth``), the SHA-256 prefix in the
   name: 8 hex digits, i.e. 32 bits, which catches a torn or wrong file, not a crafted one;
4. nothing else: such a download is used with a warning that it is not hash-checked.

A failed hash check raises :class:`HashMismatchError` (exit 10) and removes the file; a failed
download raises :class:`~vitlab.errors.DownloadError` (exit 11) naming the URL and the offline
way (``--weights FILE``). A cached file is re-verified on every use. The cache folder is an
argument (default ``~/.cache/vitlab``); ``file://`` and local ``http://`` URLs are how the tests
run offline.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from vitlab.errors import DownloadError
from vitlab.utils import progress
from vitlab.weights.errors import HashMismatchError, MappingError
from vitlab.weights.specs import WeightSpec, get_spec, name_hash

log = logging.getLogger("vitlab.weights")
DEFAULT_CACHE = Path("~/.cache/vitlab").expanduser()
HF_ENDPOINT = "https://huggingface.co"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What a failed transfer raises: no network or DNS, refused, HTTP errors, timeouts, a cut stream.
_NET_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)
# Architecture fields a file must agree on with the model it is loaded into.
ARCH_FIELDS = ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_dim", "qkv_bias", "class_token",
               "dist_token", "global_pool", "fc_norm", "representation_size", "stem", "norm_eps", "act")
# Numerics: the weights' own win over the preset's (set_numerics), so they are not a mismatch.
NUMERIC_FIELDS = ("norm_eps", "act")


def resolve_url(url: str) -> str:
    """``hf://<org>/<repo>/<file>`` -> the hub's resolve URL; other URLs unchanged."""
    if url.startswith("hf://"):
        org, repo, file = url[len("hf://"):].split("/", 2)
        return f"{HF_ENDPOINT}/{org}/{repo}/resolve/main/{file}"
    return url


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _offline_hint(url: str, why: str) -> DownloadError:
    return DownloadError(f"{url}: download failed ({why}); offline? fetch the file another way and pass "
                         "--weights FILE (Python: weights=FILE)")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # keep the hub's own headers
        return None


def hub_sha256(url: str, timeout: float = 60.0) -> str:
    """The hub's SHA-256 of the file at a resolve ``url`` (an LFS file's ``X-Linked-Etag``).

    DownloadError when the hub cannot be reached or gives no SHA-256 (then nothing could verify it).
    """
    request = urllib.request.Request(url, method="HEAD")
    try:
        resp = urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as err:
        if err.code not in (301, 302, 303, 307, 308):
            raise _offline_hint(url, f"HTTP {err.code}") from None
        resp = err
    except _NET_ERRORS as err:
        raise _offline_hint(url, str(getattr(err, "reason", err))) from None
    with resp:
        tag = resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or ""
    digest = tag.strip().removeprefix("W/").strip('"').lower()
    if not _SHA256.match(digest):
        raise DownloadError(f"{url}: the hub sent no SHA-256 for this file, so it cannot be verified; "
                            "download it yourself and pass --weights FILE")
    return digest


def _check(digest: str, url: str, sha256: str | None) -> str:
    """Compare ``digest`` with what is known of the file; returns what was checked ('' for nothing)."""
    if sha256 and digest != sha256.lower():
        raise HashMismatchError(f"{url}: sha256 {digest} differs from the expected {sha256}")
    if sha256:
        return "sha256"
    prefix = name_hash(url)
    if prefix and not digest.startswith(prefix):
        raise HashMismatchError(f"{url}: sha256 {digest[:16]}... does not start with {prefix} from the file name")
    return "name prefix" if prefix else ""


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _verify_cached(dest: Path, url: str, sha256: str | None) -> Path:
    """A cached file, re-verified; a bad one is removed (never used) and reported."""
    known = sha256 or (_sidecar(dest).read_text().strip() if _sidecar(dest).is_file() else None)
    try:
        _check(sha256_of(dest), url, known)
    except HashMismatchError as err:
        dest.unlink(missing_ok=True)
        _sidecar(dest).unlink(missing_ok=True)
        raise HashMismatchError(f"{err} (cached copy {dest} removed: run again to download it afresh)") from None
    return dest


def _stream(url: str, fd: int, timeout: float) -> str:
    """Copy ``url`` into the open temp file ``fd``, fsync it; returns the SHA-256 of the bytes."""
    h = hashlib.sha256()
    with os.fdopen(fd, "wb") as out:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - https / file only
                size = resp.headers.get("Content-Length")
                name = url.rsplit("/", 1)[-1][:40]
                with progress.bar(int(size) if size and size.isdigit() else None, f"download {name}", unit="B") as b:
                    b.unit_scale, b.unit_divisor = True, 1024  # MB/s and sizes in bytes' units
                    while chunk := resp.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        b.update(len(chunk))
        except urllib.error.HTTPError as err:
            raise _offline_hint(url, f"HTTP {err.code} {err.reason}") from None
        except _NET_ERRORS as err:
            raise _offline_hint(url, str(getattr(err, "reason", err)) or type(err).__name__) from None
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is there; atomic rename after the hash check."""
    dest = Path(dest)
    original, url = url, resolve_url(url)
    if dest.is_file():
        return _verify_cached(dest, url, sha256)
    from_hub = not sha256 and original.startswith("hf://")
    if from_hub:
        sha256 = hub_sha256(url, timeout)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        checked = _check(_stream(url, fd, timeout), url, sha256)
        if from_hub:
            _sidecar(dest).write_text(f"{sha256}\n")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not checked:
        warnings.warn(f"{url}: not hash-checked (no SHA-256 is published for it): check {dest} yourself", stacklevel=2)
    return dest


def fetch(spec: WeightSpec, cache_dir: str | Path | None = None) -> Path:
    """The local, verified file of a spec (downloaded on first use).

    ``hf://`` files go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, progress bar;
    :mod:`vitlab.weights.hfhub`); plain URLs through :func:`download` into vitlab's cache.
    """
    if spec.url.startswith("hf://"):
        from vitlab.weights.hfhub import hub_file

        repo, file = spec.url[len("hf://"):].rsplit("/", 1)
        path = hub_file(repo, file, cache_dir=cache_dir)
        assert path is not None
        if spec.sha256 and sha256_of(path) != spec.sha256.lower():
            raise HashMismatchError(f"{spec.url}: sha256 of {path} differs from the pinned {spec.sha256}")
        return path
    if not spec.url.startswith(("https://", "file://")):
        raise MappingError(f"{spec.name}: refusing to download from {spec.url!r} (https, hf:// or file:// only)")
    return download(spec.url, Path(cache_dir or DEFAULT_CACHE) / spec.filename, spec.sha256)


def pretrained_overrides(model_name: str, tag: str) -> dict[str, Any]:
    """Config fields a spec fixes: preprocessing, classes, input size and numerics."""
    spec = get_spec(model_name, tag)
    return dict(mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct, interpolation=spec.interpolation,
                num_classes=spec.num_classes, img_size=spec.img_size, **spec.extra)


def set_numerics(model: nn.Module, norm_eps: float, act: str) -> None:
    """Give a built ViT other numerics in place: every LayerNorm's eps, every MLP's activation.

    In place because callers (``train --weights``) hold the model; its config follows.
    """
    from vitlab.layers.mlp import Mlp, make_activation

    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = norm_eps
        elif isinstance(m, Mlp):
            m.act = make_activation(act)  # type: ignore[arg-type]
    model.config = model.config.replace(norm_eps=norm_eps, act=act)


def _adopt_numerics(model: nn.Module, got: Any, path: Path, numerics: Mapping[str, Any]) -> dict[str, Any]:
    """The source's eps / activation win over the preset's (unless given explicitly); returns what changed."""
    cfg = model.config
    want = {k: numerics.get(k, getattr(got, k)) for k in NUMERIC_FIELDS}
    changed = {k: (getattr(cfg, k), v) for k, v in want.items() if getattr(cfg, k) != v}
    if changed:
        set_numerics(model, want["norm_eps"], want["act"])
        log.warning("%s: using the weights' own numerics %s (the preset %s has %s)", path,
                    ", ".join(f"{k}={v[1]!r}" for k, v in changed.items()), getattr(model, "model_name", None) or "model",
                    ", ".join(f"{k}={v[0]!r}" for k, v in changed.items()))
    return {k: v[1] for k, v in changed.items()}


def load_weights_into(model: nn.Module, model_name: str, pretrained: str | None = None, weights: str | Path | None = None,
                      cache_dir: str | Path | None = None, resample: str = "bicubic-aa",
                      numerics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fill a freshly built registry model from a spec tag (downloaded) or a local file or folder (offline).

    The file is converted at the model's size and heads and resampled to its input size; a
    different number of classes gives a new head. The weights' own numerics (LayerNorm eps,
    activation: MindSpore's 1e-7 and tanh GELU, an HF config.json's) replace the preset's, said
    in one warning line, unless ``numerics`` fixes them. Architecture mismatches raise before
    anything is copied. Sets ``model.class_names``, ``model.weights_info`` and ``model.pretrained_cfg``.
    """
    import vitlab.weights.pretrained_cfg as pcfg
    from vitlab.weights.api import import_weights
    from vitlab.weights.keymap import load_into

    if (pretrained is None) == (weights is None):
        raise MappingError("give exactly one of pretrained= (a tag) and weights= (a file)")
    fmt, spec = None, None
    if pretrained is not None:
        spec = get_spec(model_name, pretrained)
        path, fmt = fetch(spec, cache_dir), spec.fmt
    else:
        path = Path(weights)  # type: ignore[arg-type]
    cfg = model.config
    imp = import_weights(path, fmt, img_size=cfg.img_size, num_classes=cfg.num_classes, num_heads=cfg.num_heads,
                         global_pool=cfg.global_pool, resample=resample, **dict(numerics or {}))
    got = imp.model.config
    wrong = [f"{f}: file {getattr(got, f)!r} vs model {getattr(cfg, f)!r}" for f in ARCH_FIELDS
             if f not in NUMERIC_FIELDS and getattr(got, f) != getattr(cfg, f)]
    if wrong:
        raise MappingError(f"{path}: weights do not fit {model_name}: " + "; ".join(wrong))
    adopted = _adopt_numerics(model, got, path, numerics or {})
    load_into(model, imp.model.state_dict(), str(path))
    info = {**imp.info, **({"numerics_from_weights": adopted} if adopted else {})}
    model.class_names = imp.class_names
    model.weights_info = info
    model.pretrained_cfg = (pcfg.from_spec(spec, model.config, imp.class_names) if spec is not None
                            else pcfg.from_import(info, model.config, model_name, imp.class_names))
    info["pretrained_cfg"] = pcfg.jsonable(model.pretrained_cfg)
    return info
