"""DETR learning and the ``vitlab detect`` commands end to end, on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detr_tiny import TINY_ARGS, tiny_flags
from vitlab.cli.main import main
from vitlab.detection.collate import collate_detection
from vitlab.detection.synthetic import ShapesDataset
from vitlab.detection.transforms import build_eval_transform
from vitlab.models.detr import HungarianMatcher, SetCriterion, create_detr

def test_loss_falls_when_overfitting_a_few_images() -> None:
    torch.manual_seed(0)
    ds = ShapesDataset(4, 64, max_objects=3, transform=build_eval_transform((0.5,) * 3, (0.5,) * 3, 64, 64))
    images, mask, targets = collate_detection([ds[i] for i in range(4)])
    model = create_detr("detr_vit_pico_128", **TINY_ARGS)
    criterion = SetCriterion(2, HungarianMatcher())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    history = []
    for _ in range(60):
        losses = criterion(model(images, mask), targets)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        history.append(losses["loss"].item())
    assert all(torch.isfinite(torch.tensor(history)))
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert losses["loss_bbox"].item() < 0.3


def detect_train(out: Path, *extra: str) -> int:
    return main(["detect", "train", "--data", "shapes:8:64", "--val", "shapes:4:64", *tiny_flags(),
                 "--out", str(out), *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("detr") / "run"
    assert detect_train(out, "--epochs", "2") == 0
    return out


def test_train_writes_run_folder(run: Path) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        assert (run / "checkpoints" / name).is_file()
    for plot in ("loss.png", "lr.png", "ap.png"):  # the engine's plots, as for classification
        assert (run / plot).stat().st_size > 1000
    assert len(list((run / "checkpoints").glob("step-*.state.pt"))) == 2  # one per epoch, newest two kept
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(0 <= r["val_AP"] <= 100 and r["skipped"] == 0 for r in epochs)


def test_eval_and_predict(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = str(run / "checkpoints" / "last.safetensors")
    assert main(["detect", "eval", ckpt, "--data", "shapes:4:64", "--json", "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 4 and 0 <= metrics["AP"] <= 100
    assert json.loads((tmp_path / "ev" / "detections.json").read_text())
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for i in range(2):
        ShapesDataset(2, 64).load(i)[0].save(img_dir / f"s{i}.png")
    out = tmp_path / "drawn"
    assert main(["detect", "predict", ckpt, str(img_dir), "--threshold", "0", "--format", "json",
                 "--out", str(out), "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and len(rows[0]["detections"]) == 10
    assert {"class", "score", "box_xyxy"} == set(rows[0]["detections"][0])
    drawn = sorted(out.glob("*.png"))
    assert len(drawn) == 2 and drawn[0].stat().st_size > 500


def test_resume_continues(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert detect_train(out, "--epochs", "1") == 0
    assert main(["detect", "train", "--resume", str(out), "--epochs", "2", "--allow-change", "epochs", "--no-progress",
                 "--device", "cpu"]) == 0
    epochs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [0, 1]


def test_bad_input_errors(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert detect_train(run) == 5  # refuses to overwrite an existing run
    assert main(["detect", "train", "--model", "detr_nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown DETR model" in capsys.readouterr().err
    assert main(["detect", "eval", str(tmp_path / "missing.safetensors"), "--data", "shapes"]) == 4
    assert not (tmp_path / "x").exists()


def test_models_lists_presets(capsys: pytest.CaptureFixture) -> None:
    assert main(["detect", "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    r50 = next(l for l in lines if l.startswith("detr_resnet50 "))
    assert "41.52M" in r50 and "6+6 layers, 100 queries" in r50


def test_non_finite_steps_are_skipped_counted_then_stop() -> None:
    """The engine's one non-finite policy on DETR batches: skip (no update), count, stop after N in a row."""
    from vitlab.engine.loop import EpochTotals, StepOptions, train_one_epoch
    from vitlab.engine.nonfinite import NonFiniteGuard
    from vitlab.errors import NonFiniteError
    from vitlab.tasks.detection import DetectionTask

    torch.manual_seed(0)
    ds = ShapesDataset(2, 64, transform=build_eval_transform((0.5,) * 3, (0.5,) * 3, 64, 64))
    good = collate_detection([ds[0], ds[1]])
    bad = (torch.full_like(good[0], float("nan")), good[1], good[2])  # a corrupt image: NaN everywhere
    model = create_detr("detr_vit_pico_128", **TINY_ARGS)
    task = DetectionTask(ds, ds, ds.classes, SetCriterion(2, HungarianMatcher()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    log: list[dict] = []
    totals = EpochTotals()
    train_one_epoch(task, model, [good, bad, good], opt, sched, torch.device("cpu"), 0, 0, StepOptions(clip_grad=0.1, log_every=1),
                    3, totals, NonFiniteGuard("skip", 2), log=log.append, progress=False)
    assert (totals.steps, totals.skipped) == (3, 1)
    skipped = [r for r in log if r["kind"] == "skipped_step"]
    assert [r["step"] for r in skipped] == [2]
    assert skipped[0]["bad_pred_boxes"] > 0  # the NaN image's boxes were sanitised and counted
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(NonFiniteError, match="2 steps in a row"):
        train_one_epoch(task, model, [good, bad, bad, good], opt, sched, torch.device("cpu"), 0, 0, StepOptions(), 4,
                        EpochTotals(), NonFiniteGuard("skip", 2), progress=False)
