"""The benchmark a config names, as a run reads it: its source, its partition, its answer space.

Every source is read on demand (only metadata at start-up): a built TFDS benchmark through
``source.open_benchmark``, the embedded one through ``embedded_clients.open_embedded`` (kept for
the process, so the methods and reference rows of one launch share its cache of drawn examples).
``data.partition`` then deals it over ``data.num_clients`` clients (``partitioned``), and a
shared answer head (``peft.head="shared"``) puts every client on the benchmark's one answer space.
"""

from __future__ import annotations

import functools

import ml_collections

from feddat_jax.data import embedded_clients, partitioned
from feddat_jax.data import source as source_lib
from feddat_jax.data.records import FederatedBenchmark
from feddat_jax.errors import ConfigError

DATA_SOURCES = ("embedded", "tfds")
HEADS = ("private", "shared")

_open_embedded = functools.lru_cache(maxsize=1)(embedded_clients.open_embedded)


def natural_benchmark(data: ml_collections.ConfigDict, patch_size: int) -> FederatedBenchmark:
    """The source's own clients (``data.num_clients`` of them for the embedded families)."""
    if data.source not in DATA_SOURCES:
        raise ConfigError(
            f"{data.source!r} is not a valid data.source",
            f"config.data.source={data.source!r}",
            f"choose one of {DATA_SOURCES}",
        )
    if data.source == "tfds":
        return source_lib.open_benchmark(data.tfds_dir)
    return _open_embedded(
        data.family,
        data.num_clients or None,
        data.image_size,
        data.train_per_client,
        data.test_per_client,
        data.seed,
        patch_size=patch_size,
        conventions=data.conventions,
        cache_bytes=int(data.example_cache_mb) << 20,
    )


def load_benchmark(
    data: ml_collections.ConfigDict, patch_size: int, head: str = "private"
) -> FederatedBenchmark:
    """The benchmark a run trains on (see the module docstring). A partition deals the natural
    clients over ``data.num_clients`` clients (0: as many as there are natural ones)."""
    benchmark = natural_benchmark(data, patch_size)
    num_clients = data.num_clients or len(benchmark.clients)
    benchmark = partitioned.partition_benchmark(
        benchmark, data.partition, num_clients, data.dirichlet_alpha, data.seed
    )
    if head not in HEADS:
        raise ConfigError(
            f"{head!r} is not a valid peft.head", f"config.peft.head={head!r}", f"choose one of {HEADS}"
        )
    return partitioned.with_answer_space(benchmark) if head == "shared" else benchmark
