"""WebDataset tar shards as a classification dataset: ``wds:/data/imagenet-train-{000000..001023}.tar``.

A sample is the tar members sharing a key (webdataset's convention: the member name up to the
first dot of its base name): one image (``.jpg``, ``.png``, ... see ``IMAGE_EXTENSIONS``) and a
label, ``.cls`` (an integer as text) or ``.json`` (``{"label": int}``). The pattern is expanded as
webdataset expands it (braces, ``::`` between lists); a ``*`` / ``?`` glob also works.

Splits: when the pattern's file name has the word ``train`` (``train-{0..9}.tar``,
``imagenet-train-*.tar``), the files beside it named with ``val`` / ``validation`` / ``test``
instead are its validation and test splits; otherwise val is carved from it
(:mod:`vitlab.data.splits`). A folder (``wds:/data/shards/``) means its ``train/``, ``val/``
(``validation/``) and ``test/`` subfolders of shards, else its ``*.tar`` files split by name as
above. Class names: ``classes`` given by the caller, else ``classes.txt`` (one name a line) or
``dataset.json`` (``{"classes": [...]}``) beside the shards, else the labels ``0..N-1`` (said on
the ``vitlab.data`` logger).

Why random access and not a stream: every shard is indexed once (a scan of the tar headers and
the small label members, never the images: :mod:`vitlab.data.tar_scan`, ~13,000 samples per CPU
second here, so ImageNet's 1.28M take ~1.5 min), and sample ``i`` is then one seek and read, so the engine's resumable sampler
applies unchanged: the order is a permutation drawn from (seed, epoch), the position is the step
in the checkpoint, and each global batch is split between the torchrun ranks, so exact resume and
"each sample once per epoch across ranks" are the same proven code as for folders. webdataset's
own indexed reader (``wids``) is not shipped with webdataset 1.0 (the version this project
installs), and a shard-streaming order would need a second sampler and checkpoint field. The cost
is that reads are spread over all shards, as reads of an image folder are: right for local disks
and page-cached files, not for object storage (copy the shards locally first). Compressed shards
(``.tar.gz``) cannot be seeked into and are refused.
"""

from __future__ import annotations

import functools
import glob
import io
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from vitlab.data.bad_samples import BadFiles, ImagePolicy, load_or_substitute
from vitlab.data.fingerprint import labelled_fingerprint
from vitlab.data.image_io import open_image
from vitlab.data.tar_index import ShardIndex, index_shards, webdataset_module
from vitlab.errors import DataError

PREFIX = "wds:"
LOG = logging.getLogger("vitlab.data")
SPLIT_WORDS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
_WORD = r"(?<![A-Za-z]){}(?![A-Za-z])"  # a split word between separators or digits: "train-0", not "constrain"


def expand(pattern: str) -> list[Path]:
    """The shard files of ``pattern`` (braces as webdataset expands them, or a glob); DataError naming missing ones."""
    if any(c in pattern for c in "*?") and "{" not in pattern:
        found = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not found:
            raise DataError(f"{PREFIX}{pattern}: no shard matches the pattern")
        return [Path(p) for p in found]
    paths = [Path(p).expanduser() for p in webdataset_module().shardlists.expand_urls(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{PREFIX}{pattern}: {len(missing)} of {len(paths)} shard(s) missing ({shown})")
    return paths


def split_patterns(source: str) -> dict[str, str]:
    """``{split: pattern}`` of the splits ``wds:PATTERN`` has of its own (always "train")."""
    pattern = source[len(PREFIX):] if source.startswith(PREFIX) else source
    base = Path(pattern).expanduser()
    if base.is_dir():
        return _folder_splits(base)
    name = base.name
    word = re.search(_WORD.format("train"), name)
    if word is None:
        return {"train": pattern}
    out = {"train": pattern}
    for split in ("val", "test"):
        for other in SPLIT_WORDS[split]:
            sibling = re.sub(r"\{[^}]*\}", "*", name[: word.start()] + other + name[word.end():])
            if glob.glob(str(base.parent / sibling)):
                out[split] = str(base.parent / sibling)
                break
    return out


def _folder_splits(base: Path) -> dict[str, str]:
    subdirs = {s: next((base / w for w in SPLIT_WORDS[s] if any((base / w).glob("*.tar"))), None) for s in SPLIT_WORDS}
    if subdirs["train"] is not None:  # DIR/train/*.tar, DIR/val/*.tar, DIR/test/*.tar
        return {s: str(d / "*.tar") for s, d in subdirs.items() if d is not None}
    shards = sorted(p.name for p in base.glob("*.tar"))
    if not shards:
        raise DataError(f"{PREFIX}{base}: no .tar shards in the folder")
    named = {s: [n for n in shards if any(re.search(_WORD.format(w), n) for w in SPLIT_WORDS[s])] for s in SPLIT_WORDS}
    if not any(named.values()):
        return {"train": str(base / "*.tar")}
    unnamed = sorted(set(shards) - {n for names in named.values() for n in names})
    if unnamed or not named["train"]:
        what = f"{', '.join(unnamed[:3])} belong to no split" if unnamed else "no shard is named for train"
        raise DataError(f"{PREFIX}{base}: shards are named by split (train / val / test) but {what}; "
                        "give the training shards' pattern")
    return {s: "::".join(str(base / n) for n in names) for s, names in named.items() if names}


def class_names(shards: Sequence[Path], max_label: int, classes: Sequence[str] | None, source: str) -> list[str]:
    """The class names: ``classes``, else ``classes.txt`` / ``dataset.json`` beside the first shard (or one folder
    up from a ``train/`` / ``val/`` / ``test/`` folder of shards), else '0'..'N-1'."""
    folder = shards[0].parent
    names, origin = (list(classes), "given") if classes is not None else _names_file(folder)
    if names is None and any(folder.name in words for words in SPLIT_WORDS.values()):
        names, origin = _names_file(folder.parent)  # DIR/classes.txt beside DIR/train/, DIR/val/
    if names is None:
        names = [str(i) for i in range(max_label + 1)]
        _say_once(f"{PREFIX}{source}: no classes.txt or dataset.json beside the shards, so the labels 0..{max_label} "
                  f"name the {len(names)} classes")
    elif max_label >= len(names):
        raise DataError(f"{PREFIX}{source}: label {max_label} in the shards but only {len(names)} class names "
                        f"({origin})")
    if len(set(names)) != len(names):
        raise DataError(f"{PREFIX}{source}: class names repeat ({origin})")
    return names


@functools.lru_cache(maxsize=64)
def _say_once(message: str) -> None:
    """One warning per process, although train, val and test each open the source."""
    LOG.warning("%s", message)


def _names_file(folder: Path) -> tuple[list[str] | None, str]:
    txt, meta = folder / "classes.txt", folder / "dataset.json"
    if txt.is_file():
        return [line.strip() for line in txt.read_text().splitlines() if line.strip()], str(txt)
    if meta.is_file():
        try:
            names = json.loads(meta.read_text())["classes"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise DataError(f'{meta}: expected {{"classes": ["name", ...]}}') from None
        return names, str(meta)
    return None, ""


class WdsDataset(Dataset):
    """The samples of some tar shards; items are ``(transform(rgb image), label)``.

    Images are read through the guarded opener (:func:`vitlab.data.image_io.open_image`) under
    ``policy``; one that cannot be decoded is replaced by the next readable sample, as
    :mod:`vitlab.data.bad_samples` describes. ``targets`` are the labels (for the val carve-out).
    """

    def __init__(self, index: ShardIndex, classes: list[str], transform: Callable[[Any], Any] | None = None,
                 policy: ImagePolicy | None = None, name: str = "") -> None:
        self.index, self.classes, self.transform, self.origin = index, classes, transform, name
        self.policy = policy if policy is not None else ImagePolicy()
        self.bad = BadFiles(self.policy)
        self.targets: list[int] = index.label.tolist()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        def load(i: int) -> tuple[Any, int]:
            data = io.BytesIO(self.index.read(i))
            data.name = self.index.name(i)  # the opener's messages name the shard and sample
            return open_image(data, self.policy.max_pixels), self.targets[i]

        image, label = load_or_substitute(index, len(self.index), load, self.index.name, self.bad,
                                          f"{self.origin}: no image in the shards can be decoded")
        return (self.transform(image) if self.transform is not None else image), label

    def sample_fingerprint(self, indices: Sequence[int] | None = None) -> dict[str, dict]:
        """Per class: the sample count and a digest of (shard file name, key, image size) of ``indices`` (all)."""
        ix = self.index
        rows = range(len(ix)) if indices is None else indices
        return labelled_fingerprint(self.classes, ((self.targets[i], f"{ix.shards[int(ix.shard[i])].name}\0{ix.key_of(i)}"
                                                    f"\0{int(ix.size[i])}") for i in rows))


def open_wds(source: str, split: str, transform: Callable[[Any], Any] | None = None,
             classes: Sequence[str] | None = None, policy: ImagePolicy | None = None) -> WdsDataset:
    """The ``split`` ("train", "val" or "test", one :func:`split_patterns` has) of ``wds:PATTERN``."""
    pattern = source[len(PREFIX):] if source.startswith(PREFIX) else source
    splits = split_patterns(pattern)
    if split not in splits:
        raise DataError(f"{PREFIX}{pattern}: has no {split} shards")
    index = index_shards(expand(splits[split]))
    # Without names, N is the largest label of all the source's splits, so train and val agree.
    top = max(int(index_shards(expand(p)).label.max()) for p in splits.values()) if classes is None else \
        int(index.label.max())
    names = class_names(index.shards, top, classes, pattern)
    return WdsDataset(index, names, transform, policy, f"{PREFIX}{pattern}")


def describe_wds(source: str) -> str:
    """One line for logs: the splits found and their patterns."""
    pattern = source[len(PREFIX):] if source.startswith(PREFIX) else source
    return "WebDataset shards (" + "; ".join(f"{s}: {p}" for s, p in split_patterns(pattern).items()) + ")"
