"""A benchmark's examples pooled and dealt over N new clients, read on demand; the split's summary.

:func:`partition_benchmark` is what ``--config.data.partition`` does to any benchmark (the
embedded one or a built TFDS one): "natural" returns it as it is; "iid", "quantity" and
"dirichlet" pool its clients' train examples and their test examples and deal them over
``num_clients`` new clients (``partition.deal``). Nothing is copied: a new client's splits are
:class:`PooledExamples`, index arrays into the original clients' lazy splits, so a 10,000-client
split costs two index arrays. The labels a Dirichlet split skews on are the examples' question
types where the benchmark knows them without drawing the examples (the embedded one), else their
top answers (a stored benchmark's records are read once for this).

A pooled client's answer vocabulary is the pool's answer space (every answer of every original
client, sorted): its examples come from several original clients, whose vocabularies differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feddat_jax.data import embedded_clients, partition
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark
from feddat_jax.errors import ConfigError

SKEW_SAMPLE = 1000  # clients the summary's skew is measured on (evenly spaced): O(1) start-up


class PooledExamples(Sequence[Example]):
    """Examples ``rows`` (global indices) of a pool made of several clients' splits."""

    def __init__(self, splits: Sequence[Sequence[Example]], offsets: np.ndarray, rows: np.ndarray,
                 labels: np.ndarray | None = None):  # fmt: skip
        self.splits, self.offsets, self.rows = splits, offsets, rows
        self.labels = labels  # the rows' labels where the partition computed them

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.read(range(*i.indices(len(self))))
        return self.read([i])[0]

    def __iter__(self):
        for start in range(0, len(self), 256):
            yield from self.read(range(start, min(start + 256, len(self))))

    def read(self, indices: Sequence[int]) -> list[Example]:
        """These examples, one read per original client."""
        return _read_rows(self.splits, self.offsets, self.rows[np.asarray(indices, np.int64)])

    def question_types(self) -> list[str] | None:
        return None if self.labels is None else self.labels.tolist()


def _read_rows(splits, offsets: np.ndarray, rows: np.ndarray) -> list[Example]:
    owner = np.searchsorted(offsets, rows, side="right") - 1
    out: list[Example | None] = [None] * len(rows)
    for k in np.unique(owner).tolist():
        where = np.flatnonzero(owner == k)
        split, local = splits[k], (rows[where] - offsets[k]).tolist()
        read = split.read(local) if hasattr(split, "read") else [split[i] for i in local]
        for i, example in zip(where.tolist(), read):
            out[i] = example
    return out  # type: ignore[return-value]


def cheap_labels(split: Sequence[Example]) -> np.ndarray | None:
    """A split's question types where they cost no drawing or reading, else None."""
    types = split.question_types() if hasattr(split, "question_types") else None
    return None if types is None else np.asarray(types, dtype=object)


def _pool_labels(splits: Sequence[Sequence[Example]]) -> np.ndarray:
    """Every pooled example's label: its question type (cheap, or read) or its top answer."""
    cheap = [cheap_labels(s) for s in splits]
    if all(c is not None for c in cheap):
        return np.concatenate(cheap) if cheap else np.zeros(0, object)
    examples = [ex for s in splits for ex in s]
    if all(ex.question_type for ex in examples):
        return np.asarray([ex.question_type for ex in examples], dtype=object)
    return np.asarray([partition.top_answer(ex) for ex in examples], dtype=object)


def partition_benchmark(
    benchmark: FederatedBenchmark, scheme: str, num_clients: int, alpha: float, seed: int
) -> FederatedBenchmark:
    """``benchmark`` itself ("natural") or its examples dealt over ``num_clients`` clients (see
    the module docstring); a bad value, a pool of several task kinds or an empty client is a
    one-line ConfigError."""
    where = f"config.data.partition={scheme!r}"
    if scheme not in partition.PARTITIONS:
        raise ConfigError(
            f"{scheme!r} is not a partition", where, f"choose one of {partition.PARTITIONS}"
        )
    if scheme == "natural":
        return benchmark
    kinds = sorted({c.task_kind for c in benchmark.clients})
    if len(kinds) != 1:
        raise ConfigError(
            f"partition {scheme!r} pools every client's examples, but this benchmark's clients "
            f"have different task kinds {kinds}",
            where,
            "use data.partition='natural', or a benchmark of one task kind",
        )
    pools = {
        part: [getattr(c, part) for c in benchmark.clients] for part in ("train", "test")
    }
    offsets = {
        part: np.concatenate([[0], np.cumsum([len(s) for s in splits])]).astype(np.int64)
        for part, splits in pools.items()
    }
    labels = (
        {part: _pool_labels(splits) for part, splits in pools.items()}
        if scheme == "dirichlet"
        else {part: None for part in pools}
    )
    counts = {part: int(offsets[part][-1]) for part in pools}
    try:
        train, test = partition.deal(
            scheme,
            counts["train"] if labels["train"] is None else labels["train"],
            counts["test"] if labels["test"] is None else labels["test"],
            num_clients,
            alpha,
            seed,
        )
    except ValueError as err:  # EmptyClientError included
        raise ConfigError(
            f"{err} ({counts['train']} train and {counts['test']} test examples)",
            f"{where}, data.num_clients={num_clients}, data.dirichlet_alpha={alpha}",
            "raise data.dirichlet_alpha or the examples per client, or lower data.num_clients",
        ) from err
    space = embedded_clients.answer_space(benchmark)
    width = len(str(num_clients - 1))
    clients = []
    for k in range(num_clients):
        split = {}
        for part, rows in (("train", train[k]), ("test", test[k])):
            part_labels = None if labels[part] is None else labels[part][rows]
            split[part] = PooledExamples(pools[part], offsets[part], rows, part_labels)
        clients.append(ClientSplit(f"client_{k:0{width}d}", kinds[0], space, **split))
    manifest = {
        **benchmark.manifest,
        "partition": {"scheme": scheme, "num_clients": num_clients, "alpha": alpha, "seed": seed},
    }
    return FederatedBenchmark(f"{benchmark.name}_{scheme}", clients, benchmark.seed, manifest)


def with_answer_space(benchmark: FederatedBenchmark) -> FederatedBenchmark:
    """Every client answers over the benchmark's one answer space (a shared head's): the same
    examples, each target indexed in the union of every client's answers (sorted)."""
    space = embedded_clients.answer_space(benchmark)
    clients = [ClientSplit(c.name, c.task_kind, space, c.train, c.test) for c in benchmark.clients]
    manifest = {**benchmark.manifest, "answer_space": "shared"}
    return FederatedBenchmark(benchmark.name, clients, benchmark.seed, manifest)


def _spread(values: np.ndarray) -> str:
    return (
        f"min {values.min()}, median {np.median(values):g}, max {values.max()} "
        f"(total {values.sum()})"
    )


def split_summary(benchmark: FederatedBenchmark) -> list[str]:
    """The split a run trains on, as lines for its start-up log: clients, examples per client,
    and how far clients' question types are from the pool's (mean total-variation distance over
    at most :data:`SKEW_SAMPLE` clients, where the types are known without reading the data)."""
    clients = benchmark.clients
    scheme = benchmark.manifest.get("partition", {}).get("scheme", "natural")
    lines = [f"data: {benchmark.name}, {len(clients)} clients, partition {scheme}"]
    for part in ("train", "test"):
        sizes = np.array([len(getattr(c, part)) for c in clients], np.int64)
        lines.append(f"  {part} examples per client: {_spread(sizes)}")
    sample = np.unique(np.linspace(0, len(clients) - 1, min(len(clients), SKEW_SAMPLE)).astype(int))
    types = [cheap_labels(clients[k].train) for k in sample.tolist()]
    if all(t is not None for t in types) and types:
        skew = partition.label_skew(
            np.concatenate(types), np.split(np.arange(sum(map(len, types))),
                                            np.cumsum([len(t) for t in types])[:-1]),
        )  # fmt: skip
        lines.append(
            f"  question-type skew: {skew:.3f} (a client's types vs the pool's, total-variation "
            f"distance: 0 = same mix, 1 = disjoint; over {len(sample)} clients)"
        )
    return lines
