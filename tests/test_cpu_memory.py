"""Training on the CPU keeps freed memory for the next step (vitlab.utils.cpu_memory), and only while it trains.

Counted, not timed: the page faults of a step-like pattern (blocks of 40 MiB and smaller, all freed
at the end, as a training step frees its activations) in a fresh interpreter each, so this
process's allocator is never changed. Under glibc's default policy the 40 MiB blocks are mapped
afresh each time and fault on every page (the negative control); inside ``kept_cpu_memory`` the
third round faults on almost none; after the block glibc's policy is back (new large blocks are
mapped afresh again) and the kept memory has gone back to the OS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitlab.cli.main import main
from vitlab.utils import cpu_memory
from vitlab.utils.cpu_memory import kept_cpu_memory

pytestmark = pytest.mark.skipif(cpu_memory.glibc() is None, reason="the policy is glibc's (Linux)")

PAGES = 3 * 40 * 2**20 // 4096  # the pattern's three big blocks, in 4 KiB pages

SCRIPT = """
import resource, sys, torch
from vitlab.utils.cpu_memory import kept_cpu_memory

def round_faults(mib):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(mib * 2**20 // 4) for _ in range(3)] + [torch.ones(1000 + i) for i in range(50)]
    del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

def third_round(mib=40):
    return [round_faults(mib) for _ in range(3)][-1]

def rss_mib():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

before = third_round()
with kept_cpu_memory(torch.device(sys.argv[1]), print) as on:
    during = third_round()
    with kept_cpu_memory(torch.device(sys.argv[1])):  # nested: the inner exit must not restore
        pass
    nested = third_round()
    rss_in = rss_mib()
rss_out = rss_mib()
# Blocks larger than any the heap holds free: under glibc's policy again they are mapped afresh
# (and unmapped on free) every round; the heap's own free blocks would be reused whatever the policy.
after = third_round(100) * 40 // 100
print("faults", on, before, during, nested, after, rss_in - rss_out)
"""


def _faults(device: str = "cpu", env: dict[str, str] | None = None) -> tuple[list[str], bool, list[int]]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, device], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=True)
    lines = proc.stdout.strip().splitlines()
    last = lines[-1].split()
    return lines[:-1], last[1] == "True", [int(v) for v in last[2:]]


def test_kept_memory_stops_the_page_faults_of_each_step_and_is_undone_after() -> None:
    echoed, on, (before, during, nested, after, returned) = _faults()
    assert on and echoed == [line for line in echoed if line.startswith("cpu memory: freed blocks kept")] and echoed
    assert before > 0.9 * PAGES, before  # glibc's default: every big block is new pages (the negative control)
    assert during < 0.02 * PAGES, during
    assert nested < 0.02 * PAGES, nested
    assert after > 0.5 * PAGES, after  # the policy is restored at the outermost exit (kept, it would be ~0)
    assert returned > 100, returned  # and the kept blocks (3 x 40 MiB) went back to the OS (MiB of RSS)


def test_the_environment_opts_out_and_says_so() -> None:
    echoed, on, (before, during, _, after, _) = _faults(env={cpu_memory.ENV: "default"})
    assert not on
    assert echoed == [f"cpu memory: the C library's own policy ({cpu_memory.ENV}=default)"]
    assert during > 0.9 * PAGES


def test_a_gpu_run_leaves_the_policy_alone() -> None:
    lines: list[str] = []
    with kept_cpu_memory(torch.device("cuda"), lines.append) as on:
        assert not on
    assert lines == []


def test_training_on_the_cpu_says_it_keeps_memory(digit_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--data", str(digit_folder), "--model", "vit_pico_patch7_28", "--set", "model_args.depth=1",
                 "--set", "model_args.embed_dim=32", "--set", "model_args.num_heads=2", "--set",
                 "model_args.mlp_dim=64", "--batch-size", "8", "--epochs", "1", "--no-progress", "--device", "cpu",
                 "--out", str(tmp_path / "run")])
    assert code == 0
    assert "cpu memory: freed blocks kept for the next step" in capsys.readouterr().out
    assert cpu_memory._depth == 0  # and the policy was restored when training ended
