"""``vitlab bench``: speed against timm, transformers and torchvision, measured side by side in one process.

Every library (and vitlab's runtimes, where installed) is timed once per round, round after round,
after warm-up; the tables give medians, min-max and the median of per-round ratios. Writes
``bench.json`` and ``bench.md`` to ``--out``. The library side is :mod:`vitlab.bench`.
"""

from __future__ import annotations

from dataclasses import fields

import click

from vitlab.errors import ConfigError

_QUICK = {"models": ("vit_tiny_patch16_224",), "batches": (2,), "rounds": 2, "warmup": 1, "train_batch": 2,
          "capture_batch": 2, "data_images": 24}


def _csv(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _ints(value: str | None, flag: str) -> tuple[int, ...] | None:
    try:
        return None if value is None else tuple(int(v) for v in _csv(value) or ())
    except ValueError:
        raise ConfigError(f"{flag}: a comma-separated list of integers, got {value!r}") from None


@click.command("bench")
@click.option("--models", help="Comma-separated model names, or ti / s / b for ViT-Ti/S/B-16 at 224 [default: s].")
@click.option("--batch", "batches", help="Inference batch sizes, comma-separated [default: 1,32].")
@click.option("--precision", "precisions", help="fp32, bf16, fp16 (CUDA), auto (measured), comma-separated [default: fp32].")
@click.option("--frameworks", help="vitlab,timm,hf,torchvision (the installed ones are used) [default: all].")
@click.option("--sections", help="ceiling,inference,training,capture,data [default: all].")
@click.option("--runtimes", help="vitlab.runtime rows: compiled,onnxruntime,openvino, or none [default: all available].")
@click.option("--rounds", type=int, help="Timed rounds [default: 7; --quick 2].")
@click.option("--warmup", type=int, help="Untimed rounds first [default: 2; --quick 1].")
@click.option("--train-batch", type=int, help="Training and data-loader batch [default: 32].")
@click.option("--capture-batch", type=int, help="Batch of the attention-capture rows [default: 8].")
@click.option("--data", "data", multiple=True, help="Image folder(s) of class subfolders for the data section "
              "(repeatable; 'synthetic' for generated JPEGs) [default: ../shared/data photos, else synthetic].")
@click.option("--data-images", type=int, help="Images a data-loader pass reads [default: 512].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--threads", type=int, help="torch intra-op threads [default: torch's].")
@click.option("--quick", is_flag=True, help="A small smoke run: ViT-Ti, batch 2, 2 rounds (explicit flags win).")
@click.option("--out", type=click.Path(file_okay=False), help="Write bench.json and bench.md here.")
def bench_cmd(models, batches, precisions, frameworks, sections, runtimes, rounds, warmup, train_batch, capture_batch,
              data, data_images, device, threads, quick, out) -> None:
    """Time vitlab against the installed peers (interleaved rounds) and print the medians and ratios."""
    from vitlab.bench import BenchOptions, run_bench, write_report
    from vitlab.utils.atomic import probe_writable

    given = {"models": _csv(models), "batches": _ints(batches, "--batch"), "precisions": _csv(precisions),
             "frameworks": _csv(frameworks), "sections": _csv(sections), "rounds": rounds, "warmup": warmup,
             "train_batch": train_batch, "capture_batch": capture_batch, "data_images": data_images,
             "runtimes": () if runtimes == "none" else _csv(runtimes), "threads": threads}
    if data:
        given["data"] = () if tuple(data) == ("synthetic",) else tuple(data)
    base = {**(_QUICK if quick else {}), **{k: v for k, v in given.items() if v is not None}}
    if "frameworks" in base and "vitlab" not in base["frameworks"]:
        base["frameworks"] = ("vitlab", *base["frameworks"])
    if out:
        probe_writable(out, "--out")  # before minutes of timing
    names = {f.name for f in fields(BenchOptions)}
    opts = BenchOptions(**{k: v for k, v in base.items() if k in names}, device=device, quick=quick)
    result = run_bench(opts, say=click.echo)
    if out:
        js, md = write_report(result, out)
        click.echo(f"wrote {js} and {md}")
