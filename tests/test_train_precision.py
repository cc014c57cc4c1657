"""Training's ``--precision auto``: the model's own step timed in fp32 and bf16, cached, stated, resumed as chosen."""

from __future__ import annotations

import math
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import vitlab.utils.train_precision as tp
from vitlab.config import resolve_config
from vitlab.trainer import train
from vitlab.utils.device import resolve_train_precision

CPU = torch.device("cpu")
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 4))


def _fake(speedup: float, calls: list):
    def timer(model, shape, batch, device):
        calls.append((tuple(shape), batch))
        return speedup

    return timer


def test_faster_bf16_step_is_chosen_once_and_cached():
    calls: list = []
    first = tp.choose_train_precision(_bn_model(), (3, 8, 8), 16, CPU, timer=_fake(1.6, calls))
    assert first.precision == "bf16" and not first.cached
    assert first.reason.startswith("precision auto -> bf16: a bf16 training step of this model ran 1.60x fp32")
    again = tp.choose_train_precision(_bn_model(), (3, 8, 8), 16, CPU, timer=_fake(0.5, calls))
    assert again.precision == "bf16" and again.cached and len(calls) == 1
    # another batch is another workload: measured again, and this time bf16 loses
    other = tp.choose_train_precision(_bn_model(), (3, 8, 8), 32, CPU, timer=_fake(0.7, calls))
    assert other.precision == "fp32" and len(calls) == 2
    assert "0.70x fp32 on this CPU, below the 1.15x needed to switch" in other.reason


def test_the_measurement_leaves_weights_statistics_and_random_streams_alone():
    model = _bn_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    speedup = tp.measure_train_speedup(model, (3, 8, 8), 16, CPU, rounds=1)
    assert math.isfinite(speedup) and speedup > 0
    assert torch.equal(torch.rand(3), expected_next)  # the global stream is where it was
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    # negative control: one training forward of the model itself does move the BatchNorm statistics
    model(torch.randn(4, 3, 8, 8))
    assert not torch.equal(before["1.running_mean"], model.state_dict()["1.running_mean"])


def test_a_dict_output_is_timed(monkeypatch):
    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return {"pred_logits": y.mean((2, 3)), "pred_boxes": y.amax((2, 3)).sigmoid(), "aux": [{"a": y.sum()}]}

    assert tp.measure_train_speedup(Detector(), (3, 16, 16), 2, CPU, rounds=1) > 0


def test_explicit_and_distributed_choices_are_not_measured(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("must not measure")

    monkeypatch.setattr(tp, "choose_train_precision", boom)
    assert resolve_train_precision("bf16", CPU, _bn_model(), (3, 8, 8), 4) == "bf16"
    said: list[str] = []
    assert resolve_train_precision("auto", CPU, _bn_model(), (3, 8, 8), 4, distributed=True, say=said.append) == "fp32"
    assert said[0].startswith("precision auto -> fp32: not measured under torchrun")


def test_train_records_the_choice_and_resume_keeps_it(tmp_path, monkeypatch, digit_folder):
    calls: list = []
    monkeypatch.setattr(tp, "measure_train_speedup", lambda m, s, b, d: calls.append(b) or 2.0)
    cfg = resolve_config(RECIPE, [{"precision": "auto", "epochs": 1, "max_steps_per_epoch": 2, "max_eval_images": 64,
                                   "tensorboard": False, "data": {"train": str(digit_folder), "test": None,
                                                                   "batch_size": 16}}])
    said: list[str] = []
    out = tmp_path / "run"
    train(cfg, out, progress=False, echo=said.append)
    assert calls == [16] and any(s.startswith("precision auto -> bf16: a bf16 training step") for s in said)
    assert yaml.safe_load((out / "config.yaml").read_text())["precision"] == "bf16"
    # on resume the run's own choice stands, even where a new timing would now say fp32
    monkeypatch.setattr(tp, "measure_train_speedup", lambda *a: calls.append("again") or 0.5)
    (tmp_path / "cache" / "precision.json").unlink()
    said.clear()
    train(cfg, out, resume=True, progress=False, echo=said.append)
    assert calls == [16] and not any(s.startswith("precision auto") for s in said)
    assert yaml.safe_load((out / "config.yaml").read_text())["precision"] == "bf16"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / "last.safetensors")


def _smoke(digit_folder: Path, out: Path, precision: str) -> dict[str, torch.Tensor]:
    # the mnist recipe has drop-path (the global RNG during training) and BatchNorm in its stem
    cfg = resolve_config(RECIPE, [{"precision": precision, "epochs": 1, "max_steps_per_epoch": 3, "max_eval_images": 16,
                                   "tensorboard": False, "data": {"train": str(digit_folder), "test": None,
                                                                  "batch_size": 8}}])
    train(cfg, out, progress=False, echo=lambda s: None)
    return _weights(out)


def test_a_real_check_leaves_the_run_bit_identical(tmp_path, monkeypatch, digit_folder):
    monkeypatch.setattr(tp, "MIN_SPEEDUP", float("inf"))  # the real timing runs; fp32 is chosen whatever it says
    fp32 = _smoke(digit_folder, tmp_path / "fp32", "fp32")
    auto = _smoke(digit_folder, tmp_path / "auto", "auto")
    assert yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["precision"] == "fp32"
    assert all(torch.equal(fp32[k], auto[k]) for k in fp32)
    # negative control: the same check on the model itself instead of a copy moves its BatchNorm
    # statistics (the RNG alone would not show: the engine reseeds every epoch)
    monkeypatch.setattr(tp, "copy", types.SimpleNamespace(deepcopy=lambda m: m))
    (tmp_path / "cache" / "precision.json").unlink()
    unforked = _smoke(digit_folder, tmp_path / "unforked", "auto")
    assert not all(torch.equal(fp32[k], unforked[k]) for k in fp32)
