"""The embedded benchmark drawn on demand: today's clients byte for byte, any number of clients,
nothing drawn at start-up, a cache bounded in bytes."""

import hashlib
import time

import pytest

from feddat_jax.data import embedded, embedded_clients
from feddat_jax.data.embedded_families import FAMILIES, family_clients

# The embedded configs' data (configs/embedded.py: what benchmarks/results_accuracy.json used).
DEFAULTS = dict(image_size=48, train_per_client=200, test_per_client=1000, seed=0, patch_size=8)
# sha256[:16] of (name, task kind, vocabulary, split sizes) and the first three and last two
# examples of each split of clients 0 and 1 of every family, and of examples 0, 1 and 57 of each
# split of client 11: computed with generator version 7 before the benchmark was drawn on demand
# (embedded.make_benchmark, commit 6dc8192).
DIGESTS = {
    ("domain", "clean_00"): "d0adc24582ebc290",
    ("domain", "sketch_01"): "947d2d29830f9a22",
    ("domain", "sketch_11"): "29f9ad549a11fa93",
    ("function", "attribute_00"): "4f49318034d3c964",
    ("function", "knowledge_01"): "d43c66bcda9302e2",
    ("function", "knowledge_11"): "c5263019235e9f91",
    ("scene", "shop_00"): "3c7d89c1745d41fa",
    ("scene", "workplace_01"): "c2c3f1235e0acc9f",
    ("scene", "outdoors_11"): "4b9dac0762676272",
    ("task", "vqa_00"): "d7319cfa5a2944a8",
    ("task", "true_false_01"): "48f6dd5f7f285a28",
    ("task", "multiple_choice_11"): "65b40b54e1d0f8c4",
}
SMALL = dict(image_size=32, train_per_client=12, test_per_client=40, seed=3)


def _add(h, ex) -> None:
    h.update(repr((ex.question, ex.answers, ex.example_id, ex.question_type, ex.group)).encode())
    h.update(ex.image)


@pytest.mark.parametrize("family", FAMILIES)
def test_todays_clients_are_byte_identical(family):
    bench = embedded_clients.open_embedded(family, 12, **DEFAULTS)
    for c in bench.clients[:2]:
        meta = (c.name, c.task_kind, list(c.answers), len(c.train), len(c.test))
        h = hashlib.sha256(repr(meta).encode())
        for part in ("train", "test"):
            split = getattr(c, part)
            for ex in split[:3] + split[-2:]:
                _add(h, ex)
        assert h.hexdigest()[:16] == DIGESTS[(family, c.name)], c.name
    last, h = bench.clients[11], hashlib.sha256()
    for part in ("train", "test"):
        for i in (0, 1, 57):
            _add(h, getattr(last, part)[i])
    assert h.hexdigest()[:16] == DIGESTS[(family, last.name)]


def test_on_demand_clients_equal_the_eager_benchmark():
    for family in FAMILIES:
        eager = embedded.make_benchmark(family, num_clients=6, **SMALL)
        lazy = embedded_clients.open_embedded(family, 6, **SMALL)
        assert lazy.name == eager.name and lazy.seed == eager.seed
        for a, b in zip(eager.clients, lazy.clients, strict=True):
            assert (a.name, a.task_kind) == (b.name, b.task_kind)
            assert list(a.answers) == list(b.answers) and len(a.answers) == len(b.answers)
            assert list(a.train) == list(b.train) and list(a.test) == list(b.test)


def test_ten_thousand_clients_start_without_drawing(monkeypatch):
    monkeypatch.setattr(embedded, "_example", lambda *a, **k: pytest.fail("drawn at start-up"))
    start = time.perf_counter()
    bench = embedded_clients.open_embedded("task", 10_000, train_per_client=8, test_per_client=8)
    lengths = [(len(c.train), len(c.test), len(c.answers)) for c in bench.clients]
    assert time.perf_counter() - start < 10  # about 0.6 s on 2 shared CPU cores
    assert len(lengths) == 10_000 and min(n for n, _, _ in lengths) >= 1
    assert [c.name for c in bench.clients[-2:]] == ["entailment_9998", "multiple_choice_9999"]
    monkeypatch.undo()
    cd = family_clients("task", 10_000)[9_999]
    want, _ = embedded._example(cd, "task", 9_999, "test", 5, 0, 48, 0.05)
    assert bench.clients[9_999].test[5] == want  # a pure function of (seed, family, client, ...)


def test_the_cache_is_bounded_in_bytes():
    bench = embedded_clients.open_embedded(
        "scene", 3, train_per_client=20, test_per_client=5, cache_bytes=20_000
    )
    cache = bench.clients[0].train.spec.cache
    first = [list(c.train) for c in bench.clients]  # ~60 examples of ~2-4 KB: several evicted
    assert 0 < cache.bytes <= 20_000 and len(cache._items) < 60
    assert [list(c.train) for c in bench.clients] == first  # redrawn identically


def test_top_k_must_cover_the_label_space():
    with pytest.raises(ValueError, match="top_k=3 is smaller"):
        embedded_clients.open_embedded("domain", 2, top_k=3)
