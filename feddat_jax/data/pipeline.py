"""Per-round cohort assembly into the stacked arrays of the data contract (docs/ARCHITECTURE.md).

    input_ids, attention_mask [C,S,B,L] int32     image      [C,S,B,H,W,3] uint8
    pixel_mask [C,S,B,H,W] uint8                    targets    [C,S,B,A] float32
    example_mask [C,S,B] float32

A round's batches depend on (seed, round, client ids) alone: client k's epoch order is a
permutation drawn from ``np.random.default_rng((seed, round, k))``, so a run resumed at round r
rebuilds exactly the batches the uninterrupted run saw, with no data-loader state to checkpoint.
Clients with fewer examples are padded with masked rows (zeros, ``example_mask`` 0) up to S steps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

from feddat_jax.data.client_store import KEYS, RowStore
from feddat_jax.data.records import ClientSplit

TASK_VQA, TASK_CLASSIFICATION = 0, 1
_TASK_CODES = {"vqa": TASK_VQA, "classification": TASK_CLASSIFICATION}

Batch = dict[str, np.ndarray]
T = TypeVar("T")


def epoch_order(
    num_examples: int,
    seed: int,
    round_index: int,
    client_id: int,
    same_order_each_round: bool = False,
) -> np.ndarray:
    """Client ``client_id``'s example order in round ``round_index`` (round 0's order every round
    when ``same_order_each_round``, as the official code does)."""
    r = 0 if same_order_each_round else round_index
    return np.random.default_rng((seed, r, client_id)).permutation(num_examples)


def _steps(store: RowStore, client_ids: np.ndarray, batch_size: int, num_steps: int | None) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    needed = int(-(-store.num_examples()[client_ids].max(initial=0) // batch_size))
    if num_steps is None:
        return needed
    if num_steps < needed:
        raise ValueError(
            f"num_steps={num_steps} would drop data: the cohort needs {needed} "
            f"steps of batch {batch_size}"
        )
    return num_steps


def gather_rows(store: RowStore, rows_CxSxB: np.ndarray) -> Batch:
    """Every key's rows by global row index (-1 = padding, zero-filled and masked)."""
    valid = rows_CxSxB >= 0
    batch = store.read(np.where(valid, rows_CxSxB, 0))
    for key in KEYS:
        batch[key][~valid] = 0
    batch["example_mask"] = valid.astype(np.float32)
    return batch


def _rows(
    store: RowStore,
    client_ids: np.ndarray,
    batch_size: int,
    num_steps: int,
    order: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    rows = np.full((len(client_ids), num_steps * batch_size), -1, np.int64)
    for c, k in enumerate(client_ids):
        start, n = store.offsets[k], store.offsets[k + 1] - store.offsets[k]
        rows[c, :n] = start + order(int(k), int(n))
    return rows.reshape(len(client_ids), num_steps, batch_size)


def _check_ids(store: RowStore, client_ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(client_ids, np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= store.num_clients)]
    if bad.size:
        raise ValueError(f"client ids {bad.tolist()[:10]} are not in 0..{store.num_clients - 1}")
    return ids


def cohort_batches(
    store: RowStore,
    client_ids: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    round_index: int,
    same_order_each_round: bool = False,
    num_steps: int | None = None,
    window: tuple[int, int] | None = None,
    window_steps: int | None = None,
) -> Batch:
    """One local epoch of every cohort client, stacked [C,S,B,...], or one segment of it.

    S is the cohort's largest ``ceil(n_k / B)`` unless ``num_steps`` fixes it (pass
    ``store.max_steps(B)`` to keep one static shape across rounds, i.e. one compilation).
    ``window=(start, stop)`` keeps only those steps of the epoch (a segment of the round,
    ``fl.segments``), padded with empty steps to ``window_steps`` (default ``stop - start``);
    only that segment's rows are read.
    """
    ids = _check_ids(store, client_ids)
    steps = _steps(store, ids, batch_size, num_steps)
    rows = _rows(
        store,
        ids,
        batch_size,
        steps,
        lambda k, n: epoch_order(n, seed, round_index, k, same_order_each_round),
    )
    if window is not None:
        rows = _window(rows, window, window_steps)
    return gather_rows(store, rows)


def eval_rows(
    store: RowStore,
    client_ids: Sequence[int],
    batch_size: int,
    *,
    num_steps: int | None = None,
) -> np.ndarray:
    """int64 [C,S,B]: the store row of every evaluation slot (-1 = padding), stored order."""
    ids = _check_ids(store, client_ids)
    steps = _steps(store, ids, batch_size, num_steps)
    return _rows(store, ids, batch_size, steps, lambda k, n: np.arange(n))


def _window(
    rows_CxSxB: np.ndarray, window: tuple[int, int], window_steps: int | None
) -> np.ndarray:
    start, stop = window
    size = stop - start if window_steps is None else window_steps
    if not 0 <= start < stop <= rows_CxSxB.shape[1] or size < stop - start:
        raise ValueError(
            f"window {window} of {size} steps does not fit an epoch of {rows_CxSxB.shape[1]} steps"
        )
    out = np.full((rows_CxSxB.shape[0], size, rows_CxSxB.shape[2]), -1, np.int64)
    out[:, : stop - start] = rows_CxSxB[:, start:stop]
    return out


def eval_batches(
    store: RowStore,
    client_ids: Sequence[int],
    batch_size: int,
    *,
    num_steps: int | None = None,
) -> Batch:
    """Every example of the given clients in stored order (no shuffle), same layout."""
    return gather_rows(store, eval_rows(store, client_ids, batch_size, num_steps=num_steps))


def task_metadata(
    clients: Sequence[ClientSplit], num_answers: int | None = None
) -> dict[str, np.ndarray]:
    """Per-client ``answer_mask`` float32 [N,A], ``task_kind`` int32 [N], ``num_examples`` int32
    [N] (train examples), the fields of ``fl.state.ClientTasks``."""
    largest = max(len(c.answers) for c in clients)
    num_answers = largest if num_answers is None else num_answers
    if num_answers < largest:
        raise ValueError(f"num_answers={num_answers} < the largest client vocabulary ({largest})")
    mask = np.zeros((len(clients), num_answers), np.float32)
    for k, c in enumerate(clients):
        mask[k, : len(c.answers)] = 1.0
    return {
        "answer_mask": mask,
        "task_kind": np.array([_TASK_CODES[c.task_kind] for c in clients], np.int32),
        "num_examples": np.array([len(c.train) for c in clients], np.int32),
    }


class Prefetcher(Generic[T]):
    """Builds the next input (round r+1's batches, or a round's next segment) on a host thread
    while the current one runs on the device.

    ``build(key)`` must be a pure function of the key (as :func:`cohort_batches` is of the round
    and window), so prefetching never changes what a round sees. Keys are round indices (the next
    is ``key + 1`` up to ``last_round``) unless ``successor(key)`` names the next key (None: no
    next). ``build_seconds`` is the host time spent building, ``wait_seconds`` the part the
    caller actually waited for.
    """

    def __init__(
        self,
        build: Callable[[Any], T],
        last_round: int | None = None,
        successor: Callable[[Any], Any] | None = None,
    ):
        self._build = build
        self._last_round = last_round
        self._successor = successor
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._pending: dict[Any, Future] = {}
        self._lock = threading.Lock()
        self.build_seconds = 0.0
        self.wait_seconds = 0.0

    def _timed_build(self, key) -> T:
        start = time.perf_counter()
        out = self._build(key)
        with self._lock:
            self.build_seconds += time.perf_counter() - start
        return out

    def _next(self, key):
        if self._successor is not None:
            return self._successor(key)
        nxt = key + 1
        return nxt if self._last_round is None or nxt <= self._last_round else None

    def get(self, key) -> T:
        """The input of ``key``; schedules the next key's build."""
        start = time.perf_counter()
        future = self._pending.pop(key, None)
        out = future.result() if future is not None else self._timed_build(key)
        self.wait_seconds += time.perf_counter() - start
        for stale in self._pending.values():
            stale.cancel()
        self._pending.clear()
        nxt = self._next(key)
        if nxt is not None:
            self._pending[nxt] = self._pool.submit(self._timed_build, nxt)
        return out

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
