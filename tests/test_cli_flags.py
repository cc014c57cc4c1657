"""``vitlab train``'s timm-style flags: each sets its config field (CLI -> resolved config), conflicts
with ``--set`` are one-line errors, ``--help`` is grouped, ``--aa`` parses as timm does and runs
torchvision's RandAugment, and a folder of photos gets crops and flips by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torchvision.transforms import v2

from vitlab.cli.main import main
from vitlab.config import parse_assignment, resolve_config
from vitlab.data.randaugment import ScaledRandAugment, parse_timm_rand

TINY = ["--model", "vit_pico_patch4_28", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64"]


def _resolved(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """The config ``vitlab train ARGV --print-config`` resolves (as the trainer would write it)."""
    capsys.readouterr()
    assert main(["train", *argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _get(tree: dict[str, Any], field: str) -> Any:
    for part in field.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None  # type: ignore[assignment]
    return tree


ALIASES = [
    (["--img-size", "56"], "model_args.img_size", 56),
    (["--num-classes", "10"], "model_args.num_classes", 10),
    (["-b", "48"], "data.batch_size", 48),
    (["--batch-size", "48"], "data.batch_size", 48),
    (["-j", "3"], "data.workers", 3),
    (["--workers", "3"], "data.workers", 3),
    (["--warmup-epochs", "2.5"], "optim.warmup_epochs", 2.5),
    (["--weight-decay", "0.3"], "optim.weight_decay", 0.3),
    (["--drop-path", "0.2"], "model_args.drop_path_rate", 0.2),
    (["--smoothing", "0.25"], "optim.label_smoothing", 0.25),
    (["--mixup", "0.8"], "mixup.mixup_alpha", 0.8),
    (["--cutmix", "1.0"], "mixup.cutmix_alpha", 1.0),
    (["--aa", "rand-m9-mstd0.5"], "data.augment.ra_magnitude_std", 0.5),
    (["--model-ema-decay", "0.99"], "ema.decay", 0.99),
    (["--model-ema", "--model-ema-decay", "0.95"], "ema.decay", 0.95),
    (["--opt", "sgd"], "optim.name", "sgd"),
    (["--lr", "0.01"], "optim.lr", 0.01),
    (["--epochs", "3"], "epochs", 3),
    (["--precision", "bf16"], "precision", "bf16"),  # the mnist recipe pins fp32
    (["--strict-data"], "data.strict", True),
]


@pytest.mark.parametrize("argv,field,expected", ALIASES, ids=[" ".join(a[0]) for a in ALIASES])
def test_alias_sets_its_field(argv: list[str], field: str, expected: Any, capsys: pytest.CaptureFixture[str]) -> None:
    base = _resolved(capsys, "--config", "mnist")
    assert _get(base, field) != expected  # the recipe alone gives another value: the flag is what changed it
    assert _get(_resolved(capsys, "--config", "mnist", *argv), field) == expected


def test_bare_model_ema_is_timms_decay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a recipe without EMA, bare ``--model-ema`` switches it on at timm's default decay."""
    recipe = tmp_path / "plain.yaml"
    recipe.write_text("epochs: 1\n")
    assert _resolved(capsys, "--config", str(recipe))["ema"]["decay"] is None
    assert _resolved(capsys, "--config", str(recipe), "--model-ema")["ema"]["decay"] == 0.9998


def test_amp_is_precision_auto_and_conflicts_with_fp32(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "fp32.yaml"
    recipe.write_text("precision: fp32\n")
    assert _resolved(capsys, "--config", str(recipe))["precision"] == "fp32"
    assert _resolved(capsys, "--config", str(recipe), "--amp")["precision"] == "auto"
    assert _resolved(capsys, "--config", str(recipe), "--amp", "--set", "precision=auto")["precision"] == "auto"
    assert main(["train", "--config", "mnist", "--amp", "--precision", "fp32", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--amp" in err and "precision" in err


@pytest.mark.parametrize("argv", [["-b", "8", "--set", "data.batch_size=16"],
                                  ["--drop-path", "0.1", "--set", "model_args.drop_path_rate=0.2"],
                                  ["--aa", "rand-m9", "--set", "data.augment.ra_magnitude=5"],
                                  ["--pretrained", "--set", "init.pretrained=tv_in1k"]])
def test_flag_and_set_for_one_field_is_a_one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["train", "--config", "mnist", "--model", "vit_base_patch16_224", *argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "give one of them" in err


def test_sched_names_the_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    assert _resolved(capsys, "--config", "mnist", "--sched", "cosine")["optim"]["schedule"] == "cosine"
    assert _resolved(capsys, "--config", "mnist", "--sched", "step")["optim"]["schedule"] == "step"
    assert main(["train", "--config", "mnist", "--sched", "bogus", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: optim.schedule='bogus': expected one of cosine, linear, poly, step, multistep, constant"


def test_poly_refuses_timms_decay_rate_as_its_power(capsys: pytest.CaptureFixture[str]) -> None:
    """timm's train.py reads poly's power from --decay-rate; vitlab would ignore it, so it refuses."""
    assert main(["train", "--config", "mnist", "--sched", "poly", "--decay-rate", "0.5", "--print-config"]) == 2
    assert "--poly-power" in capsys.readouterr().err
    cfg = _resolved(capsys, "--config", "mnist", "--sched", "poly", "--poly-power", "2")  # control: the right flag
    assert cfg["optim"]["poly_power"] == 2.0


def test_bare_pretrained_is_the_models_default_tag_as_timm_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    timm = pytest.importorskip("timm")
    cfg = _resolved(capsys, "--config", "mnist", "--model", "vit_base_patch16_224", "--pretrained")
    assert cfg["init"]["pretrained"] == timm.models.get_pretrained_cfg("vit_base_patch16_224").tag
    assert _resolved(capsys, "--config", "mnist", "--model", "vit_base_patch16_224", "--pretrained", "tv_in1k",
                     )["init"]["pretrained"] == "tv_in1k"
    assert main(["train", "--config", "mnist", "--pretrained", "--print-config"]) == 2  # the recipe's model has none
    assert "no pretrained weights are listed" in capsys.readouterr().err


def test_model_ema_keeps_the_recipes_decay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "ema.yaml"
    recipe.write_text("ema: {decay: 0.9}\n")
    assert _resolved(capsys, "--config", str(recipe), "--model-ema")["ema"]["decay"] == 0.9


def test_help_groups_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    titles = ["Recipe and run:", "Model:", "Data:", "Augmentation and regularisation:", "Optimisation:",
              "Weight averaging (EMA):", "Device and precision:"]
    positions = [text.index(t) for t in titles]
    assert positions == sorted(positions)
    section = lambda t: text[text.index(t):].split("\n\n")[0]  # noqa: E731
    assert "--aa SPEC" in section("Augmentation") and "--aa" not in section("Model:")
    assert "-b, --batch-size" in section("Data:") and "--model-ema " in section("Weight averaging")


@pytest.mark.parametrize("spec", ["rand-m9-mstd0.5", "rand-m7-n3-p1", "rand-m9-mstd200-inc1", "rand-n1", "rand-m0"])
def test_aa_parses_as_timm_does(spec: str) -> None:
    timm_aa = pytest.importorskip("timm.data.auto_augment")
    ref = timm_aa.rand_augment_transform(spec, {})
    got = parse_timm_rand(spec)
    assert got["randaugment"] and got["ra_levels"] == 10  # timm's _LEVEL_DENOM
    assert got["ra_num_ops"] == ref.num_layers and got["ra_magnitude"] == ref.ops[0].magnitude
    assert got["ra_prob"] == ref.ops[0].prob
    std = ref.ops[0].magnitude_std
    assert got["ra_magnitude_std"] > 100 if std == float("inf") else got["ra_magnitude_std"] == std


@pytest.mark.parametrize("spec", ["augmix-m5", "original", "rand-m11", "rand-m0.5", "rand-w0", "rand-mmax10"])
def test_aa_rejects_what_it_cannot_do(spec: str) -> None:
    with pytest.raises(Exception, match="--aa"):
        parse_timm_rand(spec)


def test_scaled_randaugment_is_torchvisions_at_a_whole_magnitude() -> None:
    """Level 9 of 30 is torchvision's magnitude 9; timm's m10 (level 10 of 10) is torchvision's full 30."""
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    for seed in range(12):
        for ours, theirs in ((ScaledRandAugment(2, 9, 30), v2.RandAugment(2, 9)),
                             (ScaledRandAugment(2, 10, 10), v2.RandAugment(2, 30))):
            torch.manual_seed(seed)
            a = ours(image)
            torch.manual_seed(seed)
            assert torch.equal(a, theirs(image))
    torch.manual_seed(0)
    assert torch.equal(ScaledRandAugment(3, 9, 10, prob=0.0)(image), image)  # p=0: no op applies
    torch.manual_seed(0)
    half = ScaledRandAugment(2, 9, 10, prob=0.5)
    assert sum(torch.equal(half(image), image) for _ in range(200)) > 30  # ~1/4 untouched (+ identity ops)


def test_magnitude_noise_is_normal_around_m_and_clipped() -> None:
    torch.manual_seed(0)
    aug = ScaledRandAugment(2, 9, 10, magnitude_std=0.5)
    levels = torch.tensor([aug._sample_level() for _ in range(4000)])
    assert levels.max() <= 10 and levels.min() >= 0
    assert abs(levels[levels < 10].std().item() - 0.5) < 0.1 and abs(levels.median().item() - 9) < 0.05
    uniform = torch.tensor([ScaledRandAugment(2, 9, 10, magnitude_std=200)._sample_level() for _ in range(4000)])
    assert abs(uniform.mean().item() - 4.5) < 0.2 and uniform.max() <= 9


def test_flags_reach_config_yaml_in_a_run(tmp_path: Path) -> None:
    """End to end: a short run with timm's spellings; config.yaml holds the fields, not the flags."""
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist", "--smoke", *TINY, "--out", str(out), "--no-progress", "--device", "cpu",
                 "--set", "tensorboard=false", "--test", "none", "--set", "max_eval_images=32", "--set",
                 "max_steps_per_epoch=2", "-b", "16", "-j", "0", "--amp", "--drop-path", "0.1", "--smoothing", "0.2",
                 "--mixup", "0.2", "--cutmix", "0.5", "--aa", "rand-m9-mstd0.5", "--model-ema-decay", "0.97",
                 "--set", "model_args.stem_args={}", "--weight-decay",
                 "0.01", "--warmup-epochs", "0.5", "--sched", "cosine", "--img-size", "28", "--num-classes", "10"]) == 0
    text = (out / "config.yaml").read_text()
    saved = yaml.safe_load(text)
    assert "--" not in text and "aa:" not in text
    # --amp is timm's spelling of --precision auto; config.yaml records what auto chose (measured)
    assert saved["data"]["batch_size"] == 16 and saved["precision"] in ("fp32", "bf16")
    assert saved["model_args"]["drop_path_rate"] == 0.1 and saved["optim"]["label_smoothing"] == 0.2
    assert saved["mixup"]["mixup_alpha"] == 0.2 and saved["mixup"]["cutmix_alpha"] == 0.5
    assert saved["data"]["augment"]["randaugment"] and saved["data"]["augment"]["ra_levels"] == 10
    assert saved["ema"]["decay"] == 0.97 and saved["optim"]["weight_decay"] == 0.01
    # the saved file resolves to the same config again (what --resume reads)
    assert resolve_config(out / "config.yaml").data.augment.ra_magnitude_std == 0.5


def test_folder_gets_crops_and_flips_by_default(digit_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _resolved(capsys, *TINY, "--data", str(digit_folder))["data"]["augment"]
    assert folder["random_resized_crop"] is True and folder["hflip"] == 0.5
    digits = _resolved(capsys, *TINY, "--data", "mnist")["data"]["augment"]
    assert digits["random_resized_crop"] is False and digits["hflip"] == 0.0
    off = _resolved(capsys, *TINY, "--data", str(digit_folder), "--set", "data.augment.hflip=0")["data"]["augment"]
    assert off["hflip"] == 0.0 and off["random_resized_crop"] is True
    padded = _resolved(capsys, *TINY, "--data", str(digit_folder), "--set", "data.augment.crop_padding=2")
    assert padded["data"]["augment"]["random_resized_crop"] is False  # the recipe chose its own crop


def test_folder_default_augmentation_is_applied(digit_folder: Path) -> None:
    """The trainer's training images of a folder vary with the epoch (crops, flips) unless turned off."""
    from vitlab.config import resolve_auto_augment
    from vitlab.trainer import _prepare

    def epochs_differ(sets: list[str]) -> bool:
        cfg = resolve_config(None, [{"model": "vit_pico_patch4_28", "data": {"train": str(digit_folder), "batch_size": 4}},
                                    *[parse_assignment(s) for s in sets]])
        cfg, note = resolve_auto_augment(cfg, photos=True)
        ds = _prepare(cfg, echo=lambda s: None).train_ds
        first = torch.stack([ds[i][0] for i in range(6)])
        ds.set_epoch(1)
        return not torch.equal(first, torch.stack([ds[i][0] for i in range(6)]))

    assert epochs_differ([])
    assert not epochs_differ(["data.augment.random_resized_crop=false", "data.augment.hflip=0"])  # negative control


def test_timm_randaugment_stays_seeded_per_sample() -> None:
    """The noisy, probabilistic RandAugment draws only from torch's generator: under SeededTransform a
    sample's image is a function of (seed, epoch, index), whatever ran before (the basis of exact resume)."""
    from vitlab.data.seeded import SeededTransform
    from vitlab.data.transforms import AugmentConfig, Preprocess, build_train_transform

    images = [(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8), 0) for _ in range(6)]
    pre = Preprocess((16, 16), 3, (0.5,) * 3, (0.5,) * 3, 1.0, "bilinear")
    aug = AugmentConfig(**{k: v for k, v in parse_timm_rand("rand-m9-mstd0.5").items() if k != "randaugment"},
                        randaugment=True)
    ds = SeededTransform(images, build_train_transform(pre, aug), seed=3)
    forward = [ds[i][0] for i in range(6)]
    torch.rand(100)  # the caller's stream moves on
    backward = [ds[i][0] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    ds.set_epoch(1)
    assert not all(torch.equal(a, ds[i][0]) for i, a in enumerate(forward))  # another epoch, other draws


def test_a_recipes_stem_args_on_another_stem_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mnist's conv-stem arguments under --model with a patch stem: one line naming model_args.stem_args and the fix."""
    argv = ["train", "--config", "mnist", "--smoke", "--model", "vit_pico_patch4_28", "--out", str(tmp_path / "r"),
            "--no-progress", "--device", "cpu", "--test", "none", "--set", "tensorboard=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown argument(s) channels, extra in model_args.stem_args" in err[0]
    assert "--set model_args.stem_args={...}, or {} for none" in err[0]
    assert main([*argv, "--set", "model_args.stem_args={}"]) == 0  # the fix the line names works


def test_a_dotted_set_inside_model_args_keeps_the_recipes_other_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """``--set model_args.stem_args.extra=2`` changes one argument of mnist's conv stem; a mapping given
    as the value (``--set model_args.stem_args={extra: 2}``) replaces the recipe's whole, as documented."""
    recipe = _resolved(capsys, "--config", "mnist")["model_args"]["stem_args"]
    assert recipe == {"channels": [48, 96], "extra": 1}
    dotted = _resolved(capsys, "--config", "mnist", "--set", "model_args.stem_args.extra=2")["model_args"]
    assert dotted["stem_args"] == {"channels": [48, 96], "extra": 2} and dotted["depth"] == 3
    whole = _resolved(capsys, "--config", "mnist", "--set", "model_args.stem_args={extra: 2}")["model_args"]
    assert whole["stem_args"] == {"extra": 2}  # negative control: the channels are gone (the old dotted result)
    assert _resolved(capsys, "--config", "mnist", "--set", "data.augment.affine_degrees=5")["data"]["augment"][
        "affine_translate"] == 0.1  # sections still merge key by key
