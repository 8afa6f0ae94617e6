"""``--config.data.partition``: natural is today's data, iid / quantity / dirichlet deal the pooled
examples over ``data.num_clients`` clients, on the embedded benchmark and on a built one."""

import numpy as np
import pytest

from feddat_jax.cli import main as cli
from feddat_jax.cli.validate import validate_config
from feddat_jax.data import embedded, loading, partition, partitioned, tfds_store
from feddat_jax.data.client_store import KEYS, ClientDataStore
from feddat_jax.data.source import RecordStore
from feddat_jax.data.tokenize import WordVocabEncoder
from feddat_jax.errors import ConfigError
from feddat_jax.train.config_base import base_config

SIZES = dict(image_size=32, train_per_client=10, test_per_client=30, seed=0)


def data_config(partition_="natural", num_clients=4, alpha=0.5, family="domain", **kw):
    c = base_config()
    c.data.source, c.data.family = "embedded", family
    c.data.image_size, c.data.train_per_client, c.data.test_per_client = 32, 10, 30
    c.data.num_clients, c.data.partition, c.data.dirichlet_alpha = num_clients, partition_, alpha
    for key, value in kw.items():
        setattr(c.data, key, value)
    return c


def ids(split) -> list[str]:
    return [ex.example_id for ex in split]


def test_natural_is_todays_data_row_for_row():
    """What the model reads (tokens, pixels, targets) equals the old decode-once store's."""
    bench = loading.load_benchmark(data_config().data, 8)
    eager = embedded.make_benchmark("domain", num_clients=4, **SIZES)
    encoder = WordVocabEncoder.from_benchmark(eager)
    A = max(len(c.answers) for c in eager.clients)
    for part in ("train", "test"):
        old = ClientDataStore.build(eager.clients, part, encoder, (32, 32), 12, A)
        new = RecordStore(bench.clients, part, encoder, (32, 32), 12, A, threads=1)
        np.testing.assert_array_equal(new.offsets, old.offsets)
        rows = np.arange(old.offsets[-1])
        got, want = new.read(rows), old.read(rows)
        for key in KEYS:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{part} {key}")


@pytest.mark.parametrize("scheme", ["iid", "quantity", "dirichlet"])
def test_every_pooled_example_goes_to_one_client(scheme):
    natural = loading.load_benchmark(data_config(num_clients=6).data, 8)
    dealt = loading.load_benchmark(data_config(scheme, num_clients=6).data, 8)
    assert len(dealt.clients) == 6 and dealt.manifest["partition"]["scheme"] == scheme
    for part in ("train", "test"):
        pool = sorted(i for c in natural.clients for i in ids(getattr(c, part)))
        got = [i for c in dealt.clients for i in ids(getattr(c, part))]
        assert sorted(got) == pool  # each exactly once
        assert all(len(getattr(c, part)) >= 1 for c in dealt.clients)
    if scheme == "iid":
        sizes = [len(c.train) for c in dealt.clients]
        assert max(sizes) - min(sizes) <= 1
    space = sorted({a for c in natural.clients for a in c.answers})
    assert all(list(c.answers) == space for c in dealt.clients)  # the pool's answer space
    again = loading.load_benchmark(data_config(scheme, num_clients=6).data, 8)
    assert [ids(c.train) for c in again.clients] == [ids(c.train) for c in dealt.clients]
    other = loading.load_benchmark(data_config(scheme, num_clients=6, seed=1).data, 8)
    assert [ids(c.train) for c in other.clients] != [ids(c.train) for c in dealt.clients]


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skews = []
    for alpha in (100.0, 1.0, 0.1):
        bench = loading.load_benchmark(data_config("dirichlet", 8, alpha, "function").data, 8)
        types = [partitioned.cheap_labels(c.train) for c in bench.clients]
        parts = np.split(np.arange(sum(map(len, types))), np.cumsum([len(t) for t in types])[:-1])
        skews.append(partition.label_skew(np.concatenate(types), parts))
    assert skews[0] < skews[1] < skews[2], skews
    lines = partitioned.split_summary(bench)
    assert lines[0] == "data: embedded_function_dirichlet, 8 clients, partition dirichlet"
    assert f"{skews[2]:.3f}" in lines[-1]


def test_a_built_benchmark_is_partitioned_too(tmp_path):
    bench = embedded.make_benchmark("scene", num_clients=3, **SIZES)
    out = tfds_store.write_benchmark(bench, tmp_path / "scene")
    c = data_config("dirichlet", num_clients=5, alpha=1.0)
    c.data.source, c.data.tfds_dir = "tfds", str(out)
    natural = loading.load_benchmark(data_config(num_clients=0, source="tfds", tfds_dir=str(out)).data, 8)
    assert [x.name for x in natural.clients] == [x.name for x in bench.clients]
    dealt = loading.load_benchmark(c.data, 8)
    assert len(dealt.clients) == 5
    for part in ("train", "test"):
        pool = {ex.example_id: ex for x in bench.clients for ex in getattr(x, part)}
        got = [ex for x in dealt.clients for ex in getattr(x, part)]
        assert sorted(ex.example_id for ex in got) == sorted(pool)
        assert all(ex == pool[ex.example_id] for ex in got)  # the stored records themselves


def test_mixed_task_kinds_cannot_be_pooled():
    with pytest.raises(ConfigError, match="different task kinds") as err:
        loading.load_benchmark(data_config("iid", family="task").data, 8)
    assert "\n" not in str(err.value)


def test_an_empty_client_is_one_line(tmp_path):
    bench = embedded.make_benchmark("scene", num_clients=2, **SIZES)  # 2 x ~10 train examples
    c = data_config("quantity", num_clients=50, source="tfds")
    c.data.tfds_dir = str(tfds_store.write_benchmark(bench, tmp_path / "scene"))
    with pytest.raises(ConfigError) as err:
        loading.load_benchmark(c.data, 8)
    message = str(err.value)
    assert "\n" not in message and "cannot fill num_clients=50" in message
    assert "data.num_clients=50, data.dirichlet_alpha=0.5); raise" in message


def test_dirichlet_gives_an_emptied_client_one_example():
    train, test = partition.deal("dirichlet", np.arange(40) % 4, np.arange(40) % 4, 10, 0.01, 0)
    for parts in (train, test):
        assert min(p.size for p in parts) >= 1
        assert sorted(np.concatenate(parts).tolist()) == list(range(40))


def test_a_bad_partition_value_is_one_line():
    c = data_config("zipf")
    with pytest.raises(ConfigError, match=r"'zipf' is not a valid data.partition") as err:
        validate_config(c)
    assert "\n" not in str(err.value) and "dirichlet" in str(err.value)
    c = data_config("dirichlet", alpha=0.0)
    with pytest.raises(ConfigError, match="data.dirichlet_alpha"):
        validate_config(c)


def test_help_shows_the_partition_flag():
    text = cli.help_text()
    assert "--config.data.partition=natural|iid|quantity|dirichlet" in text
    assert "--config.data.dirichlet_alpha" in text
