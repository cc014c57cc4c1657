"""LR schedules (vitlab.engine.schedules) against timm's schedulers stepped per update
(``t_in_epochs=False``, ``step_update(t)``) and torch's MultiStepLR, plus the config / CLI surface:
``--sched``, ``--min-lr``, ``--warmup-lr``, ``--decay-epochs``, ``--decay-rate``, ``--decay-milestones``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

from run_helpers import records
from vitlab.cli.main import main
from vitlab.config import OptimSettings, resolve_config
from vitlab.engine.schedules import Schedule, lambda_scheduler
from vitlab.trainer import schedule_from_config

LR, TOTAL, WARM = 0.1, 60, 8


def _opt(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _timm_rates(make: Callable[[torch.optim.Optimizer], Any], steps: int) -> list[float]:
    """The rate timm's scheduler sets for update ``t`` (what optimizer step t trains with), t = 0..steps-1."""
    opt = _opt()
    sched = make(opt)
    out = []
    for t in range(steps):
        sched.step_update(num_updates=t)
        out.append(opt.param_groups[0]["lr"])
    return out


def _ours(schedule: Schedule, steps: int) -> list[float]:
    return [LR * schedule(t) for t in range(steps)]


def test_cosine_is_timms_with_warmup_prefix() -> None:
    sch = pytest.importorskip("timm.scheduler")
    ours = _ours(Schedule("cosine", TOTAL, WARM, min_ratio=1e-3 / LR, warmup_ratio=1e-4 / LR), TOTAL + 5)

    def timm(prefix: bool) -> list[float]:
        return _timm_rates(lambda o: sch.CosineLRScheduler(o, t_initial=TOTAL - WARM, lr_min=1e-3, warmup_t=WARM,
                                                           warmup_lr_init=1e-4, warmup_prefix=prefix,
                                                           t_in_epochs=False), TOTAL + 5)
    assert ours == pytest.approx(timm(True), rel=1e-12, abs=1e-15)
    assert ours != pytest.approx(timm(False), rel=1e-6)  # control: timm's train.py default decays under the warmup


@pytest.mark.parametrize("name,power", [("poly", 2.0), ("poly", 0.5), ("linear", 1.0)])
def test_poly_and_linear_are_timms_poly(name: str, power: float) -> None:
    sch = pytest.importorskip("timm.scheduler")
    ours = _ours(Schedule(name, TOTAL, WARM, min_ratio=0.02, warmup_ratio=0.0, power=power), TOTAL + 3)  # type: ignore[arg-type]
    ref = _timm_rates(lambda o: sch.PolyLRScheduler(o, t_initial=TOTAL - WARM, power=power, lr_min=0.02 * LR,
                                                    warmup_t=WARM, warmup_lr_init=0.0, warmup_prefix=True,
                                                    t_in_epochs=False), TOTAL + 3)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-15)
    if name == "linear":  # analytic: a straight line from lr after the warmup to min_lr at the end
        assert ours[WARM + (TOTAL - WARM) // 2] == pytest.approx(LR * (0.02 + 0.98 * 0.5))


def test_step_is_timms_counted_from_the_start_and_floors_at_min_lr() -> None:
    sch = pytest.importorskip("timm.scheduler")
    ours = _ours(Schedule("step", TOTAL, WARM, warmup_ratio=1e-3 / LR, decay_steps=15, decay_rate=0.5), TOTAL)
    ref = _timm_rates(lambda o: sch.StepLRScheduler(o, decay_t=15, decay_rate=0.5, warmup_t=WARM, warmup_lr_init=1e-3,
                                                    warmup_prefix=False, t_in_epochs=False), TOTAL)
    assert ours == pytest.approx(ref, rel=1e-12)
    assert ours[14] == pytest.approx(LR) and ours[15] == pytest.approx(LR / 2) and ours[45] == pytest.approx(LR / 8)
    floored = _ours(Schedule("step", TOTAL, WARM, min_ratio=0.2, decay_steps=15, decay_rate=0.5), TOTAL)
    assert floored[30] == pytest.approx(LR / 4) and floored[45] == pytest.approx(0.2 * LR)  # not LR / 8


def test_multistep_decays_at_each_milestone_as_torch_and_one_step_after_timm() -> None:
    milestones = (10, 25, 40)
    ours = _ours(Schedule("multistep", TOTAL, 0, milestones=milestones, decay_rate=0.1), TOTAL)
    opt = _opt()
    torch_sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma=0.1)
    ref = []
    for _ in range(TOTAL):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    assert ours == pytest.approx(ref, rel=1e-12)
    sch = pytest.importorskip("timm.scheduler")
    timm = _timm_rates(lambda o: sch.MultiStepLRScheduler(o, decay_t=list(milestones), decay_rate=0.1,
                                                          warmup_prefix=False, t_in_epochs=False), TOTAL)
    assert ours[1:] == pytest.approx(timm[:-1], rel=1e-12)  # timm's documented "milestone m applies at m - 1"
    assert ours != pytest.approx(timm, rel=1e-6)


def test_warmup_default_ramp_and_constant() -> None:
    const = Schedule("constant", TOTAL, 4)
    assert [const(t) for t in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])  # (s + 1) / W, no zero step
    assert const(10 * TOTAL) == 1.0
    cos = Schedule("cosine", TOTAL, 0, min_ratio=0.1)
    assert cos(0) == 1.0 and cos(TOTAL // 2) == pytest.approx(0.55) and cos(TOTAL + 7) == pytest.approx(0.1)


def test_lambda_scheduler_keeps_only_the_step_and_applies_lr_scale() -> None:
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.5},
                           {"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=LR)
    sched = lambda_scheduler(opt, Schedule("step", TOTAL, 0, decay_steps=3, decay_rate=0.1))
    for _ in range(3):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 * LR * 0.1, LR * 0.1])
    assert sched.state_dict()["lr_lambdas"] == [None, None]  # the rule is rebuilt from the config on resume


def test_schedule_from_config_turns_epochs_into_steps() -> None:
    o = OptimSettings(lr=0.01, min_lr=1e-4, schedule="multistep", warmup_epochs=0.5, warmup_lr=1e-3,
                      decay_milestones=(2.0, 3.5), decay_epochs=1.5)
    s = schedule_from_config(o, epochs=5, steps_per_epoch=10)
    assert (s.total_steps, s.warmup_steps, s.milestones, s.decay_steps) == (50, 5, (20, 35), 15)
    assert (s.min_ratio, s.warmup_ratio) == pytest.approx((0.01, 0.1))
    assert s.unreached() is None
    late = schedule_from_config(OptimSettings(schedule="multistep", decay_milestones=(3.0, 9.0)), 5, 10).unreached()
    assert late is not None and "90" in late and "never applies" in late


FLAGS = ["--sched", "multistep", "--min-lr", "1e-6", "--warmup-lr", "1e-5", "--decay-epochs", "7",
         "--dr", "0.5", "--decay-milestones", "3,6"]


def test_timm_schedule_flags_set_the_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["train", "--config", "mnist", *FLAGS, "--print-config"]) == 0
    o = yaml.safe_load(capsys.readouterr().out)["optim"]
    assert (o["schedule"], o["min_lr"], o["warmup_lr"], o["decay_epochs"], o["decay_rate"], o["decay_milestones"]) == \
        ("multistep", 1e-6, 1e-5, 7.0, 0.5, [3.0, 6.0])
    assert resolve_config().optim.schedule == "cosine"  # the default is unchanged


@pytest.mark.parametrize("argv,needle", [
    (["--sched", "bogus"], "optim.schedule='bogus': expected one of cosine, linear, poly, step, multistep, constant"),
    (["--sched", "multistep", "--decay-milestones", "6,3"], "optim.decay_milestones=[6.0, 3.0]: must be epochs > 0"),
    (["--decay-rate", "2"], "optim.decay_rate=2.0: must be in (0, 1]"),
    (["--min-lr", "1", "--lr", "0.1"], "optim.min_lr=1.0: must not exceed optim.lr=0.1"),
    (["--decay-milestones", "3", "--set", "optim.decay_milestones=[4]"], "give one of them"),
])
def test_bad_schedule_values_are_one_line_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["train", "--config", "mnist", *argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err


def test_training_logs_the_step_schedules_rates(tmp_path: Path) -> None:
    """4 steps an epoch, 3 epochs: warmup from --warmup-lr over 2 steps, then x0.5 every epoch (step 4, 8)."""
    run = tmp_path / "run"
    tiny = ["--set", "model_args.depth=1", "--set", "model_args.embed_dim=16", "--set", "model_args.num_heads=2",
            "--set", "model_args.mlp_dim=32"]
    argv = ["train", "--config", "mnist", *tiny, "--epochs", "3", "-b", "8", "--lr", "0.01", "--sched", "step",
            "--decay-epochs", "1", "--decay-rate", "0.5", "--warmup-epochs", "0.5", "--warmup-lr", "0.002",
            "--min-lr", "0.003", "--set", "max_steps_per_epoch=4", "--set", "max_eval_images=16", "--set", "log_every=1",
            "--set", "tensorboard=false", "--set", "data.test=none", "--device", "cpu", "--no-progress", "--out", str(run)]
    assert main(argv) == 0
    lrs = {r["step"]: r["lr"] for r in records(run, "train")}  # step k (1-based) trains at schedule position k - 1
    expected = [0.002, 0.006, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005, 0.003, 0.003, 0.003, 0.003]  # floor 0.003
    assert [lrs[k] for k in range(1, 13)] == pytest.approx(expected, rel=1e-9)
