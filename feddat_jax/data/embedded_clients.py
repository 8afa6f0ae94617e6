"""The embedded benchmark on demand: any number of clients, each drawn when a round needs it.

:func:`open_embedded` returns the same clients, examples and answer vocabularies as
``embedded.make_benchmark`` (tests/test_embedded_clients.py checks it byte for byte), but draws
nothing up front: a client's ``train`` / ``test`` are :class:`GeneratedExamples`, whose examples
``embedded._example`` draws when they are read (a pure function of (seed, family, client, split,
index)), and its ``answers`` a :class:`ClientVocabulary`, whose length (the client's label space,
``embedded.label_space``) is known at once and whose order (train answers by frequency) is
computed from the client's train examples when a round or an evaluation first reads its targets.
Start-up therefore costs the same for 12 or 10,000 clients; drawn examples are kept in one LRU
cache of at most ``cache_bytes`` per benchmark (a 48-pixel example is about 3-7 KB).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Sequence

import numpy as np

from feddat_jax.data import embedded
from feddat_jax.data.embedded_families import DEFAULT_CLIENTS, ClientDef, family_clients
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark
from feddat_jax.errors import ConfigError

_EXAMPLE_OVERHEAD = 400  # bytes of a cached Example besides its image and question


class ExampleCache:
    """Drawn examples by (client, part, index), least recently used first out, at most
    ``max_bytes`` (0: none kept). Thread-safe: the pipeline's prefetcher reads from a thread."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: collections.OrderedDict[tuple, Example] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Example | None:
        with self._lock:
            example = self._items.get(key)
            if example is not None:
                self._items.move_to_end(key)
            return example

    def put(self, key: tuple, example: Example) -> None:
        size = len(example.image) + len(example.question) + _EXAMPLE_OVERHEAD
        with self._lock:
            if size > self.max_bytes or key in self._items:
                return
            self._items[key] = example
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= len(old.image) + len(old.question) + _EXAMPLE_OVERHEAD


@dataclasses.dataclass(eq=False)
class _Spec:
    """What every example of one benchmark is drawn with besides (client, part, index)."""

    family: str
    seed: int
    image_size: int
    noise: float
    cache: ExampleCache

    def example(self, cd: ClientDef, k: int, part: str, i: int) -> Example:
        key = (k, part, i)
        example = self.cache.get(key)
        if example is None:
            example, _ = embedded._example(
                cd, self.family, k, part, i, self.seed, self.image_size, self.noise
            )
            self.cache.put(key, example)
        return example


class GeneratedExamples(Sequence[Example]):
    """One client's split as a lazy sequence: example i is drawn (or taken from the cache) when
    read; its length is known without drawing anything."""

    def __init__(self, spec: _Spec, cd: ClientDef, k: int, part: str, length: int):
        self.spec, self.cd, self.k, self.part, self.length = spec, cd, k, part, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.read(range(*i.indices(self.length)))
        if not -self.length <= i < self.length:
            raise IndexError(f"{self.cd.name} {self.part}: example {i} of {self.length}")
        return self.spec.example(self.cd, self.k, self.part, i % self.length)

    def __iter__(self):
        return (self.spec.example(self.cd, self.k, self.part, i) for i in range(self.length))

    def read(self, indices: Sequence[int]) -> list[Example]:
        """Several examples (the ``RecordStore`` protocol of a lazy split)."""
        return [self[int(i)] for i in indices]

    def question_types(self) -> list[str]:
        """Every example's question type, from the first draw of its generator only (cheap: no
        scene is drawn): what a partition skews on."""
        s = self.spec
        return [
            embedded.question_type(self.cd, s.family, self.k, self.part, i, s.seed)
            for i in range(self.length)
        ]


class ClientVocabulary(Sequence[str]):
    """A client's answer vocabulary (``embedded.vocabulary``: its train answers by frequency,
    then the rest of its label space), computed on first read; its length, the label space's
    size, is known at once."""

    def __init__(self, train: GeneratedExamples, label_space: tuple[str, ...], top_k: int):
        self.train, self.label_space, self.top_k = train, label_space, top_k
        self._answers: list[str] | None = None
        self._lock = threading.Lock()

    def _list(self) -> list[str]:
        with self._lock:
            if self._answers is None:
                self._answers = embedded.vocabulary(self.train, set(self.label_space), self.top_k)
            return self._answers

    def __len__(self) -> int:
        return min(len(self.label_space), self.top_k)

    def __getitem__(self, i):
        return self._list()[i]

    def __iter__(self):
        return iter(self._list())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"ClientVocabulary({self._answers if self._answers is not None else '...'})"


def open_embedded(
    family: str,
    num_clients: int | None = None,
    image_size: int = 48,
    train_per_client: int = 200,
    test_per_client: int = 1000,
    seed: int = 0,
    *,
    patch_size: int = 8,
    size_spread: float = 0.6,
    top_k: int = 100,
    annotator_noise: float = 0.05,
    conventions: str = "mixed",
    cache_bytes: int = 256 << 20,
) -> FederatedBenchmark:
    """``make_benchmark``'s clients (same arguments), drawn on demand (see the module docstring).

    ``top_k`` must cover every client's label space: ``make_benchmark`` drops the examples whose
    answer a smaller vocabulary leaves out, which cannot be known without drawing them.
    """
    embedded._check(image_size, patch_size, train_per_client, test_per_client, size_spread, top_k)
    defs = family_clients(family, num_clients or DEFAULT_CLIENTS, conventions)
    spec = _Spec(family, seed, image_size, annotator_noise, ExampleCache(cache_bytes))
    clients = []
    for k, cd in enumerate(defs):
        space = embedded.label_space(cd.kind, cd.convention)
        if len(space) > top_k:
            raise ConfigError(
                f"top_k={top_k} is smaller than client {cd.name}'s {len(space)} answers",
                "embedded_clients.open_embedded",
                f"use top_k >= {len(space)} (or the eager embedded.make_benchmark)",
            )
        n_train = embedded.train_size(train_per_client, size_spread, seed, k)
        train = GeneratedExamples(spec, cd, k, "train", n_train)
        test = GeneratedExamples(spec, cd, k, "test", test_per_client)
        answers = ClientVocabulary(train, space, top_k)
        clients.append(ClientSplit(cd.name, cd.kind.task_kind, answers, train, test))  # type: ignore[arg-type]
    params = {
        "num_clients": len(defs),
        "image_size": image_size,
        "patch_size": patch_size,
        "train_per_client": train_per_client,
        "test_per_client": test_per_client,
        "size_spread": size_spread,
        "top_k": top_k,
        "annotator_noise": annotator_noise,
        "conventions": conventions,
    }
    manifest = {
        "generator": embedded.__name__,
        "generator_version": embedded.GENERATOR_VERSION,
        "generator_source": embedded.generator_digest(),
        "family": family,
        "params": params,
        "on_demand": True,
    }
    return FederatedBenchmark(f"embedded_{family}", clients, seed, manifest)


def answer_space(benchmark: FederatedBenchmark) -> list[str]:
    """Every answer any client of ``benchmark`` can be asked for, sorted: the one head of a
    shared-head run, or of clients that a partition pools from several sources. Lazy embedded
    clients give their label spaces (nothing is drawn); stored ones their vocabularies."""
    space: set[str] = set()
    for c in benchmark.clients:
        answers = c.answers
        space.update(answers.label_space if isinstance(answers, ClientVocabulary) else answers)
    return sorted(space)


def client_examples_labels(split: Sequence[Example]) -> np.ndarray | None:
    """A lazy embedded split's question types (cheap), else None (the caller reads the data)."""
    return np.asarray(split.question_types()) if isinstance(split, GeneratedExamples) else None
