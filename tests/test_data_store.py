"""TFDS store: round trip without TensorFlow, checksums, refusal of corrupt/missing files."""

import importlib.util
import json
import sys

import pytest

from feddat_jax.data import tfds_store
from feddat_jax.data.embedded import make_benchmark
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark


@pytest.fixture(scope="module")
def bench():
    return make_benchmark(
        "task", num_clients=4, train_per_client=6, test_per_client=3, seed=1, image_size=32
    )


def test_round_trip_without_tensorflow(bench, tmp_path):
    """Written and read through TFDS's NumPy path: TensorFlow is neither installed nor imported."""
    tf_installed = importlib.util.find_spec("tensorflow") is not None
    out = tfds_store.write_benchmark(bench, tmp_path / "b")
    back = tfds_store.read_benchmark(out)
    assert back == bench  # questions, image bytes, soft scores, ids, vocabularies, manifest
    assert "tensorflow" not in sys.modules
    if not tf_installed:
        with pytest.raises(ImportError):
            import tensorflow  # noqa: F401
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 1
    assert [c["num_train"] for c in manifest["clients"]] == [len(c.train) for c in bench.clients]
    assert len(manifest["sha256"]) == 2 * len(bench.clients)


def test_readable_with_plain_tfds_data_source(bench, tmp_path):
    import tensorflow_datasets as tfds

    out = tfds_store.write_benchmark(bench, tmp_path / "b")
    source = tfds.builder_from_directory(out).as_data_source()
    first = source["vqa_00_train"][0]
    assert first["image"].shape == (32, 32, 3)  # decoded by TFDS's NumPy path
    assert first["question"].decode() == bench.clients[0].train[0].question


def test_same_seed_gives_identical_record_files(tmp_path):
    a = make_benchmark(
        "function", num_clients=2, train_per_client=4, test_per_client=2, image_size=32
    )
    b = make_benchmark(
        "function", num_clients=2, train_per_client=4, test_per_client=2, image_size=32
    )
    ma = json.loads((tfds_store.write_benchmark(a, tmp_path / "a") / "manifest.json").read_text())
    mb = json.loads((tfds_store.write_benchmark(b, tmp_path / "b") / "manifest.json").read_text())
    assert ma["sha256"] == mb["sha256"]


def test_corrupt_record_file_is_refused_by_name(bench, tmp_path):
    out = tfds_store.write_benchmark(bench, tmp_path / "b")
    victim = out / tfds_store.record_filename(bench.name, "entailment_02", "train")
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(tfds_store.StoreError, match=victim.name):
        tfds_store.read_benchmark(out)


def test_missing_record_file_is_refused_by_name(bench, tmp_path):
    out = tfds_store.write_benchmark(bench, tmp_path / "b")
    victim = out / tfds_store.record_filename(bench.name, "vqa_00", "test")
    victim.unlink()
    with pytest.raises(tfds_store.StoreError, match="missing record file.*" + victim.name):
        tfds_store.read_benchmark(out)
    with pytest.raises(tfds_store.StoreError, match="manifest.json"):
        tfds_store.read_benchmark(tmp_path / "nothing_here")


def test_write_refuses_bad_names_and_non_empty_dirs(bench, tmp_path):
    ex = Example("q?", b"png", {"a": 1.0}, "e0")
    bad = FederatedBenchmark("b", [ClientSplit("has-dash", "vqa", ["a"], [ex], [ex])], 0)
    with pytest.raises(ValueError, match="has-dash"):
        tfds_store.write_benchmark(bad, tmp_path / "x")
    out = tfds_store.write_benchmark(bench, tmp_path / "b")
    with pytest.raises(FileExistsError):
        tfds_store.write_benchmark(bench, out)
    tfds_store.write_benchmark(bench, out, overwrite=True)
