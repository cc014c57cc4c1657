"""The bench's run: every section for every model, all libraries interleaved round by round.

Sections: ``ceiling`` (matmul GFLOP/s, fp32 and bf16), ``inference`` (each batch size, each
precision, each library; vitlab's runtimes too when :mod:`vitlab.runtime` is installed),
``training`` (fwd + bwd + AdamW images/s, and each step's peak memory), ``capture`` (all attention
maps against a plain forward), ``data`` (decode + augmentation images/s, 0 and 2 workers).
Ratios are to timm's eager fp32 in the same rounds (vitlab's eager fp32 without timm).
"""

from __future__ import annotations

import gc
import os
import shlex
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from vitlab.bench.memory import method as memory_method
from vitlab.bench.memory import step_peak_mib
from vitlab.bench.ceiling import default_size, matmul_ceiling
from vitlab.bench.data_pipeline import default_folders, measure_pipelines
from vitlab.bench.machine import machine_record
from vitlab.bench.peers import FRAMEWORKS, Entry, build_entries, check_frameworks
from vitlab.bench.runtimes import runtime_variants
from vitlab.bench.stats import interleave, per_round_ratios, summarize
from vitlab.bench.workloads import (NO_CAPTURE, capture_variants, inference_variants, random_batch, training_variants,
                                    variant_name)
from vitlab.errors import ConfigError
from vitlab.registry import is_model
from vitlab.utils.device import resolve_device, resolve_precision, resolve_train_precision
from vitlab.utils.flops import count_macs

SCHEMA = "vitlab.bench/1"
SECTIONS = ("ceiling", "inference", "training", "capture", "data")
ALIASES = {"ti": "vit_tiny_patch16_224", "s": "vit_small_patch16_224", "b": "vit_base_patch16_224"}
Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What to run; the CLI's flags one to one (``--quick`` sets the small values)."""

    models: tuple[str, ...] = ("vit_small_patch16_224",)
    batches: tuple[int, ...] = (1, 32)
    precisions: tuple[str, ...] = ("fp32",)
    frameworks: tuple[str, ...] = FRAMEWORKS
    sections: tuple[str, ...] = SECTIONS
    rounds: int = 7
    warmup: int = 2
    train_batch: int = 32
    capture_batch: int = 8
    data: tuple[str, ...] | None = None  # None: the shared real-photo folders when present
    data_images: int = 512
    runtimes: tuple[str, ...] | None = None  # vitlab.runtime names to add rows for; None: all available
    device: str = "auto"
    threads: int | None = None
    quick: bool = False


def check_options(opts: BenchOptions) -> None:
    """One-line ConfigError naming the flag for a value the bench cannot run."""
    check_frameworks(opts.frameworks)
    bad = [s for s in opts.sections if s not in SECTIONS]
    if bad:
        raise ConfigError(f"--sections: unknown {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if opts.rounds < 1 or opts.warmup < 0:
        raise ConfigError(f"--rounds must be >= 1 and --warmup >= 0, got {opts.rounds} / {opts.warmup}")
    if not opts.batches or min(opts.batches + (opts.train_batch, opts.capture_batch)) < 1:
        raise ConfigError("--batch, --train-batch and --capture-batch must be >= 1")
    unknown = [m for m in opts.models if not is_model(ALIASES.get(m, m))]
    if unknown or not opts.models:
        raise ConfigError(f"--models: {', '.join(unknown) or 'none given'} not registered "
                          "(vitlab models lists them; ti / s / b name ViT-Ti/S/B-16 at 224)")
    if opts.threads is not None and opts.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {opts.threads}")


def resolve_precisions(requested: Sequence[str], resolve: Callable[[str], str]) -> list[str]:
    """Each requested precision through ``resolve`` (checked; ``auto`` -> the measured choice, which
    says which and why), duplicates dropped, in the order asked."""
    out: list[str] = []
    for p in requested:
        got = resolve(p)
        if got not in out:
            out.append(got)
    return out


def command_line(opts: BenchOptions) -> str:
    """The ``vitlab bench`` command that reruns ``opts`` (every choice spelled out)."""
    parts = ["vitlab", "bench", "--models", ",".join(opts.models), "--batch", ",".join(map(str, opts.batches)),
             "--precision", ",".join(opts.precisions), "--frameworks", ",".join(opts.frameworks),
             "--sections", ",".join(opts.sections), "--rounds", str(opts.rounds), "--warmup", str(opts.warmup),
             "--train-batch", str(opts.train_batch), "--capture-batch", str(opts.capture_batch),
             "--data-images", str(opts.data_images), "--device", opts.device]
    if opts.runtimes is not None:
        parts += ["--runtimes", ",".join(opts.runtimes) or "none"]
    if opts.data is not None:
        parts += [a for d in (opts.data or ("synthetic",)) for a in ("--data", d)]
    if opts.threads:
        parts += ["--threads", str(opts.threads)]
    return shlex.join(parts + (["--quick"] if opts.quick else []))


def run_bench(opts: BenchOptions, say: Say = print) -> dict:
    """Run the selected sections; the JSON-ready result (``schema`` :data:`SCHEMA`).

    ``opts.threads`` applies for the run only; torch's thread count is restored afterwards.
    """
    check_options(opts)
    device = resolve_device(opts.device)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads or saved_threads)
    try:
        return _run(opts, device, say)
    finally:
        torch.set_num_threads(saved_threads)


def _run(opts: BenchOptions, device: torch.device, say: Say) -> dict:
    models = [ALIASES.get(m, m) for m in opts.models]
    result: dict = {"schema": SCHEMA, "command": command_line(opts), "options": asdict(opts),
                    "machine": machine_record(device), "memory_method": memory_method(device),
                    "notes": [], "ceiling": None, "models": {}, "data": None}
    say(f"bench on {result['machine']['cpu']} ({device}, {torch.get_num_threads()} threads), "
        f"{opts.rounds} rounds after {opts.warmup} warm-up")
    if "ceiling" in opts.sections:
        n = default_size(device, opts.quick)
        result["ceiling"] = matmul_ceiling(device, n, opts.rounds, opts.warmup)
        say("matmul ceiling: " + ", ".join(f"{k} {v['gflops_median']:.0f} GFLOP/s" for k, v in result["ceiling"].items()))
    for name in models if {"inference", "training", "capture"} & set(opts.sections) else ():
        result["models"][name] = _bench_model(name, opts, device, result["notes"], say)
        gc.collect()
    if "data" in opts.sections:
        folders = default_folders() if opts.data is None else list(opts.data)
        result["data"] = measure_pipelines(folders, opts.data_images, opts.train_batch, min(opts.rounds, 3))
        for d in result["data"]:
            say(f"data {d['folder']}: " + ", ".join(f"{k} {v['rate_median']:.0f} img/s" for k, v in d["rows"].items()))
    # Other processes' load over the run (the start's is in the machine record): noisy rounds show here.
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


def _bench_model(name: str, opts: BenchOptions, device: torch.device, notes: list[str], say: Say) -> dict:
    entries, skipped = build_entries(name, opts.frameworks, device)
    notes.extend(f"{name}: {n}" for n in skipped)
    for n in skipped:
        say(f"note: {n}")
    cfg = entries[0].model.config
    chw = (cfg.in_chans, *cfg.img_size)
    # inference's auto times a matmul at the model's width; training's the model's own step (what vitlab train picks)
    precisions = resolve_precisions(opts.precisions, lambda p: resolve_precision(
        p, device, purpose="infer", width=cfg.embed_dim, say=say))  # type: ignore[arg-type]
    out: dict = {"img_size": list(cfg.img_size), "macs_per_image": count_macs(entries[0].model, (1, *chw)),
                 "precisions": precisions, "checks": {e.name: e.check for e in entries}}
    reference = _reference(entries, precisions)
    if "inference" in opts.sections:
        out["inference"] = {str(b): _inference(entries, (b, *chw), precisions, device, opts, reference, out, notes, say)
                            for b in opts.batches}
    if "training" in opts.sections:
        train_precisions = resolve_precisions(opts.precisions, lambda p: resolve_train_precision(
            p, device, entries[0].model, chw, opts.train_batch, say=say))  # type: ignore[arg-type]
        out["train_precisions"] = train_precisions
        out["training"] = _training(entries, (opts.train_batch, *chw), train_precisions, device, opts,
                                    _reference(entries, train_precisions), out, say)
    if "capture" in opts.sections:
        out["capture"] = _capture(entries, (opts.capture_batch, *chw), device, opts, say)
    return out


def _reference(entries: Sequence[Entry], precisions: Sequence[str]) -> str:
    names = [e.name for e in entries]
    fw = "timm" if "timm" in names else "vitlab"
    return variant_name(fw, "fp32" if "fp32" in precisions else precisions[0])


def _inference(entries: Sequence[Entry], shape: tuple[int, int, int, int], precisions: Sequence[str],
               device: torch.device, opts: BenchOptions, reference: str, model_out: dict, notes: list[str],
               say: Say) -> dict:
    variants = inference_variants(entries, shape, precisions, device)
    extra, runtime_notes = runtime_variants(entries[0].model, shape, precisions, device, opts.runtimes)
    variants.update(extra)
    notes.extend(n for n in runtime_notes if n not in notes)
    stats = summarize(interleave(variants, opts.rounds, opts.warmup), items=shape[0], reference=reference)
    for row in stats.values():
        row["gflops"] = 2 * model_out["macs_per_image"] * shape[0] / row["median_s"] / 1e9
    _say_rows(say, f"inference batch {shape[0]}", stats, reference)
    return {"reference": reference, "rows": stats}


def _training(entries: Sequence[Entry], shape: tuple[int, int, int, int], precisions: Sequence[str],
              device: torch.device, opts: BenchOptions, reference: str, model_out: dict, say: Say) -> dict:
    num_classes = entries[0].model.config.num_classes
    variants, steps = training_variants(entries, shape, precisions, device, num_classes)
    stats = summarize(interleave(variants, opts.rounds, max(1, opts.warmup)), items=shape[0], reference=reference)
    make = random_batch(shape, num_classes, device)
    for name, row in stats.items():
        # forward + backward ~ 3x the forward's products (the backward computes two per forward one)
        row["gflops"] = 6 * model_out["macs_per_image"] * shape[0] / row["median_s"] / 1e9
        row["step_peak_mib"] = step_peak_mib(steps[name], make, device)
    _say_rows(say, f"training batch {shape[0]}", stats, reference)
    for entry in entries:
        entry.model.eval()
    return {"reference": reference, "batch": shape[0], "rows": stats}


def _capture(entries: Sequence[Entry], shape: tuple[int, int, int, int], device: torch.device, opts: BenchOptions,
             say: Say) -> dict:
    variants = capture_variants(entries, shape, device)
    times = interleave(variants, opts.rounds, opts.warmup)
    stats = summarize(times, items=shape[0], reference=None)
    cost = {}
    for key in variants:
        fw, _, kind = key.rpartition(" ")
        if kind == "capture":
            ratios = per_round_ratios(times[key], times[f"{fw} plain"])  # capture time / plain time, per round
            cost[fw] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "ratios": ratios}
    say(f"capture batch {shape[0]}: " + ", ".join(f"{fw} {c['median']:.2f}x plain" for fw, c in cost.items()))
    left_out = {e.name: NO_CAPTURE[e.name] for e in entries if e.name in NO_CAPTURE}
    return {"batch": shape[0], "rows": stats, "cost_vs_plain": cost, "left_out": left_out}


def _say_rows(say: Say, title: str, stats: dict, reference: str) -> None:
    parts = [f"{name} {row['rate_median']:.1f} img/s ({row['ratio_median']:.2f}x)" if "ratio_median" in row
             else f"{name} {row['rate_median']:.1f} img/s" for name, row in stats.items()]
    say(f"{title} (x {reference}): " + ", ".join(parts))
