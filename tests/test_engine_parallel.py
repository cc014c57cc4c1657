"""torchrun with BatchNorm: 2 processes equal 1 with SyncBatchNorm (on by default), and differ without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitlab.cli.main import main
from vitlab.engine.sync_bn import GlobalBatchNorm2d, convert_sync_batchnorm


def _losses(run: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"kind": "train"' in l]


def _torchrun(args: list[str], port: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), "-m", "vitlab", *args], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]


def test_batchnorm_two_processes_match_one_only_with_sync_bn(digit_folder: Path, tmp_path: Path) -> None:
    base = ["train", "--data", str(digit_folder), "--model", "vit_nano_convstem_patch4_28", "--set", "model_args.depth=1",
            "--epochs", "2", "--no-progress", "--device", "cpu", "--precision", "fp32", "--set", "log_every=1",
            "--set", "tensorboard=false"]
    one, synced, unsynced = tmp_path / "one", tmp_path / "synced", tmp_path / "unsynced"
    assert main([*base, "--batch-size", "8", "--out", str(one)]) == 0
    _torchrun([*base, "--batch-size", "4", "--out", str(synced)], 29541)  # sync_bn: null -> on under torchrun
    _torchrun([*base, "--batch-size", "4", "--out", str(unsynced), "--set", "sync_bn=false"], 29542)
    ref = _losses(one)
    assert len(ref) == 8
    diff_synced = max(abs(a - b) for a, b in zip(ref, _losses(synced)))
    diff_unsynced = max(abs(a - b) for a, b in zip(ref, _losses(unsynced)))
    assert diff_synced < 1e-5, diff_synced
    assert diff_unsynced > 1e-4, diff_unsynced  # the negative control: per-process statistics differ


def test_global_batchnorm_is_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    bn = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    x = torch.randn(4, 3, 5, 5)
    want = bn(x)
    model, n = convert_sync_batchnorm(bn, torch.device("cpu"))
    assert n == 1 and isinstance(model[0], GlobalBatchNorm2d)
    torch.testing.assert_close(model(x), want)
    assert set(model.state_dict()) == set(bn.state_dict())
