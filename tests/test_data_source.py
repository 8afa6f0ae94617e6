"""Rows read on demand from the stored benchmark equal the decode-once store's, cached or not."""

import numpy as np
import pytest

from feddat_jax.data import pipeline, source, tfds_store
from feddat_jax.data.client_store import KEYS, ClientDataStore
from feddat_jax.data.embedded import make_benchmark
from feddat_jax.data.tokenize import WordVocabEncoder

HW, L = (24, 40), 12  # not the stored 32x32: images are resized and padded on the fly


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    bench = make_benchmark("task", train_per_client=7, test_per_client=3, seed=2)
    out = tfds_store.write_benchmark(bench, tmp_path_factory.mktemp("store") / "task")
    encoder = WordVocabEncoder.from_benchmark(bench)
    num_answers = max(len(c.answers) for c in bench.clients)
    eager = ClientDataStore.build(bench.clients, "train", encoder, HW, L, num_answers)
    return out, encoder, num_answers, eager


def lazy_store(stored, **kwargs):
    out, encoder, num_answers, _ = stored
    bench = source.open_benchmark(out)
    return source.RecordStore(
        bench.clients, "train", encoder, HW, L, num_answers, threads=2, **kwargs
    )


def test_open_reads_only_the_manifest(stored):
    bench = source.open_benchmark(stored[0])
    splits = bench.clients[0].train.splits
    assert splits._features is None and not splits._open  # nothing opened yet
    eager = tfds_store.read_benchmark(stored[0])  # every record read
    assert [len(c.train) for c in bench.clients] == [len(c.train) for c in eager.clients]
    assert bench.clients[1].train[2] == eager.clients[1].train[2]
    assert len(splits._open) == 1


@pytest.mark.parametrize("cache_bytes", [0, 1 << 30, 20_000])
def test_on_demand_rows_equal_decode_once_rows(stored, cache_bytes):
    eager = stored[3]
    lazy = lazy_store(stored, cache_bytes=cache_bytes)
    np.testing.assert_array_equal(lazy.offsets, eager.offsets)
    rows = np.random.default_rng(0).integers(0, eager.offsets[-1], (3, 4, 2))  # repeats included
    for _ in range(2):  # the second read hits the cache (when there is one)
        got, want = lazy.read(rows), eager.read(rows)
        for key in KEYS:
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert lazy.cached_bytes <= cache_bytes
    got_tags, want_tags = lazy.row_tags(rows[0, 0]), eager.row_tags(rows[0, 0])
    assert got_tags.keys() == want_tags.keys() == {"question_type", "group"}
    for name in want_tags:
        assert want_tags[name].tolist() == got_tags[name].tolist(), name
    a = pipeline.cohort_batches(lazy, [2, 0], 2, seed=4, round_index=1, window=(1, 3))
    b = pipeline.cohort_batches(eager, [2, 0], 2, seed=4, round_index=1, window=(1, 3))
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_cache_spares_the_second_read(stored, monkeypatch):
    lazy = lazy_store(stored, cache_bytes=1 << 30)
    reads = []
    original = source.StoredSplits.read

    def counting(self, client, part, indices):
        reads.append(len(indices))
        return original(self, client, part, indices)

    monkeypatch.setattr(source.StoredSplits, "read", counting)
    rows = np.arange(10)
    lazy.read(rows)
    first = sum(reads)
    lazy.read(rows[::-1])
    assert first == 10 and sum(reads) == first  # all ten decoded once, then served from the cache


def test_corrupt_split_is_refused_by_name_when_first_read(stored, tmp_path):
    import shutil

    out = shutil.copytree(stored[0], tmp_path / "copy")
    manifest = tfds_store.load_manifest(out)
    victim = out / tfds_store.record_filename(
        manifest["name"], manifest["clients"][1]["name"], "train"
    )
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    bench = source.open_benchmark(out)  # opening does not read the files
    assert len(bench.clients[0].train[:2]) == 2
    with pytest.raises(tfds_store.StoreError, match=victim.name):
        bench.clients[1].train[0]
