"""The CLI end to end on tiny settings: train, eval, predict, resume, models; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file
import torch

from vitlab.cli.main import main

TINY = ["--model", "vit_pico_patch7_28", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64", "--batch-size", "8",
        "--epochs", "2", "--no-progress", "--device", "cpu", "--set", "data.eval_batch_size=16"]


def train(tmp: Path, data: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), *TINY, *extra])


@pytest.fixture(scope="module")
def trained(digit_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert train(out, digit_folder, "--out", str(out)) == 0
    return out


def test_train_writes_run_folder(trained: Path) -> None:
    assert (trained / "config.yaml").is_file()
    for name in ("last.safetensors", "best.safetensors"):
        assert (trained / "checkpoints" / name).is_file(), name
    assert len(list((trained / "checkpoints").glob("step-*.state.pt"))) == 2  # keep: 2
    for name in ("loss.png", "accuracy.png", "lr.png"):
        assert (trained / name).stat().st_size > 1000, name
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(0 <= r["val_top1"] <= 100 for r in epochs)
    assert not list((trained / "checkpoints").glob("*.tmp"))


def test_eval_outputs(trained: Path, digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    code = main(["eval", str(trained / "checkpoints" / "best.safetensors"), "--data", str(digit_folder),
                 "--out", str(out), "--json", "--device", "cpu"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 18 and set(metrics["per_class"]) == {"digit0", "digit1", "digit2"}
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png"):
        assert (out / name).is_file()
    rows = (out / "confusion.csv").read_text().splitlines()
    assert sum(int(v) for row in rows[1:] for v in row.split(",")[1:]) == 18


def test_predict_formats_and_grid(trained: Path, digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = str(trained / "checkpoints" / "best.safetensors")
    img_dir = digit_folder / "val" / "digit1"
    grid = tmp_path / "grid.png"
    assert main(["predict", ckpt, str(img_dir), "--format", "json", "--topk", "2", "--grid", str(grid), "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and all(len(r["top"]) == 2 for r in rows)
    assert all(abs(sum(t["prob"] for t in r["top"])) <= 1.0 + 1e-6 for r in rows)
    assert grid.stat().st_size > 1000
    assert main(["predict", ckpt, "--data", str(digit_folder), "--limit", "4", "--format", "csv", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("image,truth,class1,prob1") and len(lines) == 5


def test_resume_continues(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert train(out, digit_folder, "--out", str(out), "--epochs", "1") == 0
    capsys.readouterr()
    # A changed recipe is refused, naming the fields; accepted when asked for explicitly.
    assert main(["train", "--resume", str(out), "--epochs", "2", "--lr", "0.5", "--no-progress"]) == 2
    _assert_one_line_error(capsys, "epochs", "optim.lr")
    assert main(["train", "--resume", str(out), "--epochs", "2", "--allow-change", "epochs", "--no-progress",
                 "--device", "cpu"]) == 0
    epochs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"epoch"' in l]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [0, 1]


def test_resume_matches_uninterrupted(digit_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that dies after epoch 1 of 2 and is resumed ends bitwise equal to an uninterrupted run."""
    import vitlab.engine.fit
    from vitlab.weights.vitlab_format import read_tensors

    a, b = tmp_path / "a", tmp_path / "b"
    assert train(a, digit_folder, "--out", str(a)) == 0
    real = vitlab.engine.fit.train_one_epoch

    def dies_in_second_epoch(*args, **kwargs):
        if args[6] == 1:  # the epoch argument
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(vitlab.engine.fit, "train_one_epoch", dies_in_second_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(b, digit_folder, "--out", str(b))
    monkeypatch.setattr(vitlab.engine.fit, "train_one_epoch", real)
    assert main(["train", "--resume", str(b), "--no-progress"]) == 0
    wa, wb = read_tensors(a / "checkpoints" / "last.safetensors"), read_tensors(b / "checkpoints" / "last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = lambda run: [json.loads(l)["train_loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in l]
    assert losses(a) == losses(b)


def test_models_lists_every_model(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "vit_*", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["vit_base_patch16_224"]["params"] == 86_567_656
    assert 17.0e9 < rows["vit_base_patch16_224"]["macs"] < 18.0e9


# ------------------------------------------------------------------------------------- bad input
def _assert_one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


def test_unknown_model_suggests(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "vit_pico_patch4_29", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "vit_pico_patch4_29", "vit_pico_patch4_28")
    assert not out.exists()


def test_indivisible_image_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--model", "vit_pico_patch4_28", "--set", "model_args.img_size=30", "--out", str(tmp_path / "r")]) == 2
    _assert_one_line_error(capsys, "30x30", "patch_size 4")


@pytest.mark.parametrize("case", ["missing", "empty", "classless"])
def test_bad_data_folders(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    if case in ("empty", "classless"):
        data.mkdir()
    if case == "classless":
        (data / "loose.png").write_bytes(b"")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), *TINY, "--out", str(out)]) == 3
    _assert_one_line_error(capsys, str(data))
    assert not out.exists()


def test_corrupt_image_named(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digit_folder, data)
    bad = data / "train" / "digit1" / "broken.png"
    bad.write_bytes(b"this is not a png")
    assert main(["train", "--data", str(data), *TINY, "--out", str(tmp_path / "run")]) == 3
    _assert_one_line_error(capsys, "broken.png")


def test_existing_run_untouched(trained: Path, digit_folder: Path, capsys: pytest.CaptureFixture) -> None:
    before = {p: p.stat().st_mtime_ns for p in trained.rglob("*")}
    assert train(trained, digit_folder, "--out", str(trained)) == 5
    _assert_one_line_error(capsys, str(trained), "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in trained.rglob("*")} == before


def test_checkpoint_of_another_model(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    assert main(["eval", str(foreign), "--data", "mnist"]) == 4
    _assert_one_line_error(capsys, str(foreign), "not a vitlab checkpoint")
    # A vitlab checkpoint whose tensors do not fit the model it describes.
    from safetensors import safe_open

    ckpt = trained / "checkpoints" / "best.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["head.weight"] = torch.zeros(7, tensors["head.weight"].shape[1])
    wrong = tmp_path / "wrong.safetensors"
    # sealed with a fresh checksum, as vitlab writes files: the tensors' shape is its only fault
    from safetensors.torch import save as st_save

    from vitlab.weights.checksums import CHECKSUM_KEY, seal

    meta = {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
    wrong.write_bytes(b"".join(bytes(p) for p in seal(st_save(tensors, metadata=meta))))
    assert main(["eval", str(wrong), "--data", "mnist"]) == 4
    _assert_one_line_error(capsys, "head.weight")


def test_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--lr", "nan", "--out", str(tmp_path / "r")]) == 2
    _assert_one_line_error(capsys, "optim.lr")
    assert main(["train", "--batch-size", "0", "--out", str(tmp_path / "r")]) == 2
    _assert_one_line_error(capsys, "batch_size")
    assert main(["train", "--set", "optim.lrr=1", "--out", str(tmp_path / "r")]) == 2
    _assert_one_line_error(capsys, "optim.lrr")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("entry", [["vitlab"], [sys.executable, "-m", "vitlab"]])
def test_entry_points(entry: list[str]) -> None:
    if entry == ["vitlab"]:
        exe = Path(sys.executable).parent / "vitlab"
        if not exe.exists():
            pytest.skip("console script not installed in this environment")
        entry = [str(exe)]
    res = subprocess.run([*entry, "models", "vit_tiny*", "--no-macs"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "vit_tiny_patch16_224" in res.stdout and "5,717,416" in res.stdout
    res = subprocess.run([*entry, "eval", "nope.safetensors", "--data", "mnist"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 4 and res.stderr.strip() == "error: nope.safetensors: checkpoint not found"


def test_eval_probes(trained: Path, digit_folder: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = str(trained / "checkpoints" / "best.safetensors")
    assert main(["eval", ckpt, "--data", str(digit_folder), "--probe", "fewshot", "--probe", "knn", "--shots", "1,5",
                 "--knn-k", "3", "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics["probe"]) == {"fewshot_1shot_top1", "fewshot_5shot_top1", "knn3_top1"}
    assert all(0.0 <= v <= 100.0 for v in metrics["probe"].values())
    assert 0.0 <= metrics["ece"] <= 100.0


def test_bad_training_flags_issue3(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    assert main(["train", "--epochs", "0", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "epochs=0")
    assert main(["train", "--lr", "-1", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "optim.lr=-1")
    assert main(["train", "--batch-size", "-4", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "batch_size=-4")
    assert main(["train", "--resume", "auto", "--overwrite", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--resume", "--overwrite")
    assert main(["train", "--data", str(digit_folder), *TINY, "--batch-size", "64", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "batch_size=64", "36 training images")
    assert not out.exists()


def test_validation_classes_must_match(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digit_folder, data)
    shutil.rmtree(data / "val" / "digit2")
    shutil.copytree(data / "val" / "digit1", data / "val" / "digit7")
    assert main(["train", "--data", str(data), *TINY, "--out", str(tmp_path / "run")]) == 3
    _assert_one_line_error(capsys, "digit7", "digit2")
    assert not (tmp_path / "run").exists()
