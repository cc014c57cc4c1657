"""The validation carve-out: disjoint from train, stratified, seeded by split_seed alone."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitlab.data.splits import stratified_split
from vitlab.errors import DataError


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=200), st.floats(0.05, 0.5), st.integers(0, 10))
def test_partition_is_disjoint_complete_and_stratified(labels: list[int], fraction: float, seed: int) -> None:
    train, val = stratified_split(labels, fraction, seed)
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    counts, in_val = Counter(labels), Counter(labels[i] for i in val)
    for c, n in counts.items():
        assert in_val[c] <= max(n - 1, 0)  # every class keeps at least one training sample
        if n >= 2:
            assert abs(in_val[c] - fraction * n) <= 1.0 or in_val[c] == 1


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = [i % 10 for i in range(1000)]
    assert stratified_split(labels, 0.1, 0) == stratified_split(labels, 0.1, 0)
    assert stratified_split(labels, 0.1, 0)[1] != stratified_split(labels, 0.1, 1)[1]
    assert len(stratified_split(labels, 0.1, 0)[1]) == 100


def test_bad_fraction_names_the_field() -> None:
    with pytest.raises(DataError, match="data.val_fraction"):
        stratified_split([0, 1], 1.0, 0)
