"""A round in segments: the local epoch runs as several calls of at most K local steps each.

A round's inputs are ``[R, C, S, B, ...]`` (R replicas, ``fl.replicas``); at the paper's scale (S = 1,250 steps of ViLT-B/32 at
384x640) one round's images alone need ~9 GB of device memory at C = 5 and ~118 GB at C = 64.
``SegmentedRound`` keeps only ``[R, C, K, B, ...]`` on device at a time:

    local_C = begin(private_C)                                  # one call
    for k in range(ceil(S / K)):                                # one call per segment
        local_C, sums_C = segment(local_C, batches of steps k*K .. k*K + K - 1)
    server, private_C, metrics = end(local_C, sums_C)           # one call: aggregate, server step

Each call is ONE jitted program over every replica's whole cohort
(``fl.replicas.make_replica_round_parts``);
the local state stays on device and is donated from call to call. Every segment has the same
shape (the last one is padded with empty steps, which are no-ops), so each program compiles once
per run. A segment is dispatched before the previous one is waited for, so the device always has
the next segment queued while the host prefetches the one after (``data.pipeline.Prefetcher``).
The result equals the one-call round (``make_replica_round_fn``) up to float reduction order
(tests/test_segments.py); ``segment_steps = 0`` IS the one-call round. The swept hyperparameters
``hparams`` (``[R]`` each, ``{}`` when none are swept) go to every call.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from feddat_jax.fl.aggregation import Aggregator
from feddat_jax.fl.algorithms.base import LocalAlgorithm
from feddat_jax.fl.replicas import make_replica_round_fn, make_replica_round_parts
from feddat_jax.fl.round import add_sums
from feddat_jax.fl.state import ClientTasks, ServerState

PyTree = Any
Batches = dict[str, Any]
_BATCH_AXIS = 3  # of a round's inputs [R, C, S, B, ...]


def segment_windows(num_steps: int, segment_steps: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the epoch's segments (one window when ``segment_steps`` is 0 or
    at least ``num_steps``); the last window may be short: its batches are padded to K steps."""
    if segment_steps < 0:
        raise ValueError(f"segment_steps={segment_steps} must be >= 0 (0 = one call per round)")
    num_steps = max(int(num_steps), 1)
    size = segment_steps if 0 < segment_steps < num_steps else num_steps
    return [(start, min(start + size, num_steps)) for start in range(0, num_steps, size)]


def segment_length(num_steps: int, segment_steps: int) -> int:
    """K: the static number of steps of every segment's batches (the first window's length)."""
    return segment_windows(num_steps, segment_steps)[0][1]


class SegmentedRound:
    """Runs a round as begin / segments / end (``segment_steps`` > 0) or as one call (0).

    Args:
      algorithm, server_tx, aggregator, mesh, chunk_size: as ``fl.replicas.make_replica_round_fn``.
      segment_steps: K, the most local steps per call; 0 = the whole epoch in one call.
    """

    def __init__(
        self,
        algorithm: LocalAlgorithm,
        server_tx: optax.GradientTransformation,
        aggregator: Aggregator,
        *,
        segment_steps: int = 0,
        mesh: Mesh | None = None,
        chunk_size: int | None = None,
    ):
        if segment_steps < 0:
            raise ValueError(f"segment_steps={segment_steps} must be >= 0 (0 = one call per round)")
        self.segment_steps = int(segment_steps)
        self._args = (algorithm, server_tx, aggregator)
        self._kwargs = {"mesh": mesh, "chunk_size": chunk_size}
        parts = make_replica_round_parts(algorithm, server_tx, aggregator, **self._kwargs)
        self.round_fn = make_replica_round_fn(algorithm, server_tx, aggregator, **self._kwargs)
        # the cohort's private state, then the local state, are donated from call to call
        self.begin_fn = jax.jit(parts.begin, static_argnames="batch_size", donate_argnums=(2,))
        self.segment_fn = jax.jit(parts.segment, donate_argnums=(2,))
        self.add_fn = jax.jit(lambda a, b: add_sums(a, b))  # this instance's own jit cache
        self.end_fn = jax.jit(parts.end, static_argnames="batch_size", donate_argnums=(2,))

    def with_segment_steps(self, segment_steps: int) -> SegmentedRound:
        """The same round cut into segments of another length (new programs)."""
        return SegmentedRound(*self._args, segment_steps=segment_steps, **self._kwargs)

    def windows(self, num_steps: int) -> list[tuple[int, int]]:
        """The epoch's segments ``[(start, stop), ...]`` (see :func:`segment_windows`)."""
        return segment_windows(num_steps, self.segment_steps)

    def lower(
        self, frozen, server, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxK, hparams=None
    ) -> dict[str, jax.stages.Lowered]:
        """Ahead-of-time: this round's programs lowered for these shapes (arguments may be
        ``jax.ShapeDtypeStruct`` s; ``batches_RxCxK`` is one segment's, or the epoch's with
        ``segment_steps`` 0). Compile them (e.g. in threads) and pass them to :meth:`install`."""
        hparams = hparams or {}
        if not self.segment_steps:
            return {
                "round": self.round_fn.lower(
                    frozen, server, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxK, hparams
                )
            }
        batch_size = int(batches_RxCxK["example_mask"].shape[_BATCH_AXIS])
        local_RxC = jax.eval_shape(
            lambda *a: self.begin_fn(*a, batch_size=batch_size, hparams=hparams),
            frozen,
            server,
            private_RxC,
            tasks_RxC,
        )
        first = np.int32(0)
        _, sums_RxC = jax.eval_shape(
            self.segment_fn,
            frozen,
            server,
            local_RxC,
            tasks_RxC,
            client_ids_RxC,
            batches_RxCxK,
            first,
            hparams,
        )
        with _donation_where_it_fits():
            return {
                "begin": self.begin_fn.lower(
                    frozen, server, private_RxC, tasks_RxC, batch_size=batch_size, hparams=hparams
                ),
                "segment": self.segment_fn.lower(
                    frozen, server, local_RxC, tasks_RxC, client_ids_RxC, batches_RxCxK, first, hparams
                ),
                "add": self.add_fn.lower(sums_RxC, sums_RxC),
                "end": self.end_fn.lower(
                    frozen, server, local_RxC, sums_RxC, tasks_RxC, batch_size=batch_size, hparams=hparams
                ),
            }

    def install(self, compiled: dict[str, Any]) -> None:
        """Run with these ahead-of-time compiled programs (:meth:`lower`'s, compiled) from now
        on; they accept only the shapes they were lowered for."""
        if "round" in compiled:
            self.round_fn = compiled["round"]
            return
        begin, end = compiled["begin"], compiled["end"]
        self.begin_fn = lambda *args, batch_size, **kw: begin(*args, **kw)
        self.segment_fn, self.add_fn = compiled["segment"], compiled["add"]
        self.end_fn = lambda *args, batch_size, **kw: end(*args, **kw)

    def __call__(
        self,
        frozen: PyTree,
        server: ServerState,
        private_RxC: PyTree,
        tasks_RxC: ClientTasks,
        client_ids_RxC,
        segments: Iterable[Batches],
        on_segment: Callable[[int], None] | None = None,
        hparams: PyTree = None,
    ) -> tuple[ServerState, PyTree, dict]:
        """One round. ``segments`` yields each window's batches ``[R, C, K, B, ...]`` in order (one
        ``[R, C, S, B, ...]`` batch when ``segment_steps`` is 0); it is asked for segment k + 1 once
        k is dispatched and k - 1 has finished, so inputs do not pile up on the device however
        fast the host is. ``on_segment(k)`` is called once segment k has finished (progress).
        ``hparams``: the swept hyperparameters (``fl.hparams``: ``[R]`` each)."""
        hparams = hparams or {}
        if not self.segment_steps:
            (batches,) = list(segments)
            out = self.round_fn(frozen, server, private_RxC, tasks_RxC, client_ids_RxC, batches, hparams)
            if on_segment is not None:
                jax.block_until_ready(out[0].round)
                on_segment(0)
            return out
        local_RxC = sums_RxC = pending = batch_size = None
        for k, batches in enumerate(segments):
            if local_RxC is None:
                batch_size = int(np.shape(batches["example_mask"])[_BATCH_AXIS])
                with _donation_where_it_fits():
                    local_RxC = self.begin_fn(
                        frozen, server, private_RxC, tasks_RxC, batch_size=batch_size, hparams=hparams
                    )
            first_step = np.int32(k * self.segment_steps)
            local_RxC, seg_sums = self.segment_fn(
                frozen, server, local_RxC, tasks_RxC, client_ids_RxC, batches, first_step, hparams
            )
            sums_RxC = seg_sums if sums_RxC is None else self.add_fn(sums_RxC, seg_sums)
            if pending is not None:  # k is queued behind k - 1: wait for k - 1 only (inputs on
                _finished(pending, on_segment)  # device: k - 1, k and the one prefetched next)
            pending = (k, seg_sums)
        if local_RxC is None:
            raise ValueError("SegmentedRound: a round needs at least one segment of batches")
        _finished(pending, on_segment)
        with _donation_where_it_fits():
            return self.end_fn(
                frozen, server, local_RxC, sums_RxC, tasks_RxC, batch_size=batch_size, hparams=hparams
            )


@contextlib.contextmanager
def _donation_where_it_fits():
    """begin and end change the state's structure (private <-> local), so only some donated
    buffers find an output of their shape; JAX's warning about the others is expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Some donated buffers were not usable")
        yield


def _finished(pending: tuple[int, PyTree], on_segment: Callable[[int], None] | None) -> None:
    index, outputs = pending
    jax.block_until_ready(outputs)
    if on_segment is not None:
        on_segment(index)
