"""Every built-in recipe runs in its smoke mode; recipes are found by name, also from an installed wheel;
fine-tuning changes resolution and classes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vitlab.cli.main import main
from vitlab.config import resolve_config
from vitlab.api import load_checkpoint
from vitlab.engine.tracking import read_records
from vitlab.recipes import find_recipe, list_recipes, recipe_dir

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = recipe_dir()
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


TRAIN_CONFIGS = [c for c in CONFIGS if not c.stem.startswith(("collapse", "detr"))]


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_recipe_resolves(config: Path) -> None:
    cfg = resolve_config(config, [{"data": {"train": "mnist"}}])
    assert cfg.epochs >= 1


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_recipe_smoke_runs(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--smoke", "--out", str(out), "--no-progress", "--device", "cpu",
                 "--set", "tensorboard=false"]) == 0
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    # a validated epoch: the raw weights' figures, or only the EMA's (mnist: ema.validate_raw false)
    assert any(r["kind"] == "epoch" and ("val_top1" in r or "ema_val_top1" in r) for r in records)


def test_finetune_at_higher_resolution_with_new_classes(digit_folder: Path, tmp_path: Path) -> None:
    """Pre-train at 28x28 on 10 digits, fine-tune at 56x56 on 3 classes with the paper's recipe."""
    pre = tmp_path / "pre"
    tiny = ["--set", "model_args.depth=1", "--set", "model_args.embed_dim=32", "--set", "model_args.num_heads=2",
            "--set", "model_args.mlp_dim=64", "--no-progress", "--device", "cpu", "--set", "tensorboard=false"]
    assert main(["train", "--model", "vit_pico_patch4_28", "--data", "mnist", "--epochs", "1", *tiny,
                 "--set", "max_steps_per_epoch=3", "--set", "max_eval_images=64", "--out", str(pre)]) == 0
    ft = tmp_path / "ft"
    weights = pre / "checkpoints" / "best.safetensors"
    assert main(["train", "--config", "vit_finetune", "--model", "vit_pico_patch4_28", *tiny,
                 "--set", "model_args.img_size=56", "--data", str(digit_folder), "--batch-size", "8", "--workers", "0",
                 "--epochs", "1", "--set", f"init.weights={weights}", "--out", str(ft)]) == 0
    src, dst = load_checkpoint(weights), load_checkpoint(ft / "checkpoints" / "last.safetensors")
    assert dst.model.config.img_size == (56, 56) and dst.class_names == ["digit0", "digit1", "digit2"]
    assert dst.model.pos_embed.shape == (1, 1 + 14 * 14, 32) and src.model.pos_embed.shape == (1, 1 + 7 * 7, 32)
    # The encoder really came from the pre-trained run: its patch projection moved only a little.
    delta = (dst.model.patch_embed.proj.weight - src.model.patch_embed.proj.weight).abs().max()
    assert delta < 0.1 * src.model.patch_embed.proj.weight.abs().max()
    cfg = json.dumps(json.loads(json.dumps(dst.model.config.to_dict())))
    assert '"num_classes": 3' in cfg
    assert torch.isfinite(dst.model(torch.zeros(1, 1, 56, 56))).all()


def _step_records(out: Path) -> list[tuple[float, float]]:
    """(loss, gradient norm) of each logged training step."""
    return [(r["loss"], r["grad_norm"]) for r in read_records(out / "metrics.jsonl") if r["kind"] == "train"]


def test_compile_matches_eager(tmp_path: Path) -> None:
    """``compile: true`` (torch.compile, inductor on the CPU) trains the same function as eager mode.

    Three steps from the same seed: the per-step losses and gradient norms, and the final weights,
    agree to float tolerance (inductor fuses and reorders float ops, so not bitwise), and the
    checkpoint holds the plain module's keys, not the compiled wrapper's ``_orig_mod.`` ones, so it
    loads without torch.compile.
    """
    common = ["train", "--config", str(CONFIG_DIR / "mnist.yaml"), "--smoke", "--no-progress", "--device", "cpu",
              "--set", "tensorboard=false", "--set", "log_every=1",
              "--precision", "fp32"]  # the reference numerics: the recipe's auto may pick bf16 on this host
    assert main([*common, "--out", str(tmp_path / "eager")]) == 0
    assert main([*common, "--set", "compile=true", "--out", str(tmp_path / "compiled")]) == 0
    eager, compiled = _step_records(tmp_path / "eager"), _step_records(tmp_path / "compiled")
    assert len(eager) == len(compiled) >= 3
    for (loss_e, norm_e), (loss_c, norm_c) in zip(eager, compiled):
        assert loss_c == pytest.approx(loss_e, rel=1e-4) and norm_c == pytest.approx(norm_e, rel=1e-4)
    weights_e = load_checkpoint(tmp_path / "eager" / "checkpoints" / "last.safetensors").model.state_dict()
    weights_c = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.safetensors").model.state_dict()
    assert weights_c.keys() == weights_e.keys() and not any("_orig_mod" in k for k in weights_c)
    # Adam divides by the gradient's running RMS, so entries whose gradient is at rounding level still
    # move by up to lr (3e-3 here) per step: weights agree to ~1e-5 measured, held to a bound far below lr.
    for key, value in weights_e.items():
        torch.testing.assert_close(weights_c[key], value, rtol=1e-3, atol=2e-4, msg=key)


DETECT_CONFIGS = [c for c in CONFIGS if c.stem.startswith("detr")]


@pytest.mark.parametrize("config", DETECT_CONFIGS, ids=lambda p: p.stem)
def test_detection_recipe_smoke_runs(config: Path, tmp_path: Path) -> None:
    """Each DETR recipe in smoke mode on the one engine: its own data when present (paths in the
    recipes are relative to the repository), else a few synthetic shapes."""
    from vitlab.detection.config import resolve_detect_config

    cfg = resolve_detect_config(config, smoke=True)
    data = []
    if not cfg.data.train.startswith("shapes"):
        own = REPO / cfg.data.train  # the recipes' data paths are relative to a checkout
        data = ["--data", str(own)] if own.is_dir() else ["--data", "shapes:4:64", "--val", "shapes:2:64"]
    out = tmp_path / "run"
    assert main(["detect", "train", "--config", str(config), "--smoke", *data, "--out", str(out), "--no-progress",
                 "--device", "cpu", "--set", "tensorboard=false", "--set", "data.eval_batch_size=2"]) == 0
    records = read_records(out / "metrics.jsonl")
    assert any(r["kind"] == "epoch" and "val_AP" in r for r in records)
    assert (out / "checkpoints" / "best.safetensors").is_file()


def test_configs_is_the_recipes_folder() -> None:
    """The repository's configs/ is a relative symlink to the package's recipes: old paths keep working."""
    link = REPO / "configs"
    if not link.is_symlink():
        pytest.skip("not a checkout")
    assert os.readlink(link) == "vitlab/recipes" and link.resolve() == recipe_dir().resolve()
    assert sorted(p.name for p in link.glob("*.yaml")) == [p.name for p in CONFIGS]


def test_recipes_are_listed_with_command_and_description(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for path in CONFIGS:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 20  # every recipe opens with its one-line description
        row = next(line for line in lines if line.split()[0] == path.stem)
        assert first[2:] in row
        data = yaml.safe_load(path.read_text())
        command = "study collapse" if "study" in data else "detect train" if data["model"].startswith("detr") else "train"
        assert f"  {command}  " in row
    assert main(["recipes", "mnist"]) == 0 and capsys.readouterr().out == (CONFIG_DIR / "mnist.yaml").read_text()


def test_config_finds_a_recipe_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here
    expected = yaml.safe_load((CONFIG_DIR / "mnist.yaml").read_text())["model"]
    for name in ("mnist", "mnist.yaml"):
        capsys.readouterr()
        assert main(["train", "--config", name, "--print-config"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["model"] == expected
    # configs/<name>.yaml from a README, run outside a checkout: the built-in recipe, and a note saying so
    assert main(["train", "--config", "configs/mnist.yaml", "--print-config"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["model"] == expected and "using the built-in recipe mnist" in out.err
    # a path always wins over a recipe of the same name
    Path("mnist").write_text("model: vit_pico_patch4_28\n")
    assert main(["train", "--config", "mnist", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"] == "vit_pico_patch4_28" != expected
    # an unknown name: one line listing the recipes, exit 2, for every command that takes --config
    for command in (["train"], ["detect", "train"], ["study", "collapse"]):
        assert main([*command, "--config", "no_such_recipe"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no_such_recipe" in err and all(r.name in err for r in list_recipes())


def test_detect_and_study_take_recipe_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitlab.detection.config import resolve_detect_config

    monkeypatch.chdir(tmp_path)
    assert find_recipe("detr_shapes")[0] == CONFIG_DIR / "detr_shapes.yaml"
    assert resolve_detect_config(find_recipe("detr_shapes")[0]).model == "detr_vit_pico_64"
    from vitlab.cli.study_cmd import collapse_cmd

    default = next(p for p in collapse_cmd.params if p.name == "recipe").default
    assert find_recipe(default)[0] == CONFIG_DIR / "collapse_study.yaml"


@pytest.mark.slow
def test_recipe_lookup_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build a wheel of this tree, install it into a bare folder, resolve ``mnist`` from elsewhere:
    the recipe must come from the installed package (package data), not from the checkout."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "vitlab", src / "vitlab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path / "dist").glob("vitlab-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    code = ("import vitlab.recipes as r; p, _ = r.find_recipe('mnist'); print(p.resolve()); "
            "print(len(r.list_recipes()))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    path, count = done.stdout.split()
    assert Path(path).is_relative_to((tmp_path / "site").resolve()) and Path(path).name == "mnist.yaml"
    assert int(count) == len(CONFIGS)
    assert Path(path).read_text() == (CONFIG_DIR / "mnist.yaml").read_text()
