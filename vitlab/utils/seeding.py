"""Derived seeds: one integer per (run seed, epoch), and per (epoch seed, sample index)."""

from __future__ import annotations


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (run seed, epoch), stable across Python versions and platforms."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)
