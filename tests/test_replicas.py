"""R federations in one program equal R separate rounds built with each replica's own values."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_model as toy
from feddat_jax.fl import hparams as hparams_lib
from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedAvg, FedAvgConfig, FedDAT, FedDATConfig
from feddat_jax.fl.privacy import make_dp_aggregator
from feddat_jax.fl.replicas import make_replica_eval_fn, make_replica_round_fn, stack_replicas
from feddat_jax.fl.evaluation import make_eval_fn
from feddat_jax.fl.round import make_round_fn
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import gather, init_server_state

SIZES, KINDS, REAL = (3, 10, 7, 6), (0, 1, 0, 1), (5, 3, 4, 5)
A, B = 5, 4
OPTIM = local_optim.LocalOptimConfig(learning_rate=3e-2, schedule_epochs=2.0)
COHORTS = ([0, 1, 3], [1, 2, 3], [0, 2, 3])  # every replica trains its own cohort
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
                (3e-2, 2.0, 0.9, 1.0),
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
                (0.0, 0.1, 0.7, 0.05),
                (0.5, 0.0, 1.3, 0.2),
            ]
        ],
    ),
}


def aggregator_for(kind, values):
    if kind == "dp":
        return make_dp_aggregator(values["dp.clip_norm"], values["dp.noise_multiplier"])
    return MeanAggregator("weighted")


@pytest.mark.parametrize("layout", ["vmap", "fold"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_replica_round_equals_separate_rounds(case, layout):
    build, server_name, agg_kind, values = CASES[case]
    base = build(values[0])
    examples, batches, frozen, shared, private, private_C, tasks = toy.cohort(
        base, SIZES, KINDS, REAL, A, B
    )
    # Separate runs: each replica's algorithm, aggregator and server optimizer built with its
    # own constants, its own server key, two rounds.
    separate = []
    for r, vals in enumerate(values):
        tx = make_server_optimizer(
            server_name, learning_rate=vals.get(hparams_lib.SERVER_LEARNING_RATE, 1.0)
        )
        run = make_round_fn(build(vals), tx, aggregator_for(agg_kind, vals))
        server = init_server_state(shared, tx, jax.random.key(10 + r))
        priv = private_C
        for _ in range(ROUNDS):
            ids = np.asarray(COHORTS[r])
            server, new, metrics = run(
                frozen,
                server,
                gather(priv, ids),
                gather(tasks, ids),
                jnp.asarray(ids),
                gather(batches, ids),
            )
            priv = jax.tree.map(lambda x, v: x.at[ids].set(v), priv, new)
        separate.append((server, priv, metrics))

    # One program: the swept values are traced, the server optimizer has learning rate 1.
    tx1 = make_server_optimizer(server_name, learning_rate=1.0)
    run_R = make_replica_round_fn(base, tx1, aggregator_for(agg_kind, values[0]), layout=layout)
    hparams_R = {k: jnp.asarray([v[k] for v in values], jnp.float32) for k in values[0]}
    server_R = stack_replicas(
        [init_server_state(shared, tx1, jax.random.key(10 + r)) for r in range(len(values))]
    )
    priv_R = stack_replicas([private_C] * len(values))
    ids_R = np.asarray(COHORTS)
    for _ in range(ROUNDS):
        server_R, new, metrics_R = run_R(
            frozen,
            server_R,
            jax.tree.map(lambda x: x[np.arange(3)[:, None], ids_R], priv_R),
            jax.tree.map(lambda x: x[ids_R], tasks),
            jnp.asarray(ids_R),
            jax.tree.map(lambda x: x[ids_R], batches),
            hparams_R,
        )
        priv_R = jax.tree.map(lambda x, v: x.at[np.arange(3)[:, None], ids_R].set(v), priv_R, new)

    for r, (server, priv, metrics) in enumerate(separate):
        pick = lambda t: jax.tree.map(lambda x: x[r], t)
        assert max_diff(pick(server_R.shared), server.shared) <= 1e-5
        assert max_diff(pick(server_R.opt_state), server.opt_state) <= 1e-5
        assert max_diff(pick(priv_R), priv) <= 1e-5
        assert max_diff(pick(metrics_R), metrics) <= 1e-5
    # the replicas really differ (so the comparison above is not vacuous)
    assert max_diff(separate[0][0].shared, separate[1][0].shared) > 1e-3
