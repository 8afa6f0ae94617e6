"""R federations in one program equal R separate rounds built with each replica's own values."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_model as toy
from one_federation import make_round_fn

from feddat_jax.fl import hparams as hparams_lib
from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedAvg, FedAvgConfig, FedDAT, FedDATConfig
from feddat_jax.fl.evaluation import make_eval_fn
from feddat_jax.fl.privacy import make_dp_aggregator
from feddat_jax.fl.replicas import make_replica_eval_fn, make_replica_round_fn, stack_replicas
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import gather, init_server_state

SIZES, KINDS, REAL = (3, 10, 7, 6), (0, 1, 0, 1), (5, 3, 4, 5)
A, B = 5, 4
OPTIM = local_optim.LocalOptimConfig(learning_rate=3e-2, schedule_epochs=2.0)
COHORTS = ([0, 1, 3], [1, 2, 3])  # every replica trains its own cohort
# One round: the replica axis changes float reduction order (batched matmuls), and a later
# round's first AdamW step, m/(sqrt(v)+eps), can turn a 1e-9 difference in a near-zero gradient
# into a sign flip of a whole lr-sized step; the loop test runs several rounds of a real model.
ROUNDS = 1


def max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def feddat(values):
    optim = dataclasses.replace(OPTIM, learning_rate=values["optim.learning_rate"])
    cfg = FedDATConfig(
        optim=optim,
        temperature=values["feddat.temperature"],
        kd_weight=values["feddat.kd_weight"],
    )
    return FedDAT(toy.forward, cfg)


def fedprox(values):
    optim = dataclasses.replace(OPTIM, warmup_fraction=values["optim.warmup_fraction"])
    return FedAvg(toy.forward, FedAvgConfig(prox_mu=values["fedprox_mu"], optim=optim))


CASES = {
    "feddat": (
        feddat,
        "fedadam",
        None,
        [
            {
                "optim.learning_rate": lr,
                "feddat.temperature": t,
                "feddat.kd_weight": kd,
                "server.hyper.learning_rate": slr,
            }
            for lr, t, kd, slr in [
                (3e-2, 3.0, 0.5, 0.1),
                (1e-2, 1.0, 0.2, 0.3),
            ]
        ],
    ),
    "fedprox-dp": (
        fedprox,
        "fedavgm",
        "dp",
        [
            {
                "optim.warmup_fraction": w,
                "fedprox_mu": mu,
                "dp.noise_multiplier": nm,
                "dp.clip_norm": clip,
            }
            for w, mu, nm, clip in [
                (0.1, 0.5, 0.0, 1e3),
                (0.5, 0.1, 0.7, 0.05),
            ]
        ],
    ),
}


def aggregator_for(kind, values):
    if kind == "dp":
        return make_dp_aggregator(values["dp.clip_norm"], values["dp.noise_multiplier"])
    return MeanAggregator("weighted")


@functools.cache
def separate_runs(case):
    """Each replica alone: its algorithm, aggregator and server optimizer built with its own
    constants, its own server key and cohort; ROUNDS rounds."""
    build, server_name, agg_kind, values = CASES[case]
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(
        build(values[0]), SIZES, KINDS, REAL, A, B
    )
    out = []
    for r, vals in enumerate(values):
        tx = make_server_optimizer(
            server_name, learning_rate=vals.get(hparams_lib.SERVER_LEARNING_RATE, 1.0)
        )
        run = make_round_fn(build(vals), tx, aggregator_for(agg_kind, vals))
        server = init_server_state(shared, tx, jax.random.key(10 + r))
        priv, ids = private_C, np.asarray(COHORTS[r])
        for _ in range(ROUNDS):
            server, new, metrics = run(
                frozen,
                server,
                gather(priv, ids),
                gather(tasks, ids),
                jnp.asarray(ids),
                gather(batches, ids),
            )
            priv = jax.tree.map(lambda x, v, ids=ids: x.at[ids].set(v), priv, new)
        out.append((server, priv, metrics))
    return out


@pytest.mark.parametrize(
    "case,chunk_size",
    [
        ("feddat", None),
        ("feddat", 1),  # the "scan" strategy: lax.map over each replica's clients
        ("fedprox-dp", None),
        ("fedprox-dp", 2),
    ],
)
def test_replica_round_equals_separate_rounds(case, chunk_size):
    build, server_name, agg_kind, values = CASES[case]
    base = build(values[0])
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(base, SIZES, KINDS, REAL, A, B)
    # One program: the swept values are traced, the server optimizer has learning rate 1.
    tx1 = make_server_optimizer(server_name, learning_rate=1.0)
    run_R = make_replica_round_fn(
        base, tx1, aggregator_for(agg_kind, values[0]), chunk_size=chunk_size
    )
    hparams_R = {k: jnp.asarray([v[k] for v in values], jnp.float32) for k in values[0]}
    server_R = stack_replicas(
        [init_server_state(shared, tx1, jax.random.key(10 + r)) for r in range(len(values))]
    )
    priv_R = stack_replicas([private_C] * len(values))
    ids_R, rows = np.asarray(COHORTS), np.arange(len(values))[:, None]
    for _ in range(ROUNDS):
        server_R, new, metrics_R = run_R(
            frozen,
            server_R,
            jax.tree.map(lambda x: x[rows, ids_R], priv_R),
            jax.tree.map(lambda x: x[ids_R], tasks),
            jnp.asarray(ids_R),
            jax.tree.map(lambda x: x[ids_R], batches),
            hparams_R,
        )
        priv_R = jax.tree.map(lambda x, v: x.at[rows, ids_R].set(v), priv_R, new)

    separate = separate_runs(case)
    for r, (server, priv, metrics) in enumerate(separate):
        pick = lambda t: jax.tree.map(lambda x: x[r], t)  # noqa: B023
        assert max_diff(pick(server_R.shared), server.shared) <= 1e-5
        assert max_diff(pick(server_R.opt_state), server.opt_state) <= 1e-5
        assert max_diff(pick(priv_R), priv) <= 1e-5
        assert max_diff(pick(metrics_R), metrics) <= 1e-5
    # the replicas really differ (so the comparison above is not vacuous)
    assert max_diff(separate[0][0].shared, separate[1][0].shared) > 1e-3


def test_replica_eval_equals_separate_evals():
    """Every replica's clients on the same test data, in one call (per-example scores)."""
    base = feddat(CASES["feddat"][3][0])
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(base, SIZES, KINDS, REAL, A, B)
    noise = [jax.tree.map(lambda x, r=r: x + 0.1 * r, private_C) for r in range(2)]
    shared_R = [jax.tree.map(lambda x, r=r: x - 0.2 * r, shared) for r in range(2)]
    tasks_R = stack_replicas([tasks] * 2)
    got = make_replica_eval_fn(base)(
        frozen, stack_replicas(shared_R), stack_replicas(shared_R[::-1]), stack_replicas(noise),
        tasks_R, batches,
    )  # fmt: skip
    one = jax.jit(make_eval_fn(base))
    for r in range(2):
        want = one(frozen, shared_R[r], shared_R[1 - r], noise[r], tasks, batches)
        assert max_diff(jax.tree.map(lambda x, r=r: x[r], got), want) <= 1e-4
    # the replicas' scores differ (some example is right in one and wrong in the other)
    assert max_diff(jax.tree.map(lambda x: x[0], got), jax.tree.map(lambda x: x[1], got)) > 0.5
