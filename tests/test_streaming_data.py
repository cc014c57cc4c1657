"""Data beyond folders: WebDataset tar shards (``wds:``) and Hugging Face datasets (``hf:``).

Shards are written with webdataset's own ``TarWriter`` and read back with its own ``WebDataset``
pipeline as the reference; HF datasets are built and decoded by ``datasets`` itself. Images are
real CIFAR-10 JPEGs from ../shared/data when present, else synthetic ones.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from run_helpers import last_weights_equal, losses, records, signal_at
from vitlab.cli.main import main
from vitlab.data.bad_samples import ImagePolicy, SubstitutedLabel
from vitlab.data.seeded import SeededTransform
from vitlab.data.sources import native_splits, open_source
from vitlab.engine.task import fingerprint_changes
from vitlab.errors import DataError
from vitlab.tasks.classification import ClassificationTask

wds = pytest.importorskip("webdataset")
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg" / "train"
CLASSES = ["airplane", "automobile", "bird"]
PER_CLASS = 15  # 12 for train (3 shards of 4 per class), 3 for val


def _photos() -> dict[str, list[bytes]]:
    """JPEG bytes per class: real CIFAR-10 photos, else seeded noise images."""
    if CIFAR.is_dir():
        return {c: [(CIFAR / c / f"{i:04d}.jpg").read_bytes() for i in range(PER_CLASS)] for c in CLASSES}
    rng, out = np.random.default_rng(0), {}
    for c in CLASSES:
        out[c] = []
        for _ in range(PER_CLASS):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
            out[c].append(buf.getvalue())
    return out


PHOTOS = _photos()


def _write(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            sink.write(s)
    return path


def _samples(lo: int, hi: int) -> list[dict]:
    return [{"__key__": f"{c}_{i:04d}", "jpg": PHOTOS[c][i], "cls": label}
            for label, c in enumerate(CLASSES) for i in range(lo, hi)]


def _shards(folder: Path, prefix: str = "train", names: bool = True) -> str:
    """FOLDER/{prefix}-00000{0..2}.tar (12 per class) + FOLDER/val-000000.tar (3 per class); the wds: source."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(3):
        _write(folder / f"{prefix}-{s:06d}.tar", _samples(4 * s, 4 * s + 4))
    _write(folder / "val-000000.tar", _samples(12, 15))
    if names:
        (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return f"wds:{folder}/{prefix}-{{000000..000002}}.tar"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _shards(tmp_path_factory.mktemp("wds"))


def test_index_reads_what_webdatasets_own_pipeline_reads(shards: str, tmp_path: Path) -> None:
    train = open_source(shards, "train", carve_val=False)
    pattern = shards[len("wds:"):]
    want = {s["__key__"]: (s["jpg"], int(s["cls"])) for s in wds.WebDataset(pattern, shardshuffle=False)}
    got = {train.index.key_of(i): (train.index.read(i), train.targets[i]) for i in range(len(train))}
    assert len(got) == 36 and got == want
    assert train.classes == CLASSES  # from classes.txt
    image, label = train[5]
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(want[train.index.key_of(5)][0]))))
    # Negative control: the same keys with shifted labels are told apart.
    other = _write(tmp_path / "train-000000.tar", [{**s, "cls": (s["cls"] + 1) % 3} for s in _samples(0, 4)])
    shifted = open_source(f"wds:{other}", "train", carve_val=False, classes=CLASSES)
    assert shifted.targets != [want[shifted.index.key_of(i)][1] for i in range(12)]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_scan_reads_every_tar_dialect_as_webdataset_does(tmp_path: Path, fmt: int) -> None:
    """Long names (GNU 'L' / pax path / ustar prefix), non-ASCII keys, folders inside the tar."""
    path = tmp_path / "train.tar"
    deep = "d" * 60 + "/" + "e" * 60  # > 100 characters: needs the long-name mechanism of each format
    keys = [f"{deep}/k{i}" for i in range(3)] + (["caf\u00e9_1"] if fmt != tarfile.USTAR_FORMAT else [])
    with tarfile.open(path, "w", format=fmt) as tar:
        for i, key in enumerate(keys):
            for ext, data in (("jpg", PHOTOS["bird"][i]), ("cls", str(i % 3).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    ds = open_source(f"wds:{path}", "train", carve_val=False)
    want = {s["__key__"]: (s["jpg"], int(s["cls"])) for s in wds.WebDataset(str(path), shardshuffle=False)}
    assert {ds.index.key_of(i): (ds.index.read(i), ds.targets[i]) for i in range(len(ds))} == want
    assert len(want) == len(keys)
    torn = tmp_path / "torn.tar"
    torn.write_bytes(path.read_bytes()[:1500])  # the end of a copy that stopped half way
    with pytest.raises(DataError, match="the tar is cut short"):
        open_source(f"wds:{torn}", "train", carve_val=False)


def test_mutated_shards_are_read_or_refused_with_one_data_error(tmp_path: Path) -> None:
    """Fuzzing the header scan and label parsing: random byte changes and cuts of a valid shard."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    path = tmp_path / "train.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i, data in enumerate([PHOTOS["bird"][0], b"2", json.dumps({"label": 1}).encode()]):
            info = tarfile.TarInfo(f"{'x' * 120}/k{i // 2}.{['jpg', 'cls', 'json'][i]}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    good = path.read_bytes()
    target = tmp_path / "mutated.tar"

    @hypothesis.settings(max_examples=60, deadline=None, database=None,
                         suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
    @hypothesis.given(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), max_size=6),
                      st.one_of(st.just(len(good)), st.integers(0, len(good))))
    def check(changes: list[tuple[int, int]], cut: int) -> None:
        data = bytearray(good[:cut])
        for at, value in changes:
            if at < len(data):
                data[at] = value
        target.write_bytes(bytes(data))
        try:
            ds = open_source(f"wds:{target}", "train", carve_val=False, classes=CLASSES)
            for i in range(len(ds)):
                ds[i]  # an undecodable image is substituted or refused, never another exception
        except DataError:
            pass

    check()


def test_own_splits_by_name_else_a_carve_out(shards: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert native_splits(shards) == ("train", "val")
    val = open_source(shards, "val")
    assert len(val) == 9 and sorted({val.index.key_of(i).split("_")[1] for i in range(9)}) == ["0012", "0013", "0014"]
    assert len(open_source(shards, "train")) == 36  # the val shards exist: nothing carved from train
    folder = Path(shards[len("wds:"):]).parent
    assert native_splits(f"wds:{folder}") == ("train", "val")  # a folder of shards named by split
    nested = tmp_path / "nested"
    for split, (lo, hi) in (("train", (0, 4)), ("validation", (12, 14))):
        (nested / split).mkdir(parents=True)
        _write(nested / split / "part-0.tar", _samples(lo, hi))
    (nested / "classes.txt").write_text("\n".join(CLASSES))
    assert native_splits(f"wds:{nested}") == ("train", "val")  # DIR/train/*.tar, DIR/validation/*.tar
    assert (len(open_source(f"wds:{nested}", "val")), open_source(f"wds:{nested}", "train").classes) == (6, CLASSES)
    # No split word: val is carved (stratified, seeded) and never shares a sample with train.
    plain = _shards(tmp_path / "plain", prefix="shard", names=False)
    (tmp_path / "plain" / "dataset.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    assert native_splits(plain) == ("train",)
    tr, va = open_source(plain, "train"), open_source(plain, "val")
    assert (len(tr), len(va)) == (33, 3) and not set(tr.indices) & set(va.indices) and tr.classes == ["a", "b", "c"]
    (tmp_path / "plain" / "dataset.json").unlink()
    with caplog.at_level(logging.WARNING, logger="vitlab.data"):
        assert open_source(plain, "train", carve_val=False).classes == ["0", "1", "2"]
    assert "labels 0..2 name the 3 classes" in caplog.text  # said, not silent


def test_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _shards(tmp_path / "d")
    (tmp_path / "d" / "train-000001.tar").unlink()
    with pytest.raises(DataError, match=r"1 of 3 shard\(s\) missing \(.*train-000001.tar\)"):
        open_source(src, "train")
    broken = _samples(0, 2)
    del broken[1]["cls"]
    with pytest.raises(DataError, match="malformed sample 'airplane_0001': no label"):
        open_source(f"wds:{_write(tmp_path / 'nolabel.tar', broken)}", "train", carve_val=False)
    bad_cls = _samples(0, 1) + [{"__key__": "x", "jpg": PHOTOS["bird"][0], "cls": b"bird"}]
    with pytest.raises(DataError, match=r"bad_cls.tar:x.cls: malformed label \(.cls must hold a non-negative"):
        open_source(f"wds:{_write(tmp_path / 'bad_cls.tar', bad_cls)}", "train", carve_val=False)
    gz = tmp_path / "train.tar.gz"
    gz.write_bytes(__import__("gzip").compress((tmp_path / "nolabel.tar").read_bytes()))
    with pytest.raises(DataError, match="not a readable uncompressed tar shard"):
        open_source(f"wds:{gz}", "train", carve_val=False)
    code = main(["train", "--model", "vit_pico_patch4_32", "--data", f"wds:{tmp_path}/none-{{0..3}}.tar", "--out",
                 str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and err.count("\n") == 0 and "4 of 4 shard(s) missing" in err and "Traceback" not in err


def test_unreadable_image_is_substituted_and_counted_or_strict(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    samples = _samples(0, 2)
    samples[0]["jpg"] = b"\xff\xd8 not a jpeg"
    path = _write(tmp_path / "bad.tar", samples)
    ds = open_source(f"wds:{path}", "train", carve_val=False, classes=CLASSES)
    with caplog.at_level(logging.WARNING, logger="vitlab.data"):
        image, label = ds[0]
    assert isinstance(label, SubstitutedLabel) and int(label) == 0 and image.size == (32, 32)
    assert "bad.tar:airplane_0000: cannot read image" in caplog.text
    assert not isinstance(ds[1][1], SubstitutedLabel)  # a readable one is itself (negative control)
    strict = open_source(f"wds:{path}", "train", carve_val=False, classes=CLASSES, policy=ImagePolicy(strict=True))
    with pytest.raises(DataError, match="airplane_0000: cannot read image.*--strict-data"):
        strict[0]


def _fingerprint(source: str, carve: bool) -> dict:
    raw = open_source(source, "train", carve_val=carve)
    return ClassificationTask(SeededTransform(raw, None, 0), raw, list(raw.classes)).data_fingerprint()


@pytest.mark.parametrize("carve", [False, True])
def test_resume_fingerprint_names_the_class_whose_samples_changed(tmp_path: Path, carve: bool) -> None:
    src = _shards(tmp_path / "d", prefix="shard")
    before = _fingerprint(src, carve)
    assert fingerprint_changes(before, _fingerprint(src, carve)) == []  # negative control: same data
    changed = _samples(4, 8)
    changed[9]["jpg"] = PHOTOS["bird"][14]  # one bird image replaced, same key, same count
    _write(tmp_path / "d" / "shard-000001.tar", changed)
    assert fingerprint_changes(before, _fingerprint(src, carve)) == ["files_digest: bird"]


# --- Hugging Face datasets ------------------------------------------------------------------------------------------


def _hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # parquet's Arrow copy
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})

    def part(lo: int, hi: int) -> object:
        rows = [(PHOTOS[c][i], label) for label, c in enumerate(CLASSES) for i in range(lo, hi)]
        return datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b, _ in rows],
                                           "label": [lab for _, lab in rows]}, features=features)
    return datasets, part


def test_hf_save_to_disk_and_parquet_splits_and_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets, part = _hf(tmp_path, monkeypatch)
    datasets.DatasetDict({"train": part(0, 12), "validation": part(12, 15)}).save_to_disk(str(tmp_path / "disk"))
    assert native_splits(f"hf:{tmp_path / 'disk'}") == ("train", "val")
    train, val = open_source(f"hf:{tmp_path / 'disk'}", "train"), open_source(f"hf:{tmp_path / 'disk'}", "val")
    assert (len(train), len(val), train.classes) == (36, 9, CLASSES)  # names from the ClassLabel feature
    ref = datasets.load_from_disk(str(tmp_path / "disk"))["validation"]
    for i in (0, 4, 8):  # datasets' own decoding is the reference
        image, label = val[i]
        assert label == ref[i]["label"] and np.array_equal(np.asarray(image), np.asarray(ref[i]["image"].convert("RGB")))
    (tmp_path / "pq" / "data").mkdir(parents=True)
    part(0, 12).to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    part(12, 15).to_parquet(str(tmp_path / "pq" / "data" / "test-00000-of-00001.parquet"))
    src = f"hf:{tmp_path / 'pq'}"
    assert native_splits(src) == ("train", "test")  # split names as datasets infers them from file names
    tr, va, te = open_source(src, "train"), open_source(src, "val"), open_source(src, "test")
    assert (len(tr), len(va), len(te), te.classes) == (33, 3, 9, CLASSES) and not set(tr.indices) & set(va.indices)


def test_hf_errors_and_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets, part = _hf(tmp_path, monkeypatch)
    part(0, 2).rename_column("label", "fine_label").save_to_disk(str(tmp_path / "nolabel"))
    with pytest.raises(DataError, match="no 'label' column \\(columns: image, fine_label\\)"):
        open_source(f"hf:{tmp_path / 'nolabel'}", "train", carve_val=False)
    unlabelled = part(0, 2).cast_column("label", datasets.Value("int64")).map(lambda r: {"label": -1})
    datasets.DatasetDict({"train": part(0, 2), "test": unlabelled}).save_to_disk(str(tmp_path / "nolab"))
    with pytest.raises(DataError, match="6 of 6 rows have no label .* train with --test none"):
        open_source(f"hf:{tmp_path / 'nolab'}", "test")
    with pytest.raises(DataError, match="not found"):
        open_source(f"hf:{tmp_path / 'absent'}", "train")
    part(0, 4).save_to_disk(str(tmp_path / "a"))
    rows = part(0, 4).cast_column("image", datasets.Image(decode=False)).to_dict()
    rows["image"][5] = {"bytes": PHOTOS["automobile"][9], "path": None}  # one automobile image replaced
    datasets.Dataset.from_dict(rows, features=part(0, 1).features).save_to_disk(str(tmp_path / "b"))
    fp = [_fingerprint(f"hf:{tmp_path / n}", False) for n in ("a", "a", "b")]
    assert fingerprint_changes(fp[0], fp[1]) == [] and fingerprint_changes(fp[0], fp[2]) == ["files_digest: automobile"]


# --- training through the CLI: smoke, exact resume, torchrun ---------------------------------------------------------

# fp32 pinned: `auto` times bf16 in a single process (on an AMX host it can pick bf16) but is fp32 under
# torchrun on a CPU, so the 1-process reference and the 2-process run must not depend on the timing.
ARGS = ["--model", "vit_pico_patch4_32", "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--no-progress",
        "--precision", "fp32", "--set", "log_every=1", "--set", "tensorboard=false"]


@pytest.fixture(scope="module")
def reference(shards: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *ARGS, "--data", shards, "--out", str(run)]) == 0
    return run


def test_train_smoke_on_shards(reference: Path) -> None:
    epochs = records(reference, "epoch")
    assert [r["steps"] for r in epochs] == [9, 9] and all(r["images"] == 36 for r in epochs)  # each sample once
    assert "val_top1" in epochs[-1] and len(losses(reference)) == 18


def test_sigkill_mid_epoch_then_resume_auto_is_bitwise(shards: str, reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # A mid-epoch checkpoint at step 2; loader workers read the shards (the reference ran without either).
    extra = ["--workers", "2", "--set", "checkpoint.every_steps=2"]
    proc = signal_at(["train", *ARGS, *extra, "--data", shards, "--out", str(run)], run, 3, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert max(s for s, _ in losses(run)) < 18, "the run finished before it was killed"
    assert (run / "checkpoints" / "step-00000002.state.pt").is_file()  # resumes mid-epoch 1 (9 steps an epoch)
    assert main(["train", "--resume", "auto", *ARGS, *extra, "--data", shards, "--out", str(run)]) == 0
    assert losses(run) == losses(reference)
    assert last_weights_equal(run, reference)


def test_two_torchrun_processes_equal_one(shards: str, reference: Path, tmp_path: Path) -> None:
    """Global batch 4 as 2 x 2: every step sees the same 4 samples, so the losses match the 1-process run."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    args = [a if a != "4" else "2" for a in ARGS]
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29561", "-m", "vitlab", "train", *args, "--data", shards, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ref, got = losses(reference), losses(tmp_path / "ddp")
    assert [s for s, _ in got] == [s for s, _ in ref]
    assert max(abs(a - b) for (_, a), (_, b) in zip(ref, got)) < 1e-5
    assert [r["images"] for r in records(tmp_path / "ddp", "epoch")] == [36, 36]


def test_train_smoke_on_a_hf_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets, part = _hf(tmp_path, monkeypatch)
    datasets.DatasetDict({"train": part(0, 4), "validation": part(12, 14)}).save_to_disk(str(tmp_path / "disk"))
    run = tmp_path / "run"
    code = main(["train", *ARGS, "--epochs", "1", "--data", f"hf:{tmp_path / 'disk'}", "--out", str(run)])
    assert code == 0
    (epoch,) = records(run, "epoch")
    assert epoch["steps"] == 3 and epoch["images"] == 12 and "val_top1" in epoch
