"""R federations as ONE program: the replica axis of a sweep.

A sweep (``train.sweep``) runs R independent federations (other seeds, learning rates,
temperatures, ...) that share the frozen backbone and every shape. Their state is stacked on a
leading replica axis R:

    run(frozen, server_R, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxS, hparams_R)
        -> (server_R, private_RxC, {"clients": metrics_RxC, "server": metrics_R})

``server_R`` is a ``ServerState`` whose every leaf is stacked [R] (each replica has its own key,
so its own DP noise), ``hparams_R`` the swept scalars [R] (``fl.hparams``), and every cohort
value is [R, C, ...]: replica r's own cohort, private states and data order. The frozen backbone
is one argument, never stacked. Three layouts compute the same numbers:

* ``"vmap"``: ``vmap`` over R of the one-federation round (``fl.round``), around its cohort
  ``vmap``; on a mesh the cohort axis C is sharded over ``clients`` (inputs ``P(None,
  "clients")``), so every device runs its share of every replica's cohort.
* ``"fold"``: the R cohorts folded into one client axis of R·C slots (each slot carries its
  replica's server values and hyperparameters), one ``map_clients`` over them, then the server
  step ``vmap``-ed over R.
* ``"map"``: one replica after another inside the one program (``lax.map`` over R): one compile
  and one start-up for the sweep, but only one replica's activations at a time (for devices whose
  caches a whole vmapped sweep overflows, e.g. CPUs at base size).

``benchmarks/bench_sweep.py`` measures all three (``benchmarks/RESULTS.md``); :data:`DEFAULT_LAYOUT`
is the measured choice. Evaluation runs every replica in one call with the test data passed once.
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
from feddat_jax.fl.round import local_epoch, make_round_fn, round_keys, server_step

PyTree = Any
LAYOUTS = ("vmap", "fold", "map")
DEFAULT_LAYOUT = "vmap"


def stack_replicas(per_replica: list[PyTree]) -> PyTree:
    """R pytrees of one structure -> one pytree with a leading replica axis (host numpy stays
    numpy; typed PRNG keys are stacked as keys)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *per_replica)


def _folded_round(
    algorithm: LocalAlgorithm,
    server_tx: optax.GradientTransformation,
    aggregator: Aggregator,
    mesh: Mesh | None,
    chunk_size: int | None,
) -> Callable:
    def run(frozen, server_R, private_RxC, tasks_RxC, client_ids_RxC, batches_RxCxS, hparams_R):
        replicas, cohort = client_ids_RxC.shape[:2]
        train_key_R, agg_key_R = jax.vmap(round_keys)(server_R)

        def fold(tree):  # [R, C, ...] -> [R·C, ...]
            return jax.tree.map(lambda x: x.reshape((replicas * cohort,) + x.shape[2:]), tree)

        def unfold(tree):  # [R·C, ...] -> [R, C, ...]
            return jax.tree.map(lambda x: x.reshape((replicas, cohort) + x.shape[1:]), tree)

        def per_slot(tree):  # [R, ...] -> [R·C, ...]: each slot gets its replica's value
            return jax.tree.map(lambda x: jnp.repeat(x, cohort, axis=0), tree)

        def epoch(shared, round_index, train_key, hparams, private, tasks, client_id, batches_S):
            bound = hparams_lib.bind_algorithm(algorithm, hparams)
            return local_epoch(
                bound, frozen, shared, round_index, train_key, private, tasks, client_id, batches_S
            )

        delta, private, metrics = placement.map_clients(
            epoch, in_axes=(0,) * 8, mesh=mesh, chunk_size=chunk_size
        )(
            per_slot(server_R.shared),
            per_slot(server_R.round),
            per_slot(train_key_R),
            per_slot(hparams_R),
            fold(private_RxC),
            fold(tasks_RxC),
            fold(client_ids_RxC),
            fold(batches_RxCxS),
        )

        def step(server, delta_C, num_examples_C, agg_key, hparams):
            return server_step(
                server_tx, aggregator, server, delta_C, num_examples_C, agg_key, hparams
            )

        server_R, agg_metrics = jax.vmap(step)(
            server_R, unfold(delta), tasks_RxC.num_examples, agg_key_R, hparams_R
        )
        return server_R, unfold(private), {"clients": unfold(metrics), "server": agg_metrics}

    return run


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
    """The round of R federations at once (see the module docstring); jitted once, the cohorts'
    private buffers donated."""
    if layout == "vmap":
        one = make_round_fn(
            algorithm, server_tx, aggregator, mesh=mesh, chunk_size=chunk_size, jit=False
        )
        run = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0, 0))
    elif layout == "fold":
        run = _folded_round(algorithm, server_tx, aggregator, mesh, chunk_size)
    elif layout == "map":
        one = make_round_fn(
            algorithm, server_tx, aggregator, mesh=mesh, chunk_size=chunk_size, jit=False
        )

        def run(frozen, *per_replica):
            return jax.lax.map(lambda xs: one(frozen, *xs), per_replica)

    else:
        raise ValueError(f"unknown replica layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
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
