"""``runtime="auto"``: the fastest runtime installed that gives the reference's numbers here.

A short measured check, once per machine / model / batch / precision (then read from the cache):
every runtime that can run the precision is built, an fp32 one must match eager within its
tolerance on random images (a runtime that does not is left out, and said so), then all run the
same random batch in interleaved rounds and the lowest median time wins. The choice comes back
with one line saying which runtime, how much faster than eager, and whether it was measured now.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.runtime.base import RUNTIME_NAMES, Predictor
from vitlab.runtime.cache import entry_key, read_choice, write_choice
from vitlab.runtime.factory import build_predictor
from vitlab.runtime.source import input_shape


def _candidates(model: nn.Module, precision: str, batch: int, device: torch.device,
                probe: torch.Tensor) -> tuple[dict[str, Predictor], list[str]]:
    """Built predictors that pass the numerics gate, and one reason per runtime left out."""
    built, skipped = {}, []
    reference = build_predictor(model, "eager", "fp32", batch, device)(probe) if precision == "fp32" else None
    for name in RUNTIME_NAMES:
        try:
            pred = build_predictor(model, name, precision, batch, device)
        except ConfigError as err:
            skipped.append(f"{name}: {err}")
            continue
        out = pred(probe)
        if not bool(torch.isfinite(out).all()):
            skipped.append(f"{name}: non-finite logits")
        elif reference is not None and (diff := (out - reference).abs().max().item()) > (pred.tolerance or 0.0):
            skipped.append(f"{name}: logits {diff:.1e} from eager's (> {pred.tolerance:.0e})")
        else:
            built[name] = pred
    return built, skipped


def _median_seconds(preds: dict[str, Predictor], images: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds per call of each predictor on ``images``, rounds interleaved (after the warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in preds}
    for _ in range(rounds):
        for name, pred in preds.items():
            start = time.perf_counter()
            pred(images)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(model: nn.Module, precision: str, batch: int, device: torch.device,
            rounds: int = 3) -> tuple[Predictor, dict]:
    """Build and time every runtime that can run ``precision``; the fastest and its record."""
    images = torch.randn(batch, *input_shape(model), generator=torch.Generator().manual_seed(0)).to(device)
    preds, skipped = _candidates(model, precision, batch, device, images)
    if not preds:
        raise ConfigError(f"--runtime auto: no runtime here runs --precision {precision} ({'; '.join(skipped)})")
    seconds = _median_seconds(preds, images, rounds) if len(preds) > 1 else {}
    best = min(seconds, key=seconds.__getitem__) if seconds else next(iter(preds))
    speedup = seconds["eager"] / seconds[best] if "eager" in seconds else None
    record = {"runtime": best, "speedup": speedup, "skipped": skipped,
              "seconds": {n: round(s, 5) for n, s in seconds.items()},
              "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    return preds[best], record


def _note(record: dict, precision: str, batch: int, where: str) -> str:
    speed = (f"{record['speedup']:.2f}x eager" if record.get("speedup") else
             "the only runtime here that runs it")
    return f"runtime auto: {record['runtime']} {precision} ({speed} at batch {batch}, {where})"


def choose(model: nn.Module, precision: str, batch: int, device: torch.device,
           cache_dir: str | Path | None = None) -> tuple[Predictor, str]:
    """The chosen Predictor and the one line that says which and why (cached or measured now)."""
    key = entry_key(model, device, batch, precision)
    cached = read_choice(key, cache_dir)
    if cached and cached.get("runtime") in RUNTIME_NAMES:
        try:
            pred = build_predictor(model, cached["runtime"], precision, batch, device)
            return pred, _note(cached, precision, batch, f"measured {cached.get('measured', '?')}, cached")
        except ConfigError:
            pass  # the cached runtime no longer runs here (uninstalled): measure again
    pred, record = measure(model, precision, batch, device)
    path = write_choice(key, record, cache_dir)
    return pred, _note(record, precision, batch, f"measured now; cached in {path}")
