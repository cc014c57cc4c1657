"""``vitlab train``: train a model from a YAML recipe and command-line overrides."""

from __future__ import annotations


import click

from vitlab.cli.failures import run_failures
from vitlab.cli.resume_args import probe_run_folder, resolve_resume
from vitlab.config import parse_assignment, resolve_config


@click.command("train")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML recipe (configs/*.yaml).")
@click.option("--model", help="Registered model name (`vitlab models` lists them).")
@click.option("--data", "train_data", help="Training data: 'mnist', an image folder, or torchvision:NAME.")
@click.option("--val", "val_data", help="Validation data (default: the source's val split, else a seeded, stratified "
              "carve-out of its training split, data.val_fraction).")
@click.option("--test", "test_data", help="Test data, scored once at the end with the checkpoint chosen on validation "
              "(default auto: the source's test split if it has one; 'none' to skip).")
@click.option("--strict-data", is_flag=True, help="Stop at the first image file that cannot be decoded "
              "(default: substitute up to data.max_bad_samples of them, counted in the epoch record).")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--opt", type=click.Choice(["adamw", "adam", "sgd"]))
@click.option("--workers", type=int, help="Data-loader worker processes.")
@click.option("--device", help="auto (default), cpu, cuda, cuda:N, mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--seed", type=int)
@click.option("--weights", "init_weights", type=click.Path(dir_okay=False),
              help="Initialise from a weights file (vitlab, timm, HF, torchvision, .npz, MindSpore) to fine-tune.")
@click.option("--pretrained", help="Initialise from a known public checkpoint tag (`vitlab pretrained` lists them).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set optim.weight_decay=0.1 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default runs/<model>).")
@click.option("--resume", "resume", default=None, metavar="RUN_DIR|auto",
              help="Continue a run from its last checkpoint; 'auto' resumes --out if it has one.")
@click.option("--overwrite", is_flag=True, help="Replace an existing non-empty --out folder.")
@click.option("--allow-change", "allow_changes", multiple=True, metavar="FIELD",
              help="With --resume: accept a changed config field (e.g. epochs); repeatable.")
@click.option("--smoke", is_flag=True, help="Apply the recipe's smoke settings (runs in seconds).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def train_cmd(config_file, model, train_data, val_data, test_data, strict_data, epochs, batch_size, lr, opt, workers,
              device, precision, seed, init_weights, pretrained, assignments, out, resume, overwrite, allow_changes, smoke, no_progress) -> None:
    """Train a model; writes config.yaml, metrics.jsonl and checkpoints/ into the run folder."""
    from vitlab.trainer import train  # heavy imports only when the command runs

    flags = {"model": model, "epochs": epochs, "seed": seed, "device": device, "precision": precision}
    data = {"train": train_data, "val": val_data, "test": test_data, "batch_size": batch_size, "workers": workers,
            "strict": True if strict_data else None}
    optim = {"lr": lr, "name": opt}
    init = {"weights": init_weights, "pretrained": pretrained}
    overrides = [{k: v for k, v in flags.items() if v is not None},
                 {"data": {k: v for k, v in data.items() if v is not None}},
                 {"optim": {k: v for k, v in optim.items() if v is not None}},
                 {"init": {k: v for k, v in init.items() if v is not None}}]
    overrides += [parse_assignment(a) for a in assignments]

    resuming, out, config_file = resolve_resume(resume, out, config_file, overwrite)
    cfg = resolve_config(config_file, overrides, smoke=smoke and not resuming)
    out = out or f"runs/{cfg.model}"
    probe_run_folder(out, resuming)  # before the data is read or any weights are downloaded
    with run_failures(out, "train"):
        result = train(cfg, out, resume=resuming, overwrite=overwrite, progress=not no_progress, echo=click.echo,
                       allow_changes=tuple(allow_changes))
    if result.exit_code:
        raise SystemExit(result.exit_code)
    if result.best_epoch >= 0 and result.is_main:
        test = f"; test top-1 {result.test_metrics['test_top1']:.2f}%" if result.test_metrics else ""
        click.echo(f"best {result.best_metric} {result.best_value:.2f} at epoch {result.best_epoch + 1}{test}; "
                   f"{result.seconds:.1f}s; run folder {result.run_dir}")
