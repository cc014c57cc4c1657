"""Files on the Hugging Face hub, through ``huggingface_hub``: its cache, offline mode, revisions, progress.

Hub ids are ``hf-hub:org/name`` (timm's spelling) or a bare ``org/name``, optionally ``@revision``.
``huggingface_hub`` downloads into its own cache (``HF_HUB_CACHE``, or ``cache_dir/hub`` when
vitlab is given a cache folder), honours ``HF_HUB_OFFLINE=1`` (then only the cache is read) and
shows its progress bar. Every file it hands back is checked against the name the cache stores
it under: an LFS blob is named by its SHA-256 (all 256 bits), a small git file by its git blob
SHA-1; a mismatch removes the file and raises :class:`HashMismatchError` (exit 10). A file that
cannot be had (offline and not cached, unknown repo or revision, no network) is one
:class:`~vitlab.errors.DownloadError` line (exit 11).
"""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from vitlab.errors import DownloadError
from vitlab.weights.errors import HashMismatchError

HUB_PREFIX = "hf-hub:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def parse_hub_id(name: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) of ``hf-hub:org/name[@rev]`` or ``org/name[@rev]``; None otherwise."""
    text = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    repo, _, rev = text.partition("@")
    if not _REPO.match(repo) or (not name.startswith(HUB_PREFIX) and Path(name).exists()):
        return None
    return repo, rev or None


def _hub_cache(cache_dir: str | Path | None) -> str | None:
    return str(Path(cache_dir) / "hub") if cache_dir is not None else None


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's own object id


def verify_cached(path: Path, label: str) -> Path:
    """Check a cache file against its blob name (SHA-256 for LFS, git SHA-1 for small files)."""
    blob = path.resolve()
    name = blob.name
    if _SHA256.match(name):
        h = hashlib.sha256()
        with open(blob, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        got = h.hexdigest()
    elif _SHA1.match(name):
        got = _git_blob_sha1(blob)
    else:
        return path  # not a blob of the hub's cache layout (e.g. a local_dir copy): nothing to check against
    if got != name:
        blob.unlink(missing_ok=True)
        raise HashMismatchError(f"{label}: cached file hashes to {got[:16]}..., not its hub id {name[:16]}... "
                                "(removed: run again to download it afresh)")
    return path


def _errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    extra: tuple[type[BaseException], ...] = ()
    try:
        import httpx

        extra = (httpx.HTTPError,)
    except ImportError:  # older huggingface_hub uses requests, whose errors are ConnectionError / OSError
        pass
    return (EntryNotFoundError, HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, ConnectionError,
            TimeoutError, *extra)


def _why(err: BaseException) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(err, RevisionNotFoundError):
        return "no such revision"
    if isinstance(err, RepositoryNotFoundError):
        return "no such repository (or it is private / gated)"
    if constants.is_offline_mode():
        return "not in the local cache and HF_HUB_OFFLINE=1 is set"
    root = err
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    if isinstance(err, EntryNotFoundError) and root is err:
        return "no such file in the repository, and not in the local cache"
    return (str(root).splitlines() or [type(root).__name__])[0][:160]


def _unresolvable() -> str | None:
    """Why the hub's host cannot be resolved (no network, no DNS), or None.

    Checked first because huggingface_hub retries a failed connection five times with backoff
    (about 30 s) before it falls back to its cache; with no name resolution there is nothing to
    wait for, so the cache is read at once.
    """
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        return f"cannot resolve {host}: {getattr(err, 'strerror', None) or err}"
    return None


def hub_file(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | Path | None = None,
             missing_ok: bool = False) -> Path | None:
    """The local, verified copy of ``filename`` in ``repo_id`` (downloaded on first use).

    ``missing_ok``: None when the repo has no such file (or, offline, the cache has none).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    label = f"hf-hub:{repo_id}{'@' + revision if revision else ''}/{filename}"
    no_network = None if constants.is_offline_mode() else _unresolvable()
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=_hub_cache(cache_dir),
                                    local_files_only=no_network is not None))
    except _errors() as err:
        if missing_ok and isinstance(err, EntryNotFoundError):
            return None
        why = f"{no_network}; not in the local cache" if no_network else _why(err)
        raise DownloadError(f"{label}: download failed ({why}); fetch it another way and pass --weights "
                            "FILE or DIR (Python: weights=...)") from None
    return verify_cached(path, label)


def hub_folder(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A snapshot folder of ``repo_id`` holding config.json, the weights and (if any) preprocessor_config.json.

    Fetches only those files (not the repo's other formats); the weights are model.safetensors,
    else pytorch_model.bin.
    """
    config = hub_file(repo_id, "config.json", revision, cache_dir)
    assert config is not None
    if hub_file(repo_id, WEIGHT_FILES[0], revision, cache_dir, missing_ok=True) is None:
        hub_file(repo_id, WEIGHT_FILES[1], revision, cache_dir)
    hub_file(repo_id, "preprocessor_config.json", revision, cache_dir, missing_ok=True)  # timm repos need none
    return config.parent
