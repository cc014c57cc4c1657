"""``data.classes`` / ``--classes`` name the labels of shards and datasets that do not; ``data.cache``
on a streamed source says it does not apply; the augmentation note names the source it is for.

Shards are written with webdataset's own ``TarWriter``, without a classes.txt beside them, so the
names can only come from the flag; the checkpoint's class names are read back with safetensors.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from vitlab.cli.main import main

wds = pytest.importorskip("webdataset")
NAMES = ["cat", "dog", "fox"]
ARGS = ["--model", "vit_pico_patch4_32", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=16",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=32", "--epochs", "1", "-b", "4",
        "--device", "cpu", "--no-progress", "--set", "tensorboard=false", "--set", "max_steps_per_epoch=2"]


def _jpeg(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """train-00000{0,1}.tar + val-000000.tar, labels 0..2, no class names anywhere."""
    folder, rng = tmp_path_factory.mktemp("shards"), np.random.default_rng(0)
    for name, per_class in (("train-000000", 3), ("train-000001", 3), ("val-000000", 2)):
        with wds.TarWriter(str(folder / f"{name}.tar")) as sink:
            for label in range(3):
                for i in range(per_class):
                    sink.write({"__key__": f"{name}_{label}_{i}", "jpg": _jpeg(rng), "cls": label})
    return f"wds:{folder}/train-{{000000..000001}}.tar"


def _class_names(run: Path) -> list[str]:
    """The names in the checkpoint's metadata, read with safetensors itself."""
    with safe_open(str(run / "checkpoints" / "last.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["class_names"])


@pytest.mark.parametrize("how", ["list", "file"])
def test_classes_name_the_shard_labels(shards: str, tmp_path: Path, how: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    names = ",".join(NAMES)
    if how == "file":
        (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n\n")
        names = str(tmp_path / "names.txt")
    assert main(["train", *ARGS, "--data", shards, "--classes", names, "--out", str(tmp_path / "run")]) == 0
    assert _class_names(tmp_path / "run") == NAMES
    (note,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("training augmentation")]
    assert note.startswith("training augmentation for photos in WebDataset shards") and "folder" not in note


def test_without_classes_the_labels_name_themselves(shards: str, tmp_path: Path) -> None:
    """Control: the same shards without --classes give '0', '1', '2' (so the test above saw the flag)."""
    assert main(["train", *ARGS, "--data", shards, "--out", str(tmp_path / "run")]) == 0
    assert _class_names(tmp_path / "run") == ["0", "1", "2"]


@pytest.mark.parametrize("classes,needle", [
    ("cat,dog", "label 2 in the shards but only 2 class names (given)"),
    ("cat,dog,cat", "class names repeat"),
    ("missing-classes.txt", "data.classes=missing-classes.txt: no such file"),
])
def test_bad_classes_are_one_line_data_errors(shards: str, tmp_path: Path, classes: str, needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["train", *ARGS, "--data", shards, "--classes", classes, "--out", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()  # bad input never touches a run


def test_cache_on_shards_says_it_does_not_apply(shards: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["train", *ARGS, "--data", shards, "--classes", ",".join(NAMES), "--set", "data.cache=true",
                 "--out", str(tmp_path / "run")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("data.cache")]
    assert len(lines) == 1 and "not applied to wds:" in lines[0] and "(WebDataset shards)" in lines[0]


def test_classes_for_an_hf_dataset_with_integer_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    rng = np.random.default_rng(1)

    def part(n: int) -> object:  # a plain integer label column: no names in the data
        return datasets.Dataset.from_dict({"image": [{"bytes": _jpeg(rng), "path": None} for _ in range(3 * n)],
                                           "label": [i % 3 for i in range(3 * n)]},
                                          features=datasets.Features({"image": datasets.Image(),
                                                                      "label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": part(3), "validation": part(1)}).save_to_disk(str(tmp_path / "disk"))
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--data", f"hf:{tmp_path / 'disk'}", "--classes", ",".join(NAMES),
                 "--out", str(run)]) == 0
    assert _class_names(run) == NAMES
