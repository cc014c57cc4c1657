"""Hugging Face ``datasets`` as a classification dataset: ``hf:/path``.

``/path`` is a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``), or parquet
files: one file, a glob, or a folder of them. Splits are the dataset's own: a ``DatasetDict``'s
``train`` / ``validation`` (or ``val``, ``valid``) / ``test``, or the split names ``datasets``
infers from parquet file names (``data/train-00000-of-00004.parquet``, ``validation-*``,
``test-*``); without a validation split, val is carved from train (:mod:`vitlab.data.splits`).
Parquet is converted once to Arrow under the ``datasets`` cache (``HF_DATASETS_CACHE``), as
``datasets.load_dataset`` does, and read memory-mapped from there: random access, so the engine's
resumable sampler, exact resume and the torchrun split apply as for folders.

Columns: ``image`` (an ``Image`` feature, or encoded bytes) and ``label`` (a ``ClassLabel``, whose
names are the class names; a plain integer column takes ``classes`` or the labels ``0..N-1``).
Images are decoded by vitlab's guarded opener, never by ``datasets``, under the bad-sample policy.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from vitlab.data.bad_samples import BadFiles, ImagePolicy, load_or_substitute
from vitlab.data.fingerprint import labelled_fingerprint
from vitlab.data.image_io import open_image
from vitlab.errors import DataError

PREFIX = "hf:"
LOG = logging.getLogger("vitlab.data")
ROLE_NAMES = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("hf: sources need the datasets package (pip install 'vitlab[streaming]')") from None
    return datasets


def _path(source: str) -> Path:
    return Path(source[len(PREFIX):] if source.startswith(PREFIX) else source).expanduser()


def hf_splits(source: str) -> dict[str, str]:
    """``{role: split name}`` of the roles ("train", "val", "test") ``hf:PATH`` has of its own."""
    path = _path(source)
    if (path / "dataset_dict.json").is_file():
        names = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
    elif (path / "state.json").is_file():
        return {"train": "train"}  # one saved Dataset: the training split
    elif path.is_dir() or path.suffix == ".parquet" or any(c in path.name for c in "*?"):
        names = list(_parquet_files(path))
    else:
        raise DataError(f"{PREFIX}{path}: not found (expected a save_to_disk folder or parquet files)")
    roles = {role: next(n for n in wanted if n in names) for role, wanted in ROLE_NAMES.items()
             if any(n in names for n in wanted)}
    if "train" not in roles:
        raise DataError(f"{PREFIX}{path}: no train split (splits: {', '.join(names) or 'none'})")
    return roles


def _parquet_files(path: Path) -> dict[str, list[str]]:
    """Split name -> parquet file patterns, as ``datasets`` infers them from the file names."""
    if not path.is_dir():
        if not path.is_file() and not any(c in path.name for c in "*?"):
            raise DataError(f"{PREFIX}{path}: parquet file not found")
        return {"train": [str(path)]}
    if not any(path.rglob("*.parquet")):
        raise DataError(f"{PREFIX}{path}: no save_to_disk dataset (dataset_dict.json / state.json) and no .parquet "
                        "files in the folder")
    from datasets.data_files import get_data_patterns

    return {split: [str(path / p) for p in pats] for split, pats in get_data_patterns(str(path)).items()}


def load_split(source: str, role: str) -> Any:
    """The ``datasets.Dataset`` of ``role`` ("train", "val", "test") of ``hf:PATH``."""
    roles = hf_splits(source)
    if role not in roles:
        raise DataError(f"{PREFIX}{_path(source)}: has no {role} split")
    ds, path = _datasets(), _path(source)
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = ds.load_from_disk(str(path))
            return loaded[roles[role]] if isinstance(loaded, ds.DatasetDict) else loaded
        files = _parquet_files(path)
        return ds.load_dataset("parquet", data_files={roles[role]: files[roles[role]]}, split=roles[role])
    except (OSError, ValueError) as err:  # a torn arrow / parquet file, unreadable metadata
        raise DataError(f"{PREFIX}{path}: cannot load the {role} split ({str(err).splitlines()[0][:200]})") from None


class HFImageDataset(Dataset):
    """A ``datasets.Dataset`` with ``image`` and ``label`` columns; items are ``(transform(rgb), label)``.

    Images are read through :func:`vitlab.data.image_io.open_image` under ``policy``; one that
    cannot be decoded is replaced by the next readable row (:mod:`vitlab.data.bad_samples`).
    """

    def __init__(self, data: Any, classes: Sequence[str] | None = None, transform: Callable[[Any], Any] | None = None,
                 policy: ImagePolicy | None = None, name: str = "") -> None:
        self.origin, self.transform = name, transform
        self.policy = policy if policy is not None else ImagePolicy()
        self.bad = BadFiles(self.policy)
        self.data = _undecoded(data, name)
        self.targets: list[int] = [int(v) for v in self.data["label"]]
        bad = sum(1 for v in self.targets if v < 0)
        if bad:  # e.g. the hub's ImageNet test split: every label -1
            hint = "; train with --test none (data.test: null)" if name.endswith(":test") else ""
            raise DataError(f"{name}: {bad} of {len(self.targets)} rows have no label (label < 0): an unlabelled "
                            f"split cannot be trained or scored on{hint}")
        self.classes = _names(self.data.features["label"], classes, max(self.targets, default=-1), name)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        def where(i: int) -> str:
            return f"{self.origin}[{i}]"

        def load(i: int) -> tuple[Any, int]:
            return open_image(_image_source(self.data[i]["image"], where(i)), self.policy.max_pixels), self.targets[i]

        image, label = load_or_substitute(index, len(self.targets), load, where, self.bad,
                                          f"{self.origin}: no image in the dataset can be decoded")
        return (self.transform(image) if self.transform is not None else image), label

    def sample_fingerprint(self, indices: Sequence[int] | None = None) -> dict[str, dict]:
        """Per class: the row count and a digest of (row, encoded image size) of ``indices`` (all rows)."""
        sizes = _image_sizes(self.data)
        rows = range(len(self.targets)) if indices is None else indices
        return labelled_fingerprint(self.classes, ((self.targets[i], f"{i}\0{sizes[i]}") for i in rows))


def _undecoded(data: Any, name: str) -> Any:
    """``data`` with its image column left encoded (vitlab's opener decodes it); DataError naming a missing column."""
    ds = _datasets()
    missing = [c for c in ("image", "label") if c not in data.column_names]
    if missing:
        raise DataError(f"{name}: no {' or '.join(repr(c) for c in missing)} column (columns: "
                        f"{', '.join(data.column_names)}); classification needs 'image' and 'label'")
    data = data.select_columns(["image", "label"])  # a row read fetches these two only
    feature = data.features["image"]
    if isinstance(feature, ds.Image):
        return data.cast_column("image", ds.Image(decode=False))
    if getattr(feature, "dtype", None) in ("binary", "large_binary"):
        return data
    raise DataError(f"{name}: the 'image' column is {feature}, expected an Image feature or encoded bytes")


def _image_source(value: Any, where: str) -> Any:
    """A file-like (named ``where``) or path for the opener, from an undecoded Image value or raw bytes."""
    if isinstance(value, dict):
        if value.get("bytes") is None and value.get("path"):
            return Path(value["path"])
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)):
        raise DataError(f"{where}: no image bytes or path in the row")
    data = io.BytesIO(value)
    data.name = where  # the opener's messages name the row
    return data


def _names(feature: Any, classes: Sequence[str] | None, top: int, name: str) -> list[str]:
    names = getattr(feature, "names", None)
    if names:
        if top >= len(names):
            raise DataError(f"{name}: label {top} but the ClassLabel feature has {len(names)} names")
        return list(names)
    if classes is not None:
        if top >= len(classes):
            raise DataError(f"{name}: label {top} but only {len(classes)} class names were given")
        return list(classes)
    LOG.warning("%s: the 'label' column is not a ClassLabel, so the labels 0..%d name the classes", name, top)
    return [str(i) for i in range(top + 1)]


def _image_sizes(data: Any) -> list[int]:
    """The encoded size of every row's image, from Arrow's offsets (no image bytes are read)."""
    import pyarrow.compute as pc

    out: list[int] = []
    for batch in data.with_format("arrow").iter(batch_size=65536):
        col = batch.column("image")
        if hasattr(col.type, "get_field_index"):  # the Image feature's struct<bytes, path>
            col = pc.struct_field(col, "bytes")
        out.extend(pc.fill_null(pc.binary_length(col), -1).to_pylist())
    return out


def open_hf(source: str, split: str, transform: Callable[[Any], Any] | None = None,
            classes: Sequence[str] | None = None, policy: ImagePolicy | None = None) -> HFImageDataset:
    """The ``split`` ("train", "val" or "test") of ``hf:PATH`` (see the module docstring)."""
    return HFImageDataset(load_split(source, split), classes, transform, policy, f"{PREFIX}{_path(source)}:{split}")


def describe_hf(source: str) -> str:
    """One line for logs: the dataset's path and the split names used for each role."""
    roles = hf_splits(source)
    return f"Hugging Face dataset {_path(source)} (" + ", ".join(f"{r}: {n}" for r, n in roles.items()) + ")"
