"""R federations as ONE program: the replica axis every run has.

Every run trains R independent federations that share the frozen backbone and every shape: the
seeds and scalar hyperparameters of a sweep (``train.sweep``), or R = 1 for a run that sweeps
nothing. This module is the ONE place that maps the one-federation round (``fl.round``) and
evaluation (``fl.evaluation``) over R:

    run(frozen, server_R, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxS, hparams_R)
        -> (server_R, private_RxC, {"clients": metrics_RxC, "server": metrics_R})

``server_R`` is a ``ServerState`` whose every leaf is stacked [R] (each replica has its own key,
so its own DP noise), ``hparams_R`` the swept scalars [R] (``fl.hparams``; ``{}`` when none are
swept: the config's constants are compiled in), and every cohort value is [R, C, ...]: replica r's
own cohort, private states and data order. The frozen backbone is one argument, never stacked.
Like the one-federation round, it is three pieces (begin, K-step segment, end:
:func:`make_replica_round_parts`), so ``fl.segments.SegmentedRound`` runs the epoch in segments.
On a mesh the cohort axis C is sharded over ``clients`` (inputs ``P(None, "clients")``), so every
device runs its share of every replica's cohort. Evaluation runs every replica in one call with
the test data passed once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from feddat_jax.fl.aggregation import Aggregator
from feddat_jax.fl.algorithms.base import LocalAlgorithm
from feddat_jax.fl.evaluation import make_eval_fn
from feddat_jax.fl.round import RoundParts, make_round_parts

PyTree = Any


def stack_replicas(per_replica: list[PyTree]) -> PyTree:
    """R pytrees of one structure -> one pytree with a leading replica axis (host numpy stays
    numpy; typed PRNG keys are stacked as keys)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *per_replica)


def map_replicas(fn: Callable, in_axes: tuple = 0) -> Callable:
    """``fn`` (written for ONE federation) over the replica axis R of its arguments: ``vmap``,
    ``in_axes`` as there (None: an argument every replica shares, e.g. the frozen backbone).

    R = 1 calls ``fn`` on the replica itself and adds the axis back: XLA fuses a size-1 ``vmap``
    differently, which moved FedDAT's KD terms by ~1e-7 relative, so this keeps a run that sweeps
    nothing bit-identical to the one-federation program (tests/test_replica_axis.py).
    """

    def mapped(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        stacked = [a for a, ax in zip(args, axes) if ax is not None]
        if jax.tree.leaves(stacked)[0].shape[0] != 1:
            return jax.vmap(fn, in_axes=in_axes)(*args)
        one = [a if ax is None else jax.tree.map(lambda x: x[0], a) for a, ax in zip(args, axes)]
        return jax.tree.map(lambda x: x[None], fn(*one))

    return mapped


def _over_replicas(parts: RoundParts) -> RoundParts:
    """The one-federation pieces mapped over the replica axis R (the frozen backbone and
    ``batch_size`` are shared; every other argument is stacked [R, ...])."""

    def begin(frozen, server_R, private_RxC, tasks_RxC, batch_size, hparams=None):
        return map_replicas(
            lambda server, private, tasks, hparams: parts.begin(
                frozen, server, private, tasks, batch_size, hparams
            )
        )(server_R, private_RxC, tasks_RxC, hparams or {})

    def segment(
        frozen,
        server_R,
        local_RxC,
        tasks_RxC,
        client_ids_RxC,
        batches_RxCxK,
        first_step,
        hparams=None,
    ):
        return map_replicas(
            lambda server, local, tasks, client_ids, batches, hparams: parts.segment(
                frozen, server, local, tasks, client_ids, batches, first_step, hparams
            )
        )(server_R, local_RxC, tasks_RxC, client_ids_RxC, batches_RxCxK, hparams or {})

    def end(frozen, server_R, local_RxC, sums_RxC, tasks_RxC, batch_size, hparams=None):
        return map_replicas(
            lambda server, local, sums, tasks, hparams: parts.end(
                frozen, server, local, sums, tasks, batch_size, hparams
            )
        )(server_R, local_RxC, sums_RxC, tasks_RxC, hparams or {})

    return RoundParts(begin, segment, end)


def make_replica_round_parts(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
) -> RoundParts:
    """The begin / segment / end pieces (``fl.round.RoundParts``) of R federations at once: the
    same signatures with every server and cohort value stacked ``[R, ...]`` and the swept
    ``hparams`` (``[R]`` each) last; ``fl.segments.SegmentedRound`` runs them in segments."""
    parts = make_round_parts(algorithm, server_tx, aggregator, mesh=mesh, chunk_size=chunk_size)
    return _over_replicas(parts)


def make_replica_round_fn(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    jit: bool = True,
) -> Callable:
    """The round of R federations at once, the whole local epoch in one call (see the module
    docstring); jitted once, the cohorts' private buffers donated."""
    parts = make_replica_round_parts(
        algorithm, server_tx, aggregator, mesh=mesh, chunk_size=chunk_size
    )

    def run(
        frozen, server_R, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxS, hparams_R=None
    ):
        batch_size = batches_RxCxS["example_mask"].shape[3]
        local = parts.begin(frozen, server_R, private_RxC, tasks_RxC, batch_size, hparams_R)
        first = jnp.zeros((), jnp.int32)
        local, sums = parts.segment(
            frozen, server_R, local, tasks_RxC, client_ids_RxC, batches_RxCxS, first, hparams_R
        )
        return parts.end(frozen, server_R, local, sums, tasks_RxC, batch_size, hparams_R)

    return jax.jit(run, donate_argnums=(2,)) if jit else run


def make_replica_eval_fn(
    algorithm: LocalAlgorithm,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    jit: bool = True,
) -> Callable[..., dict[str, jax.Array]]:
    """``eval_fn(frozen, round_start_shared_R, shared_R, private_RxN, tasks_RxN, batches_NxS,
    train_RxNxK=None, hparams_R=None)`` -> ``{variant: score_RxN}``: every replica's clients on
    the same test data (passed once). ``train_RxNxK``, each replica's own finetune batches (its
    seed's data order), makes every client finetune before it is scored (``fl.evaluation``), with
    its replica's swept ``hparams_R``."""
    mapped = map_replicas(
        make_eval_fn(algorithm, mesh=mesh, chunk_size=chunk_size),
        in_axes=(None, 0, 0, 0, 0, None, 0, 0),
    )

    def run(
        frozen, start_R, shared_R, private_RxN, tasks_RxN, batches_NxS, train=None, hparams=None
    ):
        return mapped(
            frozen, start_R, shared_R, private_RxN, tasks_RxN, batches_NxS, train, hparams or {}
        )

    return jax.jit(run) if jit else run
