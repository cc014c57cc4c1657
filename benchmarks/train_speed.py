"""Training speed and memory: vitlab's engine step against timm's train.py step, interleaved in one process.

    .venv/bin/python benchmarks/train_speed.py --models s16,cifar --rounds 5 --out runs/train_speed.json
    .venv/bin/python benchmarks/train_speed.py --models none --loader ../shared/data/cifar10_jpg

Per model, vitlab's weights go into timm's ``VisionTransformer`` through vitlab's timm converter
(:mod:`vitlab.weights.convert_timm`) and both must give the same logits before anything is timed.
Then the two train from that same init on the same seeded random batches (images in [-1, 1],
random labels; a new batch each step), one step each per round, the order alternating between
rounds. The first round is warm-up (untimed, but on the loss curve); ratios are taken inside each
round (timm's seconds / vitlab's: above 1 vitlab is faster) and summarised by their median.

* vitlab's step is the engine's own: :func:`vitlab.engine.loop.train_one_epoch` over one batch
  with :class:`~vitlab.tasks.classification.ClassificationTask` (label-smoothed cross-entropy),
  :func:`~vitlab.engine.optim.build_optimizer` (AdamW, fused kernel), gradient clipping and the
  per-step record.
* timm's step is what timm's ``train.py`` does: ``create_optimizer_v2('adamw')`` (timm's default
  kernel choice), ``LabelSmoothingCrossEntropy``, backward, ``dispatch_clip_grad``, step.

Both: lr 1e-3, weight decay 0.05 (biases, norms, tokens and position embeddings exempt in both),
smoothing 0.1, clipping at norm 1 (the CIFAR recipe's optimiser), constant lr. The loss curves of
both over the same steps are printed side by side. Peak memory: one more step each, outside the
timed rounds (:mod:`vitlab.bench.memory` says how it is measured).

Memory policy (``--memory``): ``vitlab train`` keeps freed CPU memory in the process for the next
step (:mod:`vitlab.utils.cpu_memory`: no page faults on each step's fresh activations); timm's
``train.py`` leaves glibc's default. In one process both steps share one policy (``default``
unless ``--memory kept``). ``--processes`` runs each library in its own process, started the same
way and driven round by round from here (one step at a time, the order alternating), so that each
runs under its own tool's policy (``--memory as-run``, the default there): the comparison of what a
user of either tool gets. ``--processes --memory default`` (or ``kept``) is the control: the same
policy in both processes.

``cifar`` is the transformer of ``vitlab/recipes/cifar10.yaml`` (width 96, 4 blocks, 3 heads, MLP
192, average pooling, no class token) on the ViT paper's patch-4 stem at batch 128: the recipe's
convolutional stem has no timm equivalent. ``--loader`` measures the recipe's own training loader
(the trainer's datasets with ``data.cache``, the engine's sampler and collate, 2 workers) against
vitlab's training images/s of the recipe's model itself (conv stem) at the same batch.

The load average is printed with every figure: on a shared machine the ratios are what matter.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.api import create_model
from vitlab.bench.memory import method as memory_method
from vitlab.bench.memory import step_peak_mib
from vitlab.bench.stats import per_round_ratios
from vitlab.engine.loop import EpochTotals, StepOptions, train_one_epoch
from vitlab.engine.nonfinite import NonFiniteGuard
from vitlab.engine.optim import build_optimizer
from vitlab.tasks.classification import ClassificationTask
from vitlab.utils.cpu_memory import kept_cpu_memory
from vitlab.weights.convert_timm import build_timm, export_state

LR, WD, SMOOTH, CLIP = 1e-3, 0.05, 0.1, 1.0
CIFAR_ARGS = dict(embed_dim=96, depth=4, num_heads=3, mlp_dim=192, class_token=False, global_pool="avg", num_classes=10)
MODELS: dict[str, tuple[str, dict[str, Any], int]] = {  # name -> (vitlab model, its arguments, batch)
    "s16": ("vit_small_patch16_224", {}, 32),
    "cifar": ("vit_pico_patch4_32", CIFAR_ARGS, 128),
}
Batch = tuple[torch.Tensor, torch.Tensor]
Step = Callable[[Batch], float]
CPU = torch.device("cpu")
AS_RUN = {"vitlab": "kept", "timm": "default"}  # each tool's own policy: vitlab train's, timm train.py's


def load() -> str:
    """The 1 / 5 / 15-minute load averages, as ``uptime`` prints them."""
    return "load average " + ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def build_pair(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, nn.Module, float]:
    """vitlab's model (seed 0) and timm's holding its weights; the max |logit diff| on a random batch."""
    torch.manual_seed(0)
    ours = create_model(name, **kwargs)
    nn.init.normal_(ours.head.weight, std=0.02)  # a zero head would make every logit 0 and the check empty
    peer = build_timm(ours.config)
    peer.load_state_dict(export_state(ours))
    x = torch.rand(4, 3, *ours.config.img_size) * 2 - 1
    with torch.no_grad():
        diff = (ours.eval()(x) - peer.eval()(x)).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"timm's model differs from vitlab's by {diff:.3g} on the same weights; not timing")
    return ours, peer, diff


def vitlab_step(model: nn.Module, num_classes: int, compile: bool = False, precision: str = "fp32") -> Step:
    """One optimizer step through the engine (train_one_epoch over a one-batch loader); returns its loss.

    ``compile``: the step runs through ``torch.compile(model)``, as ``compile: true`` has the engine do
    (the optimizer holds the same parameters; compilation happens in the untimed warm-up round).
    ``precision``: the engine's own (``bf16``: its CPU autocast, as ``vitlab train --precision bf16``).
    """
    run = torch.compile(model) if compile else model
    task = ClassificationTask(None, None, [str(i) for i in range(num_classes)], label_smoothing=SMOOTH)  # type: ignore[arg-type]
    opt = build_optimizer(model, "adamw", LR, WD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    opts, guard = StepOptions(precision=precision, clip_grad=CLIP, log_every=1), NonFiniteGuard("stop")

    def step(batch: Batch) -> float:
        records: list[dict[str, Any]] = []
        train_one_epoch(task, run, [batch], opt, sched, torch.device("cpu"), 0, 0, opts, 1, EpochTotals(), guard,
                        log=records.append, progress=False)
        return float(records[-1]["loss"])

    return step


def timm_step(model: nn.Module, precision: str = "fp32") -> tuple[Step, str]:
    """timm train.py's step with timm's defaults; and a line naming its AdamW kernel.

    ``precision="bf16"``: the forward and loss under CPU bf16 autocast, as train.py's ``--amp
    --amp-dtype bfloat16`` does (no grad scaler for bf16).
    """
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import dispatch_clip_grad

    opt = create_optimizer_v2(model, "adamw", lr=LR, weight_decay=WD)
    loss_fn = LabelSmoothingCrossEntropy(SMOOTH)

    def step(batch: Batch) -> float:
        model.train()
        x, y = batch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        dispatch_clip_grad(model.parameters(), CLIP, mode="norm")
        opt.step()
        return float(loss.item())

    kernel = "fused" if opt.defaults.get("fused") else "foreach" if opt.defaults.get("foreach") else "torch default"
    return step, f"{type(opt).__name__} ({kernel}: a per-tensor loop on the CPU)"


def batches(shape: tuple[int, int, int, int], num_classes: int, n: int) -> list[Batch]:
    """``n`` seeded random batches: images uniform in [-1, 1], random labels."""
    g = torch.Generator().manual_seed(1234)
    return [(torch.rand(shape, generator=g) * 2 - 1, torch.randint(0, num_classes, (shape[0],), generator=g))
            for _ in range(n)]


def timed(step: Step, batch: Batch) -> tuple[float, float]:
    """(seconds, loss) of one step."""
    start = time.perf_counter()
    loss = step(batch)
    return time.perf_counter() - start, loss


def race(steps: dict[str, Callable[[Any], tuple[float, float]]], data: Sequence[Any]
         ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds (rounds after the first) and losses (every round) per step, one step each per round, order alternating.

    ``steps[name](item)`` runs one step on ``data[round]`` and returns (seconds, loss).
    """
    times: dict[str, list[float]] = {k: [] for k in steps}
    losses: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r, item in enumerate(data):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds, loss = steps[name](item)
            losses[name].append(loss)
            if r > 0:  # round 0 is warm-up
                times[name].append(seconds)
    return times, losses


def _policy(memory: str) -> Any:
    """The context a step runs in under memory policy ``memory`` (kept: as vitlab's engine sets it on the CPU)."""
    return kept_cpu_memory(CPU) if memory == "kept" else nullcontext()


def _steps(key: str, framework: str, compile: bool, precision: str) -> tuple[Step, str, float, tuple[int, ...], int]:
    """One library's step for model ``key``; timm's optimizer line, the logit check, the batch shape, the classes."""
    name, kwargs, batch = MODELS[key]
    ours, peer, diff = build_pair(name, kwargs)
    classes = ours.config.num_classes
    t_step, t_opt = timm_step(peer, precision)
    step = vitlab_step(ours, classes, compile, precision) if framework == "vitlab" else t_step
    return step, t_opt, diff, (batch, 3, *ours.config.img_size), classes


def worker(conn: Any, key: str, framework: str, compile: bool, precision: str, memory: str, rounds: int) -> None:
    """One library's step in a process of its own, driven over ``conn``: ("step", round) -> (seconds, loss), ("peak",) -> MiB."""
    step, t_opt, diff, shape, classes = _steps(key, framework, compile, precision)
    data, extra = batches(shape, classes, rounds + 1), batches(shape, classes, 1)[0]
    conn.send((t_opt, diff))
    with _policy(memory):
        for msg in iter(conn.recv, ("stop",)):
            conn.send(timed(step, data[msg[1]]) if msg[0] == "step" else step_peak_mib(step, lambda: extra, CPU))


def measure_separate(key: str, rounds: int, compile: bool, precision: str, memory: dict[str, str]
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float | None], str, float]:
    """:func:`race` with each library in its own process under ``memory[library]``; times, losses, peaks, timm's optimizer, logit diff."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each, as a user's run starts
    conns, procs = {}, []
    for fw in ("vitlab", "timm"):
        here, there = ctx.Pipe()
        procs.append(ctx.Process(target=worker, args=(there, key, fw, compile, precision, memory[fw], rounds)))
        procs[-1].start()
        conns[fw] = here
    t_opt, diff = [c.recv() for c in conns.values()][-1]
    try:
        def remote(fw: str) -> Callable[[int], tuple[float, float]]:
            return lambda r: (conns[fw].send(("step", r)), conns[fw].recv())[1]

        times, losses = race({fw: remote(fw) for fw in conns}, range(rounds + 1))
        peaks = {}
        for fw, c in conns.items():
            c.send(("peak",))
            peaks[fw] = c.recv()
    finally:
        for c in conns.values():
            c.send(("stop",))
        for p in procs:
            p.join()
    return times, losses, peaks, t_opt, diff


def measure_model(key: str, rounds: int, compile: bool = False, precision: str = "fp32", memory: str = "default",
                  processes: bool = False) -> dict[str, Any]:
    """Images/s, per-round ratio, peak memory and both loss curves for one model of :data:`MODELS`.

    ``memory``: the CPU memory policy, ``default`` or ``kept`` for both steps, or ``as-run`` (each
    tool's own, :data:`AS_RUN`; only with ``processes``, each library in its own process).
    """
    name, kwargs, batch = MODELS[key]
    policy = AS_RUN if memory == "as-run" else {"vitlab": memory, "timm": memory}
    before = load()
    if processes:
        times, losses, peaks, t_opt, diff = measure_separate(key, rounds, compile, precision, policy)
    else:
        if memory == "as-run":
            raise SystemExit("--memory as-run needs --processes: one process has one memory policy")
        step, t_opt, diff, shape, classes = _steps(key, "vitlab", compile, precision)
        t_step = _steps(key, "timm", compile, precision)[0]
        steps = {"vitlab": step, "timm": t_step}
        with _policy(memory):
            times, losses = race({k: (lambda b, s=s: timed(s, b)) for k, s in steps.items()},
                                 batches(shape, classes, rounds + 1))
            extra = batches(shape, classes, 1)[0]
            peaks = {k: step_peak_mib(s, lambda: extra, CPU) for k, s in steps.items()}
    ratios = per_round_ratios(times["timm"], times["vitlab"])
    curve_diff = max(abs(a - b) for a, b in zip(losses["vitlab"], losses["timm"]))
    return {"model": name, "args": kwargs, "batch": batch, "rounds": rounds, "logit_diff": diff, "compile": compile,
            "precision": precision, "processes": processes, "memory_policy": policy,
            "timm_optimizer": t_opt, "load_before": before, "load_after": load(),
            "images_per_s": {k: batch / statistics.median(v) for k, v in times.items()},
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratios": ratios, "peak_mib": peaks, "memory_method": memory_method(CPU),
            "losses": losses, "max_loss_diff": curve_diff}


def print_model(r: dict[str, Any]) -> None:
    """The model's figures, in lines."""
    ips, mem = r["images_per_s"], r["peak_mib"]
    compiled = " (vitlab compiled)" if r["compile"] else ""
    print(f"\n{r['model']} {r['args'] or ''} batch {r['batch']}{compiled}, {r['precision']}, {r['rounds']} rounds after 1 warm-up "
          f"(logits vs timm on the same weights: max diff {r['logit_diff']:.1e})")
    print(f"  {r['load_before']} before, {r['load_after']} after (a shared machine)")
    where = "each in its own process" if r["processes"] else "both in this process"
    print(f"  {where}; CPU memory policy: vitlab {r['memory_policy']['vitlab']}, timm {r['memory_policy']['timm']}")
    print(f"  images/s: vitlab {ips['vitlab']:.1f}, timm {ips['timm']:.1f}; vitlab/timm per-round median "
          f"{r['ratio_median']:.3f}x (min {r['ratio_min']:.3f}, max {r['ratio_max']:.3f})")
    print(f"  timm's optimizer: {r['timm_optimizer']}")
    print(f"  peak MiB of one step: vitlab {mem['vitlab']:.0f}, timm {mem['timm']:.0f} ({r['memory_method']})")
    print(f"  loss curve, step: vitlab / timm (max |diff| {r['max_loss_diff']:.2e})")
    for i, (a, b) in enumerate(zip(r["losses"]["vitlab"], r["losses"]["timm"])):
        print(f"    {i}: {a:.6f} / {b:.6f}")


def recipe_loader(folder: str, workers: int, batch: int) -> tuple[Any, nn.Module]:
    """The CIFAR recipe's training loader as the engine builds it (trainer datasets, cache, sampler, collate)."""
    from torch.utils.data import DataLoader

    from vitlab.config import resolve_auto_augment, resolve_config
    from vitlab.engine.sampler import ResumableSampler
    from vitlab.trainer import _prepare  # the trainer's own data opening: cache, carve-out, seeded transform

    recipe = Path(__file__).resolve().parents[1] / "vitlab" / "recipes" / "cifar10.yaml"
    cfg = resolve_config(recipe, [{"data": {"train": folder, "workers": workers, "batch_size": batch},
                                   "precision": "fp32", "device": "cpu"}])
    cfg, _ = resolve_auto_augment(cfg, photos=True)  # as the trainer does for a folder of photos
    prep = _prepare(cfg, echo=lambda line: None)
    task = ClassificationTask(prep.train_ds, prep.val_ds, prep.classes)
    sampler = ResumableSampler(len(prep.train_ds), batch, cfg.seed, 0, 0, 0, 1, drop_last=True)
    loader = DataLoader(prep.train_ds, batch_size=batch, sampler=sampler, num_workers=workers,
                        collate_fn=task.collate, generator=torch.Generator().manual_seed(0))
    return loader, prep.model


def measure_loader(folder: str, batch: int = 128, batches_n: int = 60, workers: int = 2) -> dict[str, Any]:
    """Loader images/s (after its first batch) against vitlab's training images/s of the recipe's model."""
    loader, model = recipe_loader(folder, workers, batch)
    before = load()
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches_n):
        next(it)
    loader_rate = batch * batches_n / (time.perf_counter() - start)
    del it
    step = vitlab_step(model, 10)
    data = batches((batch, 3, 32, 32), 10, 6)
    with _policy("kept"):  # as vitlab train runs its steps on the CPU
        step(data[0])
        train_rate = batch / statistics.median(timed(step, b)[0] for b in data[1:])
    return {"folder": folder, "workers": workers, "batch": batch, "loader_images_per_s": loader_rate,
            "train_images_per_s": train_rate, "ratio": loader_rate / train_rate, "load_before": before,
            "load_after": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="s16,cifar", help=f"comma-separated of {', '.join(MODELS)}, or none")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--loader", default=None, help="CIFAR-10 JPEG folder: measure the recipe's loader")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--compile", action="store_true", help="vitlab's step through torch.compile (compile: true)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="both steps in this precision (bf16: CPU autocast in both)")
    parser.add_argument("--processes", action="store_true",
                        help="each library in its own process, driven round by round from this one")
    parser.add_argument("--memory", choices=("default", "kept", "as-run"), default=None,
                        help="CPU memory policy: the same for both, or as-run (each tool's own; needs --processes); "
                             "default: as-run with --processes, else default")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {args.precision}")
    out: dict[str, Any] = {"models": [], "loader": None}
    for key in [k for k in args.models.split(",") if k and k != "none"]:
        if key not in MODELS:
            raise SystemExit(f"--models: {key!r} is not one of {', '.join(MODELS)}")
        memory = args.memory or ("as-run" if args.processes else "default")
        out["models"].append(measure_model(key, args.rounds, args.compile, args.precision, memory, args.processes))
        print_model(out["models"][-1])
    if args.loader:
        r = out["loader"] = measure_loader(args.loader)
        print(f"\nCIFAR recipe loader, {r['workers']} workers, batch {r['batch']}: {r['loader_images_per_s']:.0f} img/s; "
              f"training (the recipe's model, vitlab): {r['train_images_per_s']:.0f} img/s; loader / training "
              f"{r['ratio']:.1f}x\n  {r['load_before']} before, {r['load_after']} after")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
