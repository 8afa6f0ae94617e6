"""One federation's round, called without the replica axis: the library runs every round over R
replicas (``fl.replicas``; a run that sweeps nothing is R = 1), and the tests that check ONE
federation against a per-client loop or a hand computation call it through this wrapper."""

from __future__ import annotations

import jax

from feddat_jax.fl.replicas import make_replica_round_fn


def with_replica_axis(tree):
    return jax.tree.map(lambda x: x[None], tree)


def without_replica_axis(tree):
    return jax.tree.map(lambda x: x[0], tree)


def make_round_fn(algorithm, server_tx, aggregator, *, mesh=None, chunk_size=None):
    """``run(frozen, server, private_C, tasks_C, client_ids_C, batches_CxS, hparams=None)`` ->
    ``(server, private_C, metrics)``: the library's round at R = 1, jitted, axis added and
    dropped inside the program."""
    run_R = make_replica_round_fn(
        algorithm, server_tx, aggregator, mesh=mesh, chunk_size=chunk_size, jit=False
    )

    def run(frozen, server, private_C, tasks_C, client_ids_C, batches_CxS, hparams=None):
        stacked = with_replica_axis((server, private_C, tasks_C, client_ids_C, batches_CxS))
        out = run_R(frozen, *stacked, with_replica_axis(hparams or {}))
        return without_replica_axis(out)

    return jax.jit(run)
