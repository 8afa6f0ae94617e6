"""The vmapped, scanned, masked round equals training each client alone in a Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_model as toy
from one_federation import make_round_fn
from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedAvg, FedAvgConfig, FedDAT, FedDATConfig
from feddat_jax.fl.round import client_context, round_keys
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import gather, init_server_state, stack_clients

SIZES = (3, 10, 17, 6, 9)
KINDS = (0, 1, 0, 1, 0)
REAL = (5, 3, 4, 5, 2)
A, B = 5, 4
OPTIM = local_optim.LocalOptimConfig(learning_rate=3e-2, schedule_epochs=2.0)


def setup(algorithm):
    return toy.cohort(algorithm, SIZES, KINDS, REAL, A, B)


def loop_reference(algorithm, frozen, server, private, examples, tasks, weights_kind):
    """Each client alone with its own unpadded batches, then the server average."""
    train_key, _ = round_keys(server)
    deltas, privates = [], []
    for cid, ex in enumerate(examples):
        task = jax.tree.map(lambda x: x[cid], tasks)
        ctx = client_context(frozen, server.shared, task, B, server.round)
        local = algorithm.begin_round(ctx, private)
        key = jax.random.fold_in(train_key, cid)
        for s, batch in enumerate(toy.unpadded_batches(ex, B)):
            local, _ = algorithm.local_step(ctx, local, batch, jax.random.fold_in(key, s))
        shared_k, private_k = algorithm.end_round(ctx, local)
        deltas.append(jax.tree.map(lambda a, b: a - b, shared_k, server.shared))
        privates.append(private_k)
    n = np.asarray(SIZES, np.float32)
    w = n / n.sum() if weights_kind == "weighted" else np.full(len(n), 1 / len(n))
    mean = jax.tree.map(lambda *d: sum(wi * di for wi, di in zip(w, d)), *deltas)
    return jax.tree.map(jnp.add, server.shared, mean), privates


def max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize(
    "algorithm,weights",
    [
        (FedAvg(toy.forward, FedAvgConfig(optim=OPTIM)), "weighted"),
        (FedAvg(toy.forward, FedAvgConfig(prox_mu=0.5, optim=OPTIM)), "uniform"),
        (FedDAT(toy.forward, FedDATConfig(optim=OPTIM)), "weighted"),
    ],
    ids=["fedavg-weighted", "fedprox-uniform", "feddat-weighted"],
)
def test_vmapped_round_equals_per_client_loop(algorithm, weights):
    examples, batches, frozen, shared, private, private_C, tasks = setup(algorithm)
    server_tx = make_server_optimizer("fedavg")
    server = init_server_state(shared, server_tx, jax.random.key(1))
    ref_shared, ref_privates = loop_reference(
        algorithm, frozen, server, algorithm.init_private(shared, private), examples, tasks, weights
    )
    run = make_round_fn(algorithm, server_tx, MeanAggregator(weights))
    new_server, new_private_C, metrics = run(
        frozen, server, private_C, tasks, jnp.arange(len(SIZES)), batches
    )
    assert max_diff(new_server.shared, ref_shared) <= 1e-5
    assert max_diff(new_private_C, stack_clients(ref_privates)) <= 1e-5
    assert max_diff(new_server.shared, server.shared) > 1e-3  # the round really trained
    np.testing.assert_array_equal(metrics["clients"]["steps"], [-(-n // B) for n in SIZES])
    assert int(new_server.round) == 1


def test_round_compiles_once_over_five_rounds():
    traces = []

    def counting_forward(params, batch, mode):
        traces.append(mode)
        return toy.forward(params, batch, mode)

    algorithm = FedAvg(counting_forward, FedAvgConfig(optim=OPTIM))
    examples, batches, frozen, shared, private, private_C, tasks = setup(algorithm)
    server_tx = make_server_optimizer("fedadam", learning_rate=0.1)
    server = init_server_state(shared, server_tx, jax.random.key(1))
    run = make_round_fn(algorithm, server_tx, MeanAggregator())
    for r in range(5):
        cohort = np.sort(np.random.default_rng(r).choice(len(SIZES), 3, replace=False))
        server, new_private, _ = run(
            frozen,
            server,
            gather(private_C, cohort),
            gather(tasks, cohort),
            jnp.asarray(cohort),
            gather(batches, cohort),
        )
    assert int(server.round) == 5
    assert len(traces) == 1, f"run_round traced {len(traces)} times over 5 rounds"
    assert run._cache_size() <= 1
