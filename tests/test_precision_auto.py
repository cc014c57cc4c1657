"""``--precision auto``: a measured bf16-vs-fp32 choice, cached per machine, stated in one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vitlab.utils.precision as precision
from vitlab.utils.device import resolve_precision

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path))
    return tmp_path


def _fake(speedup: float, calls: list | None = None):
    def timer(device, width):
        if calls is not None:
            calls.append((device.type, width))
        return speedup, 0.3

    return timer


def test_faster_bf16_is_chosen_and_said_why(tmp_path):
    choice = precision.choose_precision(CPU, 384, timer=_fake(2.3))
    assert choice.precision == "bf16" and not choice.cached
    assert choice.reason.startswith("precision auto -> bf16: bf16 matmul 2.30x fp32 on this CPU (measured, cached in ")
    assert str(tmp_path / "precision.json") in choice.reason


def test_slower_bf16_keeps_fp32():
    # Negative control of the test above: the same call with a slower bf16 must not pick it.
    choice = precision.choose_precision(CPU, 384, timer=_fake(0.65))
    assert choice.precision == "fp32"
    assert "bf16 matmul 0.65x fp32" in choice.reason and "below the 1.15x" in choice.reason


def test_threshold_is_a_margin_not_parity():
    assert precision.choose_precision(CPU, 128, timer=_fake(1.05)).precision == "fp32"
    assert precision.choose_precision(CPU, 256, timer=_fake(precision.MIN_SPEEDUP)).precision == "bf16"


def test_second_call_reads_the_cache_per_width(tmp_path):
    calls: list = []
    first = precision.choose_precision(CPU, 384, timer=_fake(2.0, calls))
    second = precision.choose_precision(CPU, 384, timer=_fake(0.5, calls))  # would say fp32 if it measured
    assert calls == [("cpu", 384)]
    assert second.cached and second.precision == first.precision == "bf16"
    assert "cached measurement from" in second.reason
    table = json.loads((tmp_path / "precision.json").read_text())
    assert list(table.values()) == [2.0] and precision.machine_key(CPU, 384) in table
    precision.choose_precision(CPU, 768, timer=_fake(0.5, calls))  # another width is another key
    assert calls == [("cpu", 384), ("cpu", 768)]


def test_key_names_the_cpu_flags_and_torch():
    key = precision.machine_key(CPU, 384)
    facts = precision.cpu_facts()
    assert str(facts["cpu"]) in key and torch.__version__ in key and "width=384" in key
    assert all(flag in key for flag in facts["flags"])


def test_damaged_cache_is_measured_again(tmp_path):
    (tmp_path / "precision.json").write_text("{not json")
    calls: list = []
    assert precision.choose_precision(CPU, 384, timer=_fake(2.0, calls)).precision == "bf16"
    assert calls and json.loads((tmp_path / "precision.json").read_text())


def test_resolve_precision_infer_measures_and_says(monkeypatch):
    monkeypatch.setattr(precision, "measure_bf16_speedup", _fake(1.9))
    said: list[str] = []
    assert resolve_precision("auto", CPU, purpose="infer", width=192, say=said.append) == "bf16"
    assert len(said) == 1 and said[0].startswith("precision auto -> bf16: bf16 matmul 1.90x")
    monkeypatch.setattr(precision, "measure_bf16_speedup", _fake(0.6))
    said.clear()
    assert resolve_precision("auto", CPU, purpose="infer", width=96, say=said.append) == "fp32"
    assert said[0].startswith("precision auto -> fp32")


def test_training_auto_without_a_model_is_the_rule(monkeypatch):
    # resolve_precision has no model to time for training: the rule (the trainers call
    # resolve_train_precision, tests/test_train_precision.py); the matmul check must not run.
    def boom(*a, **k):
        raise AssertionError("training's auto must not measure")

    monkeypatch.setattr(precision, "choose_precision", boom)
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", CPU, purpose="train") == "fp32"
    assert resolve_precision("bf16", CPU, purpose="infer") == "bf16"  # an explicit choice is never measured


def test_real_measurement_is_short_and_finite():
    speedup, seconds = precision.measure_bf16_speedup(CPU, 64, rounds=3, budget_s=0.05)
    assert math.isfinite(speedup) and speedup > 0
    assert seconds < 10  # a bound against a runaway loop, not a timing claim
