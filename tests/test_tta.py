"""Test-time augmentation (``tta: hflip``): the analytic case, fixed-batch runtimes, and the whole
path from ``vitlab train`` (val selection and the test figure under it) and ``vitlab eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vitlab.api import load_checkpoint
from vitlab.cli.main import main
from vitlab.data import create_transform, open_source
from vitlab.errors import ConfigError
from vitlab.evaluation.inference import predict_logits
from vitlab.evaluation.tta import tta_logits
from vitlab.runtime.base import Predictor

TINY = ["--model", "vit_pico_patch7_28", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64", "--device", "cpu", "--no-progress",
        "--set", "tensorboard=false", "--batch-size", "64"]


def test_hflip_of_a_linear_classifier_is_the_classifier_of_the_mean_view() -> None:
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 6, 4))  # f(x) = W vec(x) + b
    x = torch.randn(7, 3, 5, 6)
    expected = linear((x + x[..., torch.arange(5, -1, -1)]) / 2)  # mean of f over two views = f of their mean
    got = tta_logits(linear, x, "hflip")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert (got - linear(x)).abs().max() > 1e-2  # negative control: a non-symmetric W sees the mirror
    assert torch.equal(tta_logits(linear, x, "none"), linear(x))


class _FixedBatch(Predictor):
    """A runtime specialised to one batch size: records what it was asked to run."""

    name, precision, batch_size = "fixed", "fp32", 4

    def __init__(self, model: nn.Module) -> None:
        self.model, self.shapes = model, []

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(images.shape))
        return self.model(images)


def test_tta_calls_a_fixed_batch_runtime_at_its_own_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 5))
    data = TensorDataset(torch.randn(8, 2, 3, 3), torch.zeros(8, dtype=torch.long))
    runtime = _FixedBatch(model)
    logits, _ = predict_logits(runtime, DataLoader(data, batch_size=4), torch.device("cpu"), "fp32", tta="hflip")
    assert runtime.shapes == [(4, 2, 3, 3)] * 4  # two views of each of two batches, never one doubled batch
    x = data.tensors[0]
    with torch.no_grad():
        torch.testing.assert_close(logits, (model(x) + model(x.flip(-1))) / 2)


def test_unknown_tta_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="tta 'vflip'"):
        tta_logits(nn.Identity(), torch.zeros(1, 1, 2, 2), "vflip")
    assert main(["train", "--data", "mnist", *TINY, "--set", "tta=vflip", "--out", str(tmp_path / "r")]) == 2
    assert "tta" in capsys.readouterr().err


def _tta_eval(model: nn.Module, ds, mode: str) -> tuple[float, float]:
    """(top-1 %, mean cross-entropy) with logits averaged over the image and its mirror, by hand."""
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    with torch.no_grad():
        logits = model(x) if mode == "none" else (model(x) + model(torch.flip(x, dims=[3]))) / 2
    return 100.0 * float((logits.argmax(1) == y).float().mean()), float(nn.functional.cross_entropy(logits, y))


def test_train_selects_and_reports_under_tta_and_eval_agrees(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", "mnist", *TINY, "--tta", "hflip", "--epochs", "2", "--set", "max_steps_per_epoch=10", "--lr", "0.005", "--warmup-epochs", "0",
                 "--out", str(run)]) == 0
    assert "tta hflip" in capsys.readouterr().out
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_top1" in r]
    test = next(r for r in records if r["kind"] == "test")
    assert test["tta"] == "hflip" and "tta: hflip" in (run / "config.yaml").read_text()
    ckpt = load_checkpoint(run / "checkpoints" / "last.safetensors", "cpu")
    model = ckpt.model.eval()
    tf = create_transform(model)
    top1, loss = _tta_eval(model, open_source("mnist", "val", tf), "hflip")
    assert val[-1]["val_top1"] == pytest.approx(top1, abs=1e-6)
    assert val[-1]["val_loss"] == pytest.approx(loss, rel=1e-5)
    plain_top1, plain_loss = _tta_eval(model, open_source("mnist", "val", tf), "none")
    assert val[-1]["val_loss"] != pytest.approx(plain_loss, rel=1e-4)  # negative control: plain is another figure

    best = run / "checkpoints" / "best.safetensors"
    assert main(["eval", str(best), "--data", "mnist-test", "--tta", "hflip", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tta"] == "hflip" and out["top1"] == pytest.approx(test["test_top1"], abs=1e-6)
    assert main(["eval", str(best), "--data", "mnist-test", "--json", "--device", "cpu"]) == 0  # no flag: the run's own
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["top1"] == out["top1"]
    assert "tta hflip: as the checkpoint's training run evaluated it" in captured.err
    assert main(["eval", str(best), "--data", "mnist-test", "--json", "--device", "cpu", "--tta", "none"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plain["tta"] == "none" and plain["loss"] != pytest.approx(out["loss"], rel=1e-4)  # negative control
    best_model = load_checkpoint(best, "cpu").model.eval()
    assert out["top1"] == pytest.approx(_tta_eval(best_model, open_source("mnist-test", "test", tf), "hflip")[0], abs=1e-6)


def test_predict_averages_the_mirror(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    from vitlab.api import create_model, save_pretrained

    model = create_model("vit_pico_patch7_28", depth=1, embed_dim=32, num_heads=2, mlp_dim=64, num_classes=10, in_chans=1)
    nn.init.normal_(model.head.weight, std=0.5)  # a zero head gives uniform probabilities: nothing to compare
    folder = save_pretrained(model, tmp_path / "m", [str(i) for i in range(10)])
    ckpt = next(folder.glob("*.safetensors"))
    probs, rows = {}, []
    for mode in ("none", "hflip"):
        assert main(["predict", str(ckpt), "--data", "mnist-test", "--limit", "3", "--format", "json", "--topk", "10",
                     "--tta", mode, "--device", "cpu"]) == 0
        rows = json.loads(capsys.readouterr().out)
        probs[mode] = torch.tensor([[t["prob"] for t in sorted(r["top"], key=lambda t: int(t["class"]))] for r in rows])
    ds = open_source("mnist-test", "val", create_transform(model))
    x = torch.stack([ds[i][0] for i in [int(r["image"].split("[")[1].rstrip("]")) for r in rows]])  # predict's picks
    with torch.no_grad():
        want = ((model(x) + model(x.flip(3))) / 2).softmax(1)
    torch.testing.assert_close(probs["hflip"], want, atol=1e-5, rtol=0)
    assert (probs["hflip"] - probs["none"]).abs().max() > 1e-3  # negative control


def test_tta_changes_evaluation_only_not_training(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    weights = {}
    for mode in ("none", "hflip"):
        run = tmp_path / mode
        assert main(["train", "--data", "mnist", *TINY, "--tta", mode, "--epochs", "2", "--set", "max_steps_per_epoch=3",
                     "--test", "none", "--out", str(run)]) == 0
        weights[mode] = load_file(run / "checkpoints" / "last.safetensors")
    assert weights["none"].keys() == weights["hflip"].keys()
    assert all(torch.equal(weights["none"][k], weights["hflip"][k]) for k in weights["none"])


def test_shift_views_move_the_content_one_pixel_and_repeat_the_edge() -> None:
    from vitlab.evaluation.tta import tta_views

    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    plain, down_right, up_left = tta_views(x, "shift")
    assert torch.equal(plain, x)
    assert torch.equal(down_right[0, 0, 1:, 1:], x[0, 0, :-1, :-1])  # content one pixel down and right
    assert torch.equal(down_right[0, 0, 0, 1:], x[0, 0, 0, :-1]) and torch.equal(down_right[0, 0, :, 0], down_right[0, 0, :, 1])
    assert torch.equal(up_left[0, 0, :-1, :-1], x[0, 0, 1:, 1:])  # and one pixel up and left
    assert torch.equal(up_left[0, 0, -1, :-1], x[0, 0, -1, 1:]) and torch.equal(up_left[0, 0, :, -1], up_left[0, 0, :, -2])
    linear = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    torch.testing.assert_close(tta_logits(linear, x, "shift"), linear((plain + down_right + up_left) / 3))


def test_hflip_shift_is_the_mirror_pair_each_with_its_two_one_pixel_moves() -> None:
    from vitlab.evaluation.tta import tta_views

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6)
    views = tta_views(x, "hflip_shift")
    mirror = x.flip(-1)
    shifted = tta_views(x, "shift")[1:]
    expected = [x, mirror, *shifted, *tta_views(mirror, "shift")[1:]]
    assert len(views) == 6 and all(torch.equal(v, e) for v, e in zip(views, expected))
    assert torch.equal(views[4][0, 0, 1:, 1:], mirror[0, 0, :-1, :-1])  # the mirror moved down-right, by hand
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 6, 4))  # f linear: mean of f = f of the mean view
    torch.testing.assert_close(tta_logits(linear, x, "hflip_shift"), linear(sum(expected) / 6), rtol=0, atol=1e-5)
    assert (tta_logits(linear, x, "hflip_shift") - tta_logits(linear, x, "hflip")).abs().max() > 1e-3  # not hflip's
