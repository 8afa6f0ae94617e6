"""The round on a ("clients", "model") mesh of 8 forced host devices equals the one-device round,
and every stacked client leaf really is sharded P("clients").

The 8-device checks run in ONE subprocess (tests/mesh_worker.py) because the device count is an
XLA flag read when JAX initialises; this file's own process keeps its single CPU device, so no
other test file is affected. The pure helpers of fl.mesh are tested in-process.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from feddat_jax.errors import DistributedError
from feddat_jax.fl import mesh as mesh_lib

from feddat_jax.fl import distributed
from feddat_jax.fl import sampling
from feddat_jax.fl.registry import pad_ids

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5
SHARDED = ["P(None, 'clients')"]  # [R, C, ...]: every replica's cohort axis over "clients"


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "result.json"
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "mesh_worker.py"), "sharding", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_eight_devices_mesh(eight):
    assert eight["devices"] == 8
    assert eight["mesh"] == {"clients": 8, "model": 1}


@pytest.mark.parametrize("strategy", ["vmap", "scan", "chunk2"])
def test_mesh_round_equals_single_device_round(eight, strategy):
    r = eight[strategy]
    assert r["max_diff"] <= TOL
    assert r["metrics_diff"] <= TOL


@pytest.mark.parametrize("strategy", ["vmap", "scan", "chunk2"])
def test_client_leaves_sharded_over_clients(eight, strategy):
    r = eight[strategy]
    assert r["in_private_spec"] == SHARDED
    assert r["private_spec"] == SHARDED  # every leaf of the new private state
    assert r["metrics_spec"] == SHARDED  # per-client metrics too
    assert r["private_shards"] == [[8, 2]]  # 8 shards of 16/8 = 2 clients each
    assert r["server_replicated"]


@pytest.mark.parametrize("strategy", ["vmap", "scan", "chunk2"])
def test_aggregation_is_an_all_reduce(eight, strategy):
    c = eight[strategy]["collectives"]
    assert c["all-reduce"] >= 1
    # Nothing moves the cohort between devices (a chunked round used to all-gather it).
    assert c["all-gather"] == c["all-to-all"] == c["collective-permute"] == 0


def test_constraints_shard_unsharded_inputs(eight):
    r = eight["unsharded_inputs"]
    assert r["private_spec"] == SHARDED
    assert r["max_diff"] <= TOL


def test_frozen_backbone_split_over_model_axis(eight):
    r = eight["model_axis"]
    assert "P('model', None)" in r["frozen_spec"]
    assert r["private_spec"] == SHARDED
    assert r["max_diff"] <= TOL


def test_registry_on_mesh_with_padded_cohort(eight):
    r = eight["registry"]
    assert r["gather_spec"] == SHARDED
    assert r["padded_num_examples"][6:] == [0, 0]
    assert r["server_diff"] <= TOL and r["rows_diff"] <= TOL
    assert r["untouched_diff"] == 0.0


# ------------------------------------------------------------------------- in-process helpers
def test_make_mesh_single_device():
    mesh = mesh_lib.make_mesh()
    assert mesh.axis_names == ("clients", "model")
    assert dict(mesh.shape) == {"clients": jax.device_count(), "model": 1}
    assert mesh_lib.clients_size(mesh) == jax.device_count()
    assert mesh_lib.clients_size(None) == 1
    assert mesh_lib.mesh_from_config({"clients": 1, "model": 1}).shape["clients"] == 1
    with pytest.raises(ValueError, match="needs"):
        mesh_lib.make_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="model axis"):
        mesh_lib.make_mesh(model=0)


def test_single_process_slots_and_placement():
    mesh = mesh_lib.make_mesh()
    np.testing.assert_array_equal(distributed.process_slots(mesh, 4), [0, 4])
    assert distributed.local_slots(mesh, 4) == slice(0, 4)
    tree = {"a": np.arange(8.0).reshape(4, 2), "k": jax.random.split(jax.random.key(0), 4)}
    placed = mesh_lib.put_clients(tree, mesh)
    assert str(placed["a"].sharding.spec) == "P('clients',)"
    cohort = mesh_lib.put_cohort(jax.tree.map(lambda x: x[None], tree), mesh)
    assert str(cohort["a"].sharding.spec) == "P(None, 'clients')"
    np.testing.assert_array_equal(mesh_lib.local_rows(placed["a"]), tree["a"])
    server = mesh_lib.put_replicated({"w": np.ones(3), "rng": jax.random.key(1)}, mesh)
    assert server["w"].is_fully_replicated
    host = mesh_lib.fetch_replicated(server)
    np.testing.assert_array_equal(host["rng"], jax.random.key_data(jax.random.key(1)))


def test_client_ownership_blocks():
    np.testing.assert_array_equal(distributed.client_blocks(10, 3), [0, 4, 7, 10])
    np.testing.assert_array_equal(distributed.owned_clients(10, 1, 3), [4, 5, 6])
    assert sum(len(distributed.owned_clients(10_000, p, 7)) for p in range(7)) == 10_000
    with pytest.raises(ValueError):
        distributed.client_blocks(2, 3)


def test_sample_cohort():
    # One process: exactly the library's sampler.
    for r in range(3):
        np.testing.assert_array_equal(
            distributed.sample_cohort(5, r, 1000, 40), sampling.sample_clients(5, r, 1000, 40)
        )
    # Stratified by owner: every process's slots hold its own clients; deterministic.
    cohort = distributed.sample_cohort(5, 2, 1000, 40, num_processes=4)
    assert cohort.shape == (40,) and np.all(np.diff(cohort) > 0)
    blocks = distributed.client_blocks(1000, 4)
    for p in range(4):
        part = cohort[10 * p : 10 * (p + 1)]
        assert np.all((part >= blocks[p]) & (part < blocks[p + 1]))
    np.testing.assert_array_equal(
        cohort, distributed.sample_cohort(5, 2, 1000, 40, num_processes=4)
    )
    assert not np.array_equal(cohort, distributed.sample_cohort(5, 3, 1000, 40, num_processes=4))
    # All clients every round: the same cohort however many processes.
    np.testing.assert_array_equal(
        distributed.sample_cohort(0, 0, 12, 1.0, num_processes=3), np.arange(12)
    )
    with pytest.raises(ValueError, match="split evenly"):
        distributed.sample_cohort(0, 0, 100, 10, num_processes=3)


def test_distributed_config_from_env():
    assert distributed.initialize_distributed(None, env={}) is False
    with pytest.raises(DistributedError, match="needs coordinator_address"):
        distributed.initialize_distributed(None, env={"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"})
    c = distributed.DistributedConfig.from_config({"num_processes": 2, "local_device_ids": [0]})
    assert c.num_processes == 2 and c.local_device_ids == (0,) and c.cpu_collectives == "gloo"


def test_strategy_table():
    assert set(mesh_lib.DEFAULT_STRATEGY) >= {"cpu", "gpu", "tpu"}
    assert mesh_lib.default_strategy("cpu") in mesh_lib.STRATEGIES
    assert mesh_lib.default_strategy("cpu", "tiny") == mesh_lib.DEFAULT_STRATEGY["cpu"]
    assert mesh_lib.default_strategy("cpu", "base") == "scan"
    assert mesh_lib.default_strategy("gpu", "base") == mesh_lib.DEFAULT_STRATEGY["gpu"]
    assert mesh_lib.round_fn_kwargs("vmap") == {"chunk_size": None}
    assert mesh_lib.round_fn_kwargs("vmap", 4) == {"chunk_size": 4}
    assert mesh_lib.round_fn_kwargs("scan") == {"chunk_size": 1}
    with pytest.raises(ValueError):
        mesh_lib.round_fn_kwargs("loop")
    ids, mask = pad_ids([4, 7, 9], 8)
    assert ids.tolist() == [4, 7, 9, 4, 4, 4, 4, 4] and mask.sum() == 3
