"""One federated round as pure functions: begin, local steps (whole epoch or a segment), end.

    run_round(frozen, server, private_C, tasks_C, client_ids_C, batches_CxS, hparams={})
        -> (server, private_C, {"clients": metrics_C, "server": metrics})

A round is three pieces (:func:`make_round_parts`), each ``map_clients`` (vmap over the cohort C)
of a function written for ONE client:

* ``begin``: every client's fresh local state from the server's shared params and its private
  state (``algorithm.begin_round``);
* ``segment``: a ``lax.scan`` over K local steps (steps ``first_step .. first_step + K - 1`` of
  the epoch), carrying the local state and returning the sums of the step metrics over active
  steps; called once with the whole epoch (K = S) or once per segment (``fl.segments``);
* ``end``: ``algorithm.end_round``, the shared deltas reduced over the client axis and the
  server optimizer's step on the pseudo-gradient ``-(mean delta)``.

:func:`fl.replicas.make_replica_round_fn` composes them into ONE jitted call per round, mapped
over the run's replica axis R (R = 1 unless a sweep asks for more). Clients with fewer examples
are padded to the cohort's S and B; a padded example is masked out of every loss and a step with
no real example is a no-op (params, optimizer state and schedule counter unchanged), so each
client gets exactly the numbers it would get alone, and a segment padded with empty steps changes
nothing. Step ``i`` of a client draws its key from ``fold_in(fold_in(train_key, client_id), i)``,
so how the epoch is cut into segments does not change the numbers.

``hparams`` (``fl.hparams``) holds the scalar hyperparameters a sweep varies, as traced values;
``{}`` or None (nothing swept) compiles the very program the config's constants describe. Every
piece takes it last. The round is written for ONE federation; ``fl.replicas`` is the one place
that maps it over the replica axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from feddat_jax.fl import hparams as hparams_lib
from feddat_jax.fl import placement
from feddat_jax.fl.aggregation import Aggregator, tree_delta
from feddat_jax.fl.algorithms.base import ClientContext, LocalAlgorithm
from feddat_jax.fl.state import ClientTasks, ServerState

PyTree = Any
STEPS = "steps"  # the metric counting a client's active (non-empty) local steps


def client_context(
    frozen, global_shared, tasks: ClientTasks, batch_size: int, round_index
) -> ClientContext:
    num_batches = jnp.ceil(tasks.num_examples.astype(jnp.float32) / batch_size)
    return ClientContext(
        frozen=frozen,
        global_shared=global_shared,
        answer_mask=tasks.answer_mask,
        task_kind=tasks.task_kind,
        num_batches=num_batches,
        round=round_index,
    )


def round_keys(server: ServerState) -> tuple[jax.Array, jax.Array]:
    """(training key, aggregation key) of the round; keyed by the round index alone."""
    train_key, agg_key = jax.random.split(jax.random.fold_in(server.rng, server.round))
    return train_key, agg_key


def add_sums(a: dict[str, jax.Array], b: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Running metric sums of two pieces of an epoch (segments) added up."""
    return jax.tree.map(jnp.add, a, b)


# ---------------------------------------------------------------------------------- one client
def _context(frozen, server: ServerState, tasks: ClientTasks, batch_size: int) -> ClientContext:
    return client_context(frozen, server.shared, tasks, batch_size, server.round)


def client_steps(
    algorithm: LocalAlgorithm, frozen, server, local, tasks, client_id, batches_K, first_step
):
    """K local steps of one client (steps ``first_step ..`` of its epoch); empty steps are no-ops.

    Returns the new local state and the sums over the active steps of every step metric, plus
    ``steps``, the number of active steps.
    """
    batch_size = batches_K["example_mask"].shape[1]
    ctx = _context(frozen, server, tasks, batch_size)
    train_key, _ = round_keys(server)
    client_key = jax.random.fold_in(train_key, client_id)
    return scan_steps(algorithm, ctx, local, batches_K, client_key, first_step)


def scan_steps(
    algorithm: LocalAlgorithm, ctx: ClientContext, local, batches_K, client_key, first_step
):
    """:func:`client_steps` given the client's context and key: the one loop of local steps, which
    a training round and an evaluation's finetune (``fl.evaluation``) both run. Step ``i`` draws
    ``fold_in(client_key, i)``."""
    num_steps = batches_K["example_mask"].shape[0]

    def step(local, xs):
        batch, step_index = xs
        active = jnp.sum(batch["example_mask"]) > 0
        new_local, metrics = algorithm.local_step(
            ctx, local, batch, jax.random.fold_in(client_key, step_index)
        )
        local = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_local, local)
        return local, (metrics, active)

    steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
    local, (metrics_K, active_K) = jax.lax.scan(step, local, (batches_K, steps))
    sums = {k: jnp.sum(jnp.where(active_K, v, 0), axis=0) for k, v in metrics_K.items()}
    sums[STEPS] = jnp.sum(active_K.astype(jnp.int32))
    return local, sums


def end_client(algorithm: LocalAlgorithm, frozen, server, local, sums, tasks, batch_size: int):
    """``(delta of the shared params, new private state, metrics)`` of one client; a metric is its
    mean over the client's active steps."""
    ctx = _context(frozen, server, tasks, batch_size)
    shared, private = algorithm.end_round(ctx, local)
    steps = sums[STEPS]
    metrics = {k: v / jnp.maximum(steps, 1) for k, v in sums.items() if k != STEPS}
    metrics[STEPS] = steps
    return tree_delta(shared, server.shared), private, metrics


def server_step(
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    server: ServerState,
    delta_C,
    num_examples_C,
    agg_key,
    hparams: hparams_lib.HParams,
) -> tuple[ServerState, dict[str, jax.Array]]:
    """Aggregate the cohort's deltas and step the server optimizer on ``-(mean delta)``."""
    aggregator = hparams_lib.bind_aggregator(aggregator, hparams)
    mean_delta, agg_metrics = aggregator(delta_C, num_examples_C, agg_key)
    pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
    updates, opt_state = server_tx.update(pseudo_grad, server.opt_state, server.shared)
    updates = hparams_lib.scale_server_updates(updates, hparams)
    server = server.replace(
        round=server.round + 1,
        shared=optax.apply_updates(server.shared, updates),
        opt_state=opt_state,
    )
    return server, agg_metrics


# ------------------------------------------------------------------------------- the cohort
class RoundParts(NamedTuple):
    """The round's pure pieces over the cohort (unjitted; vmappable over a further axis).

    begin(frozen, server, private_C, tasks_C, batch_size, hparams=None) -> local_C
    segment(frozen, server, local_C, tasks_C, client_ids_C, batches_CxK, first_step, hparams=None)
        -> (local_C, sums_C)                       # sums of several segments: add_sums
    end(frozen, server, local_C, sums_C, tasks_C, batch_size, hparams=None)
        -> (server, private_C, {"clients": metrics_C, "server": metrics})
    """

    begin: Callable[..., PyTree]
    segment: Callable[..., tuple[PyTree, dict]]
    end: Callable[..., tuple[ServerState, PyTree, dict]]


def make_round_parts(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
) -> RoundParts:
    """The begin / segment / end functions of a round (see the module docstring)."""

    def over_clients(fn, in_axes):
        return placement.map_clients(fn, in_axes=in_axes, mesh=mesh, chunk_size=chunk_size)

    def begin(
        frozen, server: ServerState, private_C, tasks_C: ClientTasks, batch_size: int, hparams=None
    ):
        bound = hparams_lib.bind_algorithm(algorithm, hparams or {})
        return over_clients(
            lambda private, tasks: bound.begin_round(
                _context(frozen, server, tasks, batch_size), private
            ),
            (0, 0),
        )(private_C, tasks_C)

    def segment(
        frozen,
        server: ServerState,
        local_C,
        tasks_C,
        client_ids_C,
        batches_CxK,
        first_step,
        hparams=None,
    ):
        bound = hparams_lib.bind_algorithm(algorithm, hparams or {})
        return over_clients(
            lambda local, tasks, client_id, batches: client_steps(
                bound, frozen, server, local, tasks, client_id, batches, first_step
            ),
            (0, 0, 0, 0),
        )(local_C, tasks_C, client_ids_C, batches_CxK)

    def end(
        frozen,
        server: ServerState,
        local_C,
        sums_C,
        tasks_C: ClientTasks,
        batch_size: int,
        hparams=None,
    ):
        hparams = hparams or {}
        bound = hparams_lib.bind_algorithm(algorithm, hparams)
        _, agg_key = round_keys(server)
        delta_C, private_C, metrics_C = over_clients(
            lambda local, sums, tasks: end_client(
                bound, frozen, server, local, sums, tasks, batch_size
            ),
            (0, 0, 0),
        )(local_C, sums_C, tasks_C)
        server, agg_metrics = server_step(
            server_tx, aggregator, server, delta_C, tasks_C.num_examples, agg_key, hparams
        )
        return server, private_C, {"clients": metrics_C, "server": agg_metrics}

    return RoundParts(begin, segment, end)
