"""Partitioners: how a pooled set of examples is dealt out to clients, and what that produced.

Each partitioner returns one sorted index array per client, is a pure function of its seed, and
assigns every example to exactly one client. A client left empty is an error (it would silently
train nothing), raised as :class:`EmptyClientError` naming the client and the knob to turn.
``repartition`` applies a scheme to a whole benchmark; ``summary_table`` reports the result.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import numpy as np

from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark, answer_vocabulary

SCHEMES = ("natural", "iid", "dirichlet", "quantity_skew")
# the config's names (``data.partition``): "natural" keeps the benchmark's own clients
PARTITIONS = ("natural", "iid", "quantity", "dirichlet")


class EmptyClientError(ValueError):
    """A partition left a client without examples."""


def _checked(parts: list[np.ndarray], what: str, hint: str) -> list[np.ndarray]:
    for k, part in enumerate(parts):
        if part.size == 0:
            raise EmptyClientError(
                f"{what}: client {k} of {len(parts)} received no examples; {hint}"
            )
    return [np.sort(p) for p in parts]


def _check_clients(num_clients: int, num_examples: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients} must be >= 1")
    if num_examples < num_clients:
        raise EmptyClientError(
            f"{num_examples} examples cannot fill num_clients={num_clients}; "
            "every client needs at least one"
        )


def iid(num_examples: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """A seeded shuffle cut into near-equal parts."""
    _check_clients(num_clients, num_examples)
    order = np.random.default_rng(seed).permutation(num_examples)
    return _checked(np.array_split(order, num_clients), "iid", "lower num_clients")


def quantity_skew(
    num_examples: int, num_clients: int, alpha: float, seed: int, min_per_client: int = 1
) -> list[np.ndarray]:
    """Client sizes ~ ``min_per_client`` + Dirichlet(alpha) share of the rest; labels stay iid."""
    _check_clients(num_clients, num_examples)
    if num_examples < num_clients * min_per_client:
        raise EmptyClientError(
            f"{num_examples} examples < num_clients={num_clients} x min_per_client={min_per_client}"
        )
    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.full(num_clients, float(alpha)))
    rest = num_examples - num_clients * min_per_client
    sizes = min_per_client + np.floor(share * rest).astype(int)
    sizes[np.argsort(-share)[: num_examples - sizes.sum()]] += 1  # hand out the rounding leftover
    order = rng.permutation(num_examples)
    return _checked(
        np.split(order, np.cumsum(sizes)[:-1]),
        f"quantity_skew(alpha={alpha})",
        "raise min_per_client",
    )


def dirichlet(labels: Sequence[Any], num_clients: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label skew: each label's examples are split over clients by proportions ~ Dir(alpha).

    Small ``alpha`` concentrates each label on few clients; large ``alpha`` approaches iid.
    """
    labels = np.asarray(labels)
    _check_clients(num_clients, labels.size)
    if alpha <= 0:
        raise ValueError(f"alpha={alpha} must be > 0")
    parts = _dirichlet_parts(labels, num_clients, alpha, seed)
    return _checked(
        parts,
        f"dirichlet(alpha={alpha}, {labels.size} examples)",
        "raise alpha, lower num_clients, use more examples or another seed",
    )


def natural(sources: Sequence[str]) -> dict[str, np.ndarray]:
    """One client per source, in sorted source order."""
    sources = np.asarray(sources)
    return {str(s): np.flatnonzero(sources == s) for s in np.unique(sources)}


def label_skew(labels: Sequence[Any], parts: Sequence[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label distribution and the pool's:
    0 for identical distributions, towards 1 when clients hold disjoint labels."""
    labels = np.asarray(labels)
    classes, codes = np.unique(labels, return_inverse=True)
    pool = np.bincount(codes, minlength=classes.size) / labels.size
    dists = [
        0.5 * np.abs(np.bincount(codes[p], minlength=classes.size) / p.size - pool).sum()
        for p in parts
    ]
    return float(np.mean(dists))


def top_answer(example: Example) -> str:
    """The highest-scored answer (ties: the smaller string), the label partitioners skew on."""
    return min(example.answers, key=lambda a: (-example.answers[a], a))


def repartition(
    benchmark: FederatedBenchmark,
    scheme: str,
    num_clients: int | None = None,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.25,
    top_k: int = 100,
) -> FederatedBenchmark:
    """Pool every client's examples and deal them out again with ``scheme`` (one of SCHEMES).

    Each new client's share is split train/test by a seeded shuffle (``test_fraction``), and its
    answer vocabulary recomputed from its own train part. All pooled clients must share a task kind.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {SCHEMES}")
    kinds = sorted({c.task_kind for c in benchmark.clients})
    if len(kinds) != 1:
        raise ValueError(f"cannot pool clients of different task kinds {kinds}")
    pool = [ex for c in benchmark.clients for ex in c.train + c.test]
    sources = [c.name for c in benchmark.clients for _ in c.train + c.test]
    if scheme == "natural":
        names, parts = zip(*natural(sources).items())
    else:
        if num_clients is None:
            raise ValueError(f"scheme {scheme!r} needs num_clients")
        if scheme == "iid":
            parts = iid(len(pool), num_clients, seed)
        elif scheme == "quantity_skew":
            parts = quantity_skew(len(pool), num_clients, alpha, seed)
        else:
            parts = dirichlet([top_answer(ex) for ex in pool], num_clients, alpha, seed)
        names = tuple(f"client_{k:0{len(str(num_clients - 1))}d}" for k in range(num_clients))
    clients = []
    for k, (name, part) in enumerate(zip(names, parts)):
        order = np.random.default_rng([seed, k]).permutation(part)
        n_test = min(part.size - 1, max(1, round(test_fraction * part.size)))
        train = [pool[i] for i in order[n_test:]]
        vocab = answer_vocabulary(train, top_k)
        keep = [pool[i] for i in order[:n_test] if set(pool[i].answers) <= set(vocab)]
        clients.append(ClientSplit(name, kinds[0], vocab, train, keep))
    manifest = {
        **benchmark.manifest,
        "partition": {
            "scheme": scheme,
            "alpha": alpha,
            "seed": seed,
            "from": benchmark.name,
            "test_fraction": test_fraction,
        },
    }
    return FederatedBenchmark(f"{benchmark.name}_{scheme}", clients, benchmark.seed, manifest)


def summary_table(benchmark: FederatedBenchmark) -> tuple[str, dict]:
    """Examples and answers per client, as aligned text (for logs) and a dict (for JSON)."""
    rows = [
        {
            "client": c.name,
            "task_kind": c.task_kind,
            "train": len(c.train),
            "test": len(c.test),
            "answers": len(c.answers),
            "top_answers": c.answers[:5],
        }
        for c in benchmark.clients
    ]
    header = f"{'client':<18}{'task':<16}{'train':>7}{'test':>7}{'answers':>9}  top answers"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['client']:<18}{r['task_kind']:<16}{r['train']:>7}{r['test']:>7}"
            f"{r['answers']:>9}  {', '.join(r['top_answers'])}"
        )
    total = {"train": sum(r["train"] for r in rows), "test": sum(r["test"] for r in rows)}
    lines.append(f"{'total':<34}{total['train']:>7}{total['test']:>7}")
    return "\n".join(lines), {
        "benchmark": benchmark.name,
        "seed": benchmark.seed,
        "clients": rows,
        "total": total,
    }


def deal(
    scheme: str,
    train_labels: np.ndarray | int,
    test_labels: np.ndarray | int,
    num_clients: int,
    alpha: float,
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Deal a pooled train split and test split over ``num_clients`` clients: per client, sorted
    indices into each pool; every example goes to exactly one client.

    ``scheme`` is one of :data:`PARTITIONS` but "natural". "iid" shuffles each pool and cuts it
    into near-equal parts; "quantity" gives client k the share s_k ~ Dir(alpha) of each pool
    (at least one example), so its test split is as large, relatively, as its train split;
    "dirichlet" deals the two pools as ONE pool (train rows first) by label, each label's shares ~
    Dir(alpha), so a client's test labels follow its train labels (``*_labels`` are the examples'
    labels; the other schemes use only their counts); a client it leaves without a train (or a
    test) example gets one from the largest client, so few examples per client stay usable.
    A client left without a train or a test example raises :class:`EmptyClientError`.
    """
    n_train = train_labels if isinstance(train_labels, int) else len(train_labels)
    n_test = test_labels if isinstance(test_labels, int) else len(test_labels)
    if alpha <= 0:
        raise ValueError(f"alpha={alpha} must be > 0")
    if scheme == "iid":
        train, test = iid(n_train, num_clients, seed), iid(n_test, num_clients, seed + 1)
    elif scheme == "quantity":
        _check_clients(num_clients, min(n_train, n_test))
        rng = np.random.default_rng(seed)
        share = rng.dirichlet(np.full(num_clients, float(alpha)))
        train, test = (_cut(rng.permutation(n), share) for n in (n_train, n_test))
    elif scheme == "dirichlet":
        labels = np.concatenate([np.asarray(train_labels), np.asarray(test_labels)])
        _check_clients(num_clients, min(n_train, n_test))
        pooled = _dirichlet_parts(labels, num_clients, alpha, seed)
        train = _fill_empty([p[p < n_train] for p in pooled])
        test = _fill_empty([p[p >= n_train] - n_train for p in pooled])
    else:
        raise ValueError(f"unknown partition {scheme!r}; choose one of {PARTITIONS[1:]}")
    for k, (a, b) in enumerate(zip(train, test)):
        if a.size == 0 or b.size == 0:
            raise EmptyClientError(
                f"client {k} of {num_clients} received {a.size} train and {b.size} test examples"
            )
    return train, test


def _cut(order: np.ndarray, share: np.ndarray) -> list[np.ndarray]:
    """``order`` cut into one part per client: one example each, the rest by ``share``."""
    n, k = order.size, share.size
    sizes = 1 + np.floor(share * (n - k)).astype(int)
    sizes[np.argsort(-share)[: n - sizes.sum()]] += 1  # the rounding leftover
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]


def _dirichlet_parts(labels: np.ndarray, num_clients: int, alpha: float, seed: int):
    """Each label's examples cut over the clients by shares ~ Dir(alpha) (empty parts kept)."""
    rng = np.random.default_rng(seed)
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        share = rng.dirichlet(np.full(num_clients, float(alpha)))
        cuts = np.round(np.cumsum(share)[:-1] * idx.size).astype(int)
        for k, piece in enumerate(np.split(idx, cuts)):
            buckets[k].append(piece)
    return [np.concatenate(b) for b in buckets]


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give each empty part the last example of the then largest part (deterministic)."""
    parts = [np.sort(p) for p in parts]
    for k in [k for k, p in enumerate(parts) if p.size == 0]:
        big = int(np.argmax([p.size for p in parts]))
        parts[k], parts[big] = parts[big][-1:], parts[big][:-1]
    return parts
