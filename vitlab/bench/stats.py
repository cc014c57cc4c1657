"""Interleaved timing and its statistics: medians, min-max, and ratios taken within each round.

Round r times every variant once, back to back, so a burst of load from another process slows
the variants of that round alike; a ratio is therefore computed inside each round (reference
time / variant time: above 1 the variant is faster) and only then summarised by its median.
A ratio of medians would mix rounds run under different load.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping

Variant = Callable[[], float]  # runs once and returns the seconds its timed part took


def interleave(variants: Mapping[str, Variant], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each variant in each of ``rounds`` rounds, after ``warmup`` untimed rounds.

    Returns:
        name -> list of ``rounds`` times (index r = round r), in the order of ``variants``.
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(run())
    return times


def per_round_ratios(reference: list[float], variant: list[float]) -> list[float]:
    """``reference[r] / variant[r]`` for each round r (speed of the variant relative to the reference)."""
    if len(reference) != len(variant):
        raise ValueError(f"rounds differ: {len(reference)} reference times, {len(variant)} variant times")
    return [ref / t for ref, t in zip(reference, variant)]


def summarize(times: Mapping[str, list[float]], items: float, reference: str | None) -> dict[str, dict]:
    """Per variant: median / min / max seconds, items per second, and the per-round ratio to ``reference``.

    Args:
        times: name -> seconds per round (as :func:`interleave` returns).
        items: work done by one call (images); rates are ``items / seconds``.
        reference: the variant the ratios are relative to, or None for no ratios.

    Returns:
        name -> {"median_s", "min_s", "max_s", "times_s", "rate_median", "rate_min", "rate_max", "rounds",
        "ratio_median", "ratio_min", "ratio_max", "ratios"} (the ratio keys only with a reference).
    """
    out: dict[str, dict] = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        row: dict = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "rounds": len(ts), "times_s": list(ts),
                     "rate_median": items / med, "rate_min": items / max(ts), "rate_max": items / min(ts)}
        if reference is not None and reference in times:
            ratios = per_round_ratios(times[reference], ts)
            row.update(ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                       ratios=ratios)
        out[name] = row
    return out
