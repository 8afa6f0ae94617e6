"""Partitioners: every example assigned once, skew follows alpha, empty clients refused."""

import numpy as np
import pytest

from feddat_jax.data import partition
from feddat_jax.data.embedded import make_benchmark

LABELS = np.repeat(np.arange(10), 60)  # 600 examples, 10 balanced labels


def assert_exact_cover(parts, n):
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def test_dirichlet_covers_every_example_once_and_follows_alpha():
    skews = {}
    for alpha in (0.1, 1.0, 100.0):
        parts = partition.dirichlet(LABELS, num_clients=5, alpha=alpha, seed=0)
        assert_exact_cover(parts, LABELS.size)
        skews[alpha] = partition.label_skew(LABELS, parts)
    assert skews[0.1] > skews[1.0] > skews[100.0]
    assert skews[0.1] > 0.5 and skews[100.0] < 0.1


def test_partitions_are_seeded():
    a = partition.dirichlet(LABELS, 5, 0.5, seed=1)
    b = partition.dirichlet(LABELS, 5, 0.5, seed=1)
    c = partition.dirichlet(LABELS, 5, 0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_and_quantity_skew_cover_once():
    iid = partition.iid(103, 4, seed=0)
    assert_exact_cover(iid, 103)
    assert max(map(len, iid)) - min(map(len, iid)) <= 1
    low = partition.quantity_skew(600, 6, alpha=0.3, seed=0)
    high = partition.quantity_skew(600, 6, alpha=100.0, seed=0)
    assert_exact_cover(low, 600)
    assert_exact_cover(high, 600)
    assert np.std(list(map(len, low))) > 3 * np.std(list(map(len, high)))
    assert partition.label_skew(LABELS, high) < 0.2  # labels stay iid


def test_natural_is_one_client_per_source():
    parts = partition.natural(["b", "a", "b", "c", "a"])
    assert {k: v.tolist() for k, v in parts.items()} == {"a": [1, 4], "b": [0, 2], "c": [3]}


def test_empty_client_is_refused_by_name():
    with pytest.raises(
        partition.EmptyClientError,
        match=r"client \d+ of 8 received no "
        r"examples.*raise alpha",
    ):
        partition.dirichlet(np.zeros(20, int), num_clients=8, alpha=0.01, seed=0)
    with pytest.raises(partition.EmptyClientError, match="num_clients=5"):
        partition.iid(3, 5, seed=0)


def test_repartition_and_summary():
    bench = make_benchmark(
        "function", num_clients=2, train_per_client=30, test_per_client=10, image_size=32
    )
    pooled = sum(len(c.train) + len(c.test) for c in bench.clients)
    skewed = partition.repartition(bench, "dirichlet", 3, alpha=1.0, seed=0)
    assert len(skewed.clients) == 3
    ids = [e.example_id for c in skewed.clients for e in c.train + c.test]
    assert len(ids) == len(set(ids)) and len(ids) <= pooled
    natural = partition.repartition(bench, "natural")
    assert [c.name for c in natural.clients] == ["attribute_00", "knowledge_01"]
    text, table = partition.summary_table(skewed)
    assert "client_0" in text and "total" in text
    assert table["total"]["train"] == sum(len(c.train) for c in skewed.clients)
    with pytest.raises(ValueError, match=r"'zipf'.*natural"):
        partition.repartition(bench, "zipf", 3)
    with pytest.raises(ValueError, match="task kinds"):
        mixed = make_benchmark(
            "task", num_clients=4, train_per_client=4, test_per_client=2, image_size=32
        )
        partition.repartition(mixed, "iid", 2)
