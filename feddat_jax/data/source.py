"""A stored benchmark read on demand: host memory and start-up time independent of the clients.

``ClientDataStore`` decodes every client's images once, into RAM: 1 MB per 384x640 example, so a
run's host memory grows with the number of registered clients and their data (12 GB for the
paper's five Domain clients; hundreds of GB for 10,000). Here nothing is read at start-up but the
manifest:

* :func:`open_benchmark` returns the stored ``FederatedBenchmark`` whose clients' ``train`` /
  ``test`` are :class:`RecordExamples`, lazy sequences over the ``array_record`` data source of
  their split, decoded with the dataset's TFDS features (opened on first use, at most
  ``max_open_splits`` at once; each record file's sha256 is checked against the manifest when it
  is first opened);
* :class:`RecordStore` is the :class:`~feddat_jax.data.client_store.RowStore` the pipeline reads
  a cohort's (or a segment's) rows from: it reads the records, decodes and resizes the images on a
  thread pool, tokenizes the questions, and keeps decoded rows in an optional LRU cache of at most
  ``cache_bytes`` (0: none; a cache that holds every client's rows decodes each image once).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from feddat_jax.data import tfds_store
from feddat_jax.data.client_store import KEYS, decode_image
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark
from feddat_jax.data.tokenize import TextEncoder


class StoredSplits:
    """The record files of a stored benchmark's splits, opened on demand (LRU-bounded).

    Each split is read through array_record's ``ArrayRecordDataSource`` (the data source TFDS
    itself uses) and decoded with the dataset's TFDS features (``features.json``), without building
    the TFDS dataset info of every split: opening a store costs the same for 10 or 10,000 clients.
    """

    def __init__(self, out_dir: str | Path, *, verify: bool = True, max_open_splits: int = 256):
        self.dir = Path(out_dir)
        self.manifest = tfds_store.load_manifest(self.dir)
        self.verify = verify
        self.max_open = max_open_splits
        self._features = None
        self._open: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    def _source(self, client: str, part: str):
        from array_record.python.array_record_data_source import ArrayRecordDataSource

        fname = tfds_store.record_filename(self.manifest["name"], client, part)
        with self._lock:
            if fname in self._open:
                self._open.move_to_end(fname)
                return self._open[fname]
            if self.verify and fname not in self._verified:
                tfds_store.verify_file(self.dir, fname, self.manifest)
                self._verified.add(fname)
            source = ArrayRecordDataSource([str(self.dir / fname)])  # no read-ahead
            self._open[fname] = source
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
            return source

    def read(self, client: str, part: str, indices: Sequence[int]) -> list[Example]:
        import tensorflow_datasets as tfds

        if self._features is None:
            self._features = tfds.features.FeatureConnector.from_config(str(self.dir))
        records = self._source(client, part).__getitems__([int(i) for i in indices])
        skip = {"image": tfds.decode.SkipDecoding()}  # keep the encoded image bytes
        return [
            tfds_store.decode_record(self._features.deserialize_example_np(r, decoders=skip))
            for r in records
        ]


class RecordExamples(Sequence[Example]):
    """One client's stored split as a lazy sequence (its length comes from the manifest)."""

    def __init__(self, splits: StoredSplits, client: str, part: str, length: int):
        self.splits, self.client, self.part, self.length = splits, client, part, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.read(range(*i.indices(self.length)))
        if not -self.length <= i < self.length:
            raise IndexError(f"{self.client} {self.part}: example {i} of {self.length}")
        return self.read([i % self.length])[0]

    def __iter__(self):
        for start in range(0, self.length, 256):
            yield from self.read(range(start, min(start + 256, self.length)))

    def read(self, indices: Sequence[int]) -> list[Example]:
        """Several examples in one read of the record file."""
        return self.splits.read(self.client, self.part, indices)


def open_benchmark(out_dir: str | Path, *, verify: bool = True) -> FederatedBenchmark:
    """A benchmark written by ``tfds_store.write_benchmark``, with lazy client splits: only the
    manifest is read here (see the module docstring)."""
    splits = StoredSplits(out_dir, verify=verify)
    manifest = splits.manifest
    clients = [
        ClientSplit(
            name=c["name"],
            task_kind=c["task_kind"],
            answers=list(c["answers"]),
            **{
                part: RecordExamples(splits, c["name"], part, c[f"num_{part}"])
                for part in ("train", "test")
            },
        )
        for c in manifest["clients"]
    ]
    return FederatedBenchmark(
        name=manifest["name"], clients=clients, seed=manifest["seed"], manifest=manifest["info"]
    )


def _targets_row(example: Example, index: dict[str, int], num_answers: int) -> np.ndarray:
    row = np.zeros((num_answers,), np.float32)
    for answer, score in example.answers.items():
        if answer in index:  # answers outside the client's vocabulary carry no target
            row[index[answer]] = score
    return row


@dataclasses.dataclass(eq=False)
class RecordStore:
    """Encoded rows of one split of N clients, read and decoded when asked for (a RowStore).

    Client k owns the global rows ``offsets[k] .. offsets[k + 1] - 1``, in its stored order, as in
    ``ClientDataStore``; ``read`` returns exactly what ``ClientDataStore.read`` would.
    """

    clients: Sequence[ClientSplit]
    part: str
    encoder: TextEncoder
    image_hw: tuple[int, int]
    max_length: int
    num_answers: int
    threads: int = 8
    cache_bytes: int = 0

    def __post_init__(self):
        if self.part not in ("train", "test"):
            raise ValueError(f"part={self.part!r} is not one of ('train', 'test')")
        largest = max(len(c.answers) for c in self.clients)
        if self.num_answers < largest:
            raise ValueError(f"num_answers={self.num_answers} < the largest vocabulary ({largest})")
        self.names = tuple(c.name for c in self.clients)
        sizes = [len(getattr(c, self.part)) for c in self.clients]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._index = [None] * len(self.clients)  # answer -> head index, per client, built lazily
        self._pool = ThreadPoolExecutor(max(1, self.threads), thread_name_prefix="decode")
        self._cache: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    @property
    def num_clients(self) -> int:
        return len(self.names)

    def num_examples(self) -> np.ndarray:
        return np.diff(self.offsets)

    def max_steps(self, batch_size: int) -> int:
        return int(-(-self.num_examples().max(initial=0) // batch_size))

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every key at these global rows (any shape): cached rows, the rest read and decoded."""
        rows = np.asarray(rows, np.int64)
        flat = rows.reshape(-1)
        decoded = self._decode_rows(np.unique(flat))
        out = {}
        for j, key in enumerate(KEYS):
            shape, dtype = self._row_layout(j)
            values = np.empty((flat.size,) + shape, dtype)
            for i, r in enumerate(flat.tolist()):
                values[i] = decoded[r][j]
            out[key] = values.reshape(rows.shape + shape)
        return out

    def _row_layout(self, j: int) -> tuple[tuple[int, ...], np.dtype]:
        h, w = self.image_hw
        return [
            ((self.max_length,), np.int32),
            ((self.max_length,), np.int32),
            ((h, w, 3), np.uint8),
            ((h, w), np.uint8),
            ((self.num_answers,), np.float32),
        ][j]

    def row_tags(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The rows' question type and group, read from their records (no image is decoded)."""
        examples = self._examples(np.asarray(rows, np.int64).reshape(-1))
        return {
            "question_type": np.array([ex.question_type for ex in examples], dtype=object),
            "group": np.array([ex.group for ex in examples], dtype=object),
        }

    def _examples(self, rows: np.ndarray) -> list[Example]:
        """The stored examples of these global rows, in order (one read per client)."""
        owner = np.searchsorted(self.offsets, rows, side="right") - 1
        out: list[Example | None] = [None] * len(rows)
        for k in np.unique(owner).tolist():
            where = np.flatnonzero(owner == k)
            split = getattr(self.clients[k], self.part)
            local = (rows[where] - self.offsets[k]).tolist()
            read = split.read(local) if hasattr(split, "read") else [split[i] for i in local]
            for i, ex in zip(where.tolist(), read):
                out[i] = ex
        return out

    # ---- decoding --------------------------------------------------------------------------------
    def _decode_rows(self, unique: np.ndarray) -> dict[int, tuple]:
        out, missing = {}, []
        with self._lock:
            for r in unique.tolist():
                if r in self._cache:
                    self._cache.move_to_end(r)
                    out[r] = self._cache[r]
                else:
                    missing.append(r)
        if not missing:
            return out
        missing_arr = np.asarray(missing, np.int64)
        owner = np.searchsorted(self.offsets, missing_arr, side="right") - 1
        examples = dict(zip(missing, self._examples(missing_arr)))
        height, width = self.image_hw
        pixels = self._pool.map(lambda r: decode_image(examples[r].image, height, width), missing)
        text = self.encoder.encode([examples[r].question for r in missing], self.max_length)
        for i, (r, (image, mask)) in enumerate(zip(missing, pixels)):
            k = int(owner[i])
            targets = _targets_row(examples[r], self._answer_index(k), self.num_answers)
            out[r] = (text["input_ids"][i], text["attention_mask"][i], image, mask, targets)
        self._remember({r: out[r] for r in missing})
        return out

    def _answer_index(self, k: int) -> dict[str, int]:
        if self._index[k] is None:
            self._index[k] = {a: j for j, a in enumerate(self.clients[k].answers)}
        return self._index[k]

    def _remember(self, rows: dict[int, tuple]) -> None:
        if self.cache_bytes <= 0:
            return
        with self._lock:
            for r, values in rows.items():
                size = sum(v.nbytes for v in values)
                if size > self.cache_bytes:
                    continue
                self._cache[r] = values
                self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                _, values = self._cache.popitem(last=False)
                self._cached_bytes -= sum(v.nbytes for v in values)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes
