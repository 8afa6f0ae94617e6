"""The Flower engine reproduces the simulated run: metrics, shared and private params (issue 34).

One simulated run (``train.method_run.run_method``) and one run of the same config on Flower's
simulation engine (4 nodes, one client each) of the demo's smoke config for 3 rounds; every
assert reads those two runs (Ray's start-up is the slow part).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

pytest.importorskip("flwr")

from feddat_jax.fl.communication import tree_bytes  # noqa: E402
from feddat_jax.flower import runconfig  # noqa: E402
from feddat_jax.flower.federation import build_federation  # noqa: E402
from feddat_jax.flower.node_state import NodeStore  # noqa: E402
from feddat_jax.flower.simulation import simulate  # noqa: E402
from feddat_jax.train.method_run import run_method  # noqa: E402

SPEC, OVERRIDES, ROUNDS, NODES = "configs/demo.py:smoke", {"rounds": 3}, 3, 4
TOL = 1e-5
# A node vmaps over its own C = 1 client; the reference simulation computes one client at a time
# too (chunk_size=1), so both reduce in the same order. Against the default simulation (all 4
# clients in one vmap) the shared params were measured 1.2e-5 and one private weight in 32,768
# 1.1e-4 off after 3 rounds: AdamW's m / (sqrt(v) + eps) turns a ~1e-9 difference in a near-zero
# gradient into part of an lr-sized step (as in tests/test_replicas.py).
ONE_CLIENT_AT_A_TIME = {"chunk_size": 1}  # the reference simulation's overrides


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower")
    config = runconfig.load(SPEC, OVERRIDES)
    simulated = run_method(
        runconfig.load(SPEC, {**OVERRIDES, **ONE_CLIENT_AT_A_TIME}), root / "sim" / config.method
    ).history
    flower = simulate(SPEC, OVERRIDES, root / "flower", nodes=NODES)
    return root, config, simulated, flower


def _state(folder: Path) -> dict:
    manager = ocp.CheckpointManager(folder, item_names=("state", "meta"))
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    return manager.restore(ROUNDS, args=args)["state"]


def _numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time/", "flower/"))}


@pytest.mark.slow
def test_metrics_equal_the_simulated_run(runs):
    _, _, simulated, flower = runs
    assert len(simulated) == len(flower) == ROUNDS
    for a, b in zip(simulated, flower):
        a, b = _numbers(a), _numbers(b)
        assert a.keys() == b.keys()
        assert any(k.startswith("score/") for k in a)  # evaluation rows compared too
        for key in a:
            if isinstance(a[key], str):
                assert a[key] == b[key], key
            else:
                np.testing.assert_allclose(b[key], a[key], atol=TOL, rtol=0, err_msg=key)


@pytest.mark.slow
def test_shared_and_private_params_equal_the_simulated_run(runs):
    root, config, _, _ = runs
    sim = _state(root / "sim" / config.method / "checkpoints")
    flw = _state(root / "flower" / config.method / "checkpoints")
    # the simulated run's state has a replica axis of R = 1
    sim_shared = jax.tree.map(lambda x: np.asarray(x)[0], sim["server"]["shared"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, atol=TOL), sim_shared, flw["shared"])
    fed = build_federation(config)
    run = fed.exp.run_fingerprint("/flower")[:16]
    template = fed.private_init
    # the simulated checkpoint holds the clients that trained: ids [R, T] and their rows
    ids = np.asarray(sim["private"]["ids"])[0]
    assert sorted(ids[ids >= 0]) == list(range(fed.num_clients))  # all 4 trained in 3 rounds
    order = np.argsort(np.where(ids >= 0, ids, np.iinfo(ids.dtype).max))
    trained_params = jax.tree.map(
        lambda x: np.asarray(x)[:, order], sim["private"]["state"]["params"]
    )
    for k in range(fed.num_clients):  # node k holds client k; its state stayed on its disk
        store = NodeStore(root / "flower" / ".nodes" / run / f"node_{k}", template)
        saved_round, private = store.load(k, ROUNDS)
        assert saved_round == ROUNDS
        sim_private = jax.tree.map(lambda x: np.asarray(x)[0, k], trained_params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(b, a, atol=TOL), sim_private, private["params"]
        )


@pytest.mark.slow
def test_a_node_sends_the_shared_params_only(runs):
    root, config, _, flower = runs
    fed = build_federation(config)
    shared_bytes = tree_bytes(fed.server0.shared)
    arrays = len(fed.shared_shapes)
    for row in flower:
        clients = len(row["cohort"].split(","))
        # per client: the shared params' bytes plus Flower's ~128-byte header per array
        per_client = row["flower/bytes_up"] / clients
        assert shared_bytes <= per_client <= shared_bytes + 200 * arrays
        assert row["comm/bytes_up"] == clients * shared_bytes
    assert json.loads((root / "flower" / "results.json").read_text())
