"""One federated round as ONE pure, jit-compiled function.

    run_round(frozen, server, private_C, tasks_C, client_ids_C, batches_CxS)
        -> (server, private_C, {"clients": metrics_C, "server": metrics})

Every sampled client's whole local epoch runs inside: ``map_clients`` (vmap over the cohort C) of
a ``lax.scan`` over its S local steps. Clients with fewer examples are padded to the cohort's S
and B; a padded example is masked out of every loss and a step with no real example is a no-op
(params, optimizer state and schedule counter unchanged), so each client gets exactly the numbers
it would get alone. Then the shared deltas are reduced over the client axis and the server
optimizer steps on the pseudo-gradient ``-(mean delta)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from feddat_jax.fl import placement
from feddat_jax.fl.aggregation import Aggregator, tree_delta
from feddat_jax.fl.algorithms.base import ClientContext, LocalAlgorithm
from feddat_jax.fl.state import ClientTasks, ServerState

PyTree = Any
RoundFn = Callable[..., tuple[ServerState, PyTree, dict[str, jax.Array]]]


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


def local_epoch(
    algorithm: LocalAlgorithm,
    frozen,
    global_shared,
    round_index,
    train_key,
    private,
    tasks: ClientTasks,
    client_id,
    batches_S,
):
    """One client's whole local epoch (written for one client; the round vmaps it)."""
    batch_size = batches_S["example_mask"].shape[1]
    ctx = client_context(frozen, global_shared, tasks, batch_size, round_index)
    client_key = jax.random.fold_in(train_key, client_id)
    num_steps = batches_S["example_mask"].shape[0]

    def step(local, xs):
        batch, step_index = xs
        active = jnp.sum(batch["example_mask"]) > 0
        new_local, metrics = algorithm.local_step(
            ctx, local, batch, jax.random.fold_in(client_key, step_index)
        )
        local = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_local, local)
        return local, (metrics, active)

    local = algorithm.begin_round(ctx, private)
    local, (metrics_S, active_S) = jax.lax.scan(step, local, (batches_S, jnp.arange(num_steps)))
    shared, private = algorithm.end_round(ctx, local)
    steps = jnp.sum(active_S)
    weights_S = active_S.astype(jnp.float32) / jnp.maximum(steps, 1)
    metrics = {k: jnp.sum(v * weights_S) for k, v in metrics_S.items()}
    metrics["steps"] = steps
    return tree_delta(shared, global_shared), private, metrics


def make_round_fn(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    jit: bool = True,
) -> RoundFn:
    """Build ``run_round`` for one run; jitted once (the cohort's private buffers are donated)."""

    def run_round(
        frozen, server: ServerState, private_C, tasks_C: ClientTasks, client_ids_C, batches_CxS
    ):
        train_key, agg_key = round_keys(server)

        def epoch(private, tasks, client_id, batches_S):
            return local_epoch(
                algorithm,
                frozen,
                server.shared,
                server.round,
                train_key,
                private,
                tasks,
                client_id,
                batches_S,
            )

        delta_C, private_C, metrics_C = placement.map_clients(
            epoch, in_axes=(0, 0, 0, 0), mesh=mesh, chunk_size=chunk_size
        )(private_C, tasks_C, client_ids_C, batches_CxS)
        mean_delta, agg_metrics = aggregator(delta_C, tasks_C.num_examples, agg_key)
        pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
        updates, opt_state = server_tx.update(pseudo_grad, server.opt_state, server.shared)
        server = server.replace(
            round=server.round + 1,
            shared=optax.apply_updates(server.shared, updates),
            opt_state=opt_state,
        )
        return server, private_C, {"clients": metrics_C, "server": agg_metrics}

    return jax.jit(run_round, donate_argnums=(2,)) if jit else run_round
