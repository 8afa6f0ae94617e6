"""R federations as ONE program: the replica axis of a sweep.

A sweep (``train.sweep``) runs R independent federations (other seeds, learning rates,
temperatures, ...) that share the frozen backbone and every shape. Their state is stacked on a
leading replica axis R:

    run(frozen, server_R, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxS, hparams_R)
        -> (server_R, private_RxC, {"clients": metrics_RxC, "server": metrics_R})

``server_R`` is a ``ServerState`` whose every leaf is stacked [R] (each replica has its own key,
so its own DP noise), ``hparams_R`` the swept scalars [R] (``fl.hparams``), and every cohort
value is [R, C, ...]: replica r's own cohort, private states and data order. The frozen backbone
is one argument, never stacked. Like the one-federation round, it is three pieces (begin, K-step
segment, end: :func:`make_replica_round_parts`), so ``fl.segments.SegmentedRound`` runs a sweep's
epoch in segments too. Three layouts compute the same numbers:

* ``"vmap"``: ``vmap`` over R of the one-federation round (``fl.round``), around its cohort
  ``vmap``; on a mesh the cohort axis C is sharded over ``clients`` (inputs ``P(None,
  "clients")``), so every device runs its share of every replica's cohort.
* ``"fold"``: the R cohorts folded into one client axis of R·C slots (each slot carries its
  replica's server values and hyperparameters), one ``map_clients`` over them per piece, then
  the server step ``vmap``-ed over R.
* ``"map"``: one replica after another inside the one program (``lax.map`` over R): one compile
  and one start-up for the sweep, but only one replica's activations at a time (for devices whose
  caches a whole vmapped sweep overflows, e.g. CPUs at base size).

``benchmarks/bench_sweep.py`` measures the layouts (``benchmarks/RESULTS.md``);
:data:`DEFAULT_LAYOUT` is the measured choice. Evaluation runs every replica in one call with the test data passed once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from feddat_jax.fl import hparams as hparams_lib
from feddat_jax.fl import placement
from feddat_jax.fl.aggregation import Aggregator
from feddat_jax.fl.algorithms.base import LocalAlgorithm
from feddat_jax.fl.evaluation import make_eval_fn
from feddat_jax.fl.round import (
    RoundParts,
    client_context,
    client_steps,
    end_client,
    make_round_parts,
    round_keys,
    server_step,
)

PyTree = Any
LAYOUTS = ("vmap", "fold", "map")
DEFAULT_LAYOUT = "vmap"


def stack_replicas(per_replica: list[PyTree]) -> PyTree:
    """R pytrees of one structure -> one pytree with a leading replica axis (host numpy stays
    numpy; typed PRNG keys are stacked as keys)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *per_replica)


def _lifted_parts(parts: RoundParts, layout: str) -> RoundParts:
    """The one-federation parts run for every replica: ``vmap`` over R, or ``lax.map`` over R
    (one replica after another inside the program)."""
    if layout == "vmap":
        over_replicas = jax.vmap
    else:

        def over_replicas(fn):
            return lambda *xs: jax.lax.map(lambda x: fn(*x), xs)

    def begin(frozen, server_R, private_RxC, tasks_RxC, batch_size, hparams=None):
        return over_replicas(
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
        return over_replicas(
            lambda server, local, tasks, client_ids, batches, hparams: parts.segment(
                frozen, server, local, tasks, client_ids, batches, first_step, hparams
            )
        )(server_R, local_RxC, tasks_RxC, client_ids_RxC, batches_RxCxK, hparams or {})

    def end(frozen, server_R, local_RxC, sums_RxC, tasks_RxC, batch_size, hparams=None):
        return over_replicas(
            lambda server, local, sums, tasks, hparams: parts.end(
                frozen, server, local, sums, tasks, batch_size, hparams
            )
        )(server_R, local_RxC, sums_RxC, tasks_RxC, hparams or {})

    return RoundParts(begin, segment, end)


def _folded_parts(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    mesh: Mesh | None,
    chunk_size: int | None,
) -> RoundParts:
    """The R cohorts folded into one client axis of R·C slots; each slot carries its replica's
    server values (without the optimizer state) and hyperparameters."""

    def over_slots(fn, num_args: int):
        return placement.map_clients(fn, in_axes=(0,) * num_args, mesh=mesh, chunk_size=chunk_size)

    def fold(tree):  # [R, C, ...] -> [R·C, ...]
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)

    def unfold(tree, replicas: int):  # [R·C, ...] -> [R, C, ...]
        return jax.tree.map(lambda x: x.reshape((replicas, -1) + x.shape[1:]), tree)

    def per_slot(server_R, hparams_R, cohort: int):  # [R, ...] -> [R·C, ...]
        def repeat(tree):
            return jax.tree.map(lambda x: jnp.repeat(x, cohort, axis=0), tree)

        return repeat(server_R.replace(opt_state=())), repeat(hparams_R)

    def bound(hparams):
        return hparams_lib.bind_algorithm(algorithm, hparams)

    def begin(frozen, server_R, private_RxC, tasks_RxC, batch_size, hparams=None):
        replicas, cohort = tasks_RxC.num_examples.shape

        def one(server, hparams, private, tasks):
            ctx = client_context(frozen, server.shared, tasks, batch_size, server.round)
            return bound(hparams).begin_round(ctx, private)

        slots = per_slot(server_R, hparams or {}, cohort)
        local = over_slots(one, 4)(*slots, fold(private_RxC), fold(tasks_RxC))
        return unfold(local, replicas)

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
        replicas, cohort = client_ids_RxC.shape[:2]

        def one(server, hparams, local, tasks, client_id, batches):
            return client_steps(
                bound(hparams), frozen, server, local, tasks, client_id, batches, first_step
            )

        slots = per_slot(server_R, hparams or {}, cohort)
        values = (local_RxC, tasks_RxC, client_ids_RxC, batches_RxCxK)
        return unfold(over_slots(one, 6)(*slots, *map(fold, values)), replicas)

    def end(frozen, server_R, local_RxC, sums_RxC, tasks_RxC, batch_size, hparams=None):
        replicas, cohort = tasks_RxC.num_examples.shape
        hparams_R = hparams or {}

        def one(server, hparams, local, sums, tasks):
            return end_client(bound(hparams), frozen, server, local, sums, tasks, batch_size)

        slots = per_slot(server_R, hparams_R, cohort)
        values = (local_RxC, sums_RxC, tasks_RxC)
        delta, private, metrics = unfold(over_slots(one, 5)(*slots, *map(fold, values)), replicas)

        def step(server, delta_C, num_examples_C, hparams):
            _, agg_key = round_keys(server)
            return server_step(
                server_tx, aggregator, server, delta_C, num_examples_C, agg_key, hparams
            )

        server_R, agg_metrics = jax.vmap(step)(server_R, delta, tasks_RxC.num_examples, hparams_R)
        return server_R, private, {"clients": metrics, "server": agg_metrics}

    return RoundParts(begin, segment, end)


def make_replica_round_parts(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    layout: str = DEFAULT_LAYOUT,
) -> RoundParts:
    """The begin / segment / end pieces (``fl.round.RoundParts``) of R federations at once: the
    same signatures with every server and cohort value stacked ``[R, ...]`` and the swept
    ``hparams`` (``[R]`` each) last; ``fl.segments.SegmentedRound`` runs them in segments."""
    if layout == "fold":
        return _folded_parts(algorithm, server_tx, aggregator, mesh, chunk_size)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown replica layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    parts = make_round_parts(algorithm, server_tx, aggregator, mesh=mesh, chunk_size=chunk_size)
    return _lifted_parts(parts, layout)


def make_replica_round_fn(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    layout: str = DEFAULT_LAYOUT,
    jit: bool = True,
) -> Callable:
    """The round of R federations at once, the whole local epoch in one call (see the module
    docstring); jitted once, the cohorts' private buffers donated."""
    parts = make_replica_round_parts(
        algorithm, server_tx, aggregator, mesh=mesh, chunk_size=chunk_size, layout=layout
    )

    def run(frozen, server_R, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxS, hparams_R):
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
    """``eval_fn(frozen, round_start_shared_R, shared_R, private_RxN, tasks_RxN, batches_NxS)``
    -> ``{variant: score_RxN}``: every replica's clients on the same test data (passed once)."""
    one = make_eval_fn(algorithm, mesh=mesh, chunk_size=chunk_size, jit=False)
    run = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, None))
    return jax.jit(run) if jit else run
