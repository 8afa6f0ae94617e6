"""Subprocess worker for tests/test_sharding.py and tests/test_multiprocess.py.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX initialises, and
``jax.distributed.initialize`` must run before any device is touched, so these checks run in
fresh processes (the calling test sets ``XLA_FLAGS``); nothing leaks into other test files.

    python tests/mesh_worker.py sharding OUT.json
    python tests/mesh_worker.py round OUT.npz --num-processes P --process-id I --port PORT
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

A, B, S = 5, 4, 3
OPTIM_LR = 3e-2


def _toy_setup(num_clients: int, seed: int = 0):
    import jax
    import numpy as np
    import toy_model as toy

    from feddat_jax.fl import local_optim
    from feddat_jax.fl.algorithms import FedDAT, FedDATConfig

    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, S * B + 1, num_clients)
    kinds = rng.integers(0, 2, num_clients)
    real = rng.integers(2, A + 1, num_clients)
    examples = [
        toy.client_examples(np.random.default_rng([seed, k]), int(n), A, int(c), int(r))
        for k, (n, c, r) in enumerate(zip(sizes, kinds, real))
    ]
    batches = {
        key: np.stack([toy.batch_epoch(e, B, S)[key] for e in examples]) for key in examples[0]
    }
    algorithm = FedDAT(
        toy.forward,
        FedDATConfig(
            optim=local_optim.LocalOptimConfig(learning_rate=OPTIM_LR, schedule_epochs=2.0)
        ),
    )
    frozen, shared, private = toy.split(toy.init_params(jax.random.key(0), A))
    tasks = jax.tree.map(np.asarray, toy.make_tasks(sizes, kinds, real, A))
    return algorithm, frozen, shared, private, tasks, batches


def _max_diff(a, b) -> float:
    import jax
    import numpy as np

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(la, lb)
    )


def _collectives(compiled_text: str) -> dict[str, int]:
    names = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
    return {n: len(re.findall(rf"\b{n}(-start)?\(", compiled_text)) for n in names}


# ---------------------------------------------------------------------------------- sharding
def sharding_checks(out_path: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from feddat_jax.fl import mesh as mesh_lib

    from feddat_jax.fl.aggregation import MeanAggregator
    from feddat_jax.fl.registry import ClientRegistry, pad_batches, pad_ids
    from feddat_jax.fl.replicas import make_replica_round_fn
    from feddat_jax.fl.server_optimizers import make_server_optimizer
    from feddat_jax.fl.state import gather, init_server_state

    res: dict = {"devices": jax.device_count()}
    C = 16
    algorithm, frozen, shared, private, tasks, batches = _toy_setup(C)
    tx = make_server_optimizer("fedavg")
    # every value on the replica axis (one federation: R = 1)
    one = lambda t: jax.tree.map(lambda x: x[None], t)  # noqa: E731
    first = lambda t: jax.tree.map(lambda x: x[0], t)  # noqa: E731
    tasks, batches = one(tasks), one(batches)
    server = one(init_server_state(shared, tx, jax.random.key(1)))
    private_C = jax.tree.map(
        lambda x: np.repeat(np.asarray(x)[None, None], C, 1),
        algorithm.init_private(shared, private),
    )
    ids = np.arange(C, dtype=np.int32)[None]
    dev0 = jax.devices()[0]

    def on_dev0(t):
        return jax.device_put(t, dev0)

    # The single-device reference.
    ref_fn = make_replica_round_fn(algorithm, tx, MeanAggregator())
    ref_server, ref_private, ref_metrics = ref_fn(
        *map(on_dev0, (frozen, server, private_C, tasks, ids, batches))
    )
    ref = (ref_server.shared, ref_private)

    def leaves_spec(tree):
        return sorted({str(x.sharding.spec) for x in jax.tree.leaves(tree)})

    def shard_rows(tree):
        return sorted(
            {
                (len(x.addressable_shards), x.addressable_shards[0].data.shape[1])
                for x in jax.tree.leaves(tree)
            }
        )

    mesh = mesh_lib.make_mesh()  # (8, 1)
    res["mesh"] = dict(mesh.shape)
    for name, chunk in (("vmap", None), ("scan", 1), ("chunk2", 2)):
        fn = make_replica_round_fn(algorithm, tx, MeanAggregator(), mesh=mesh, chunk_size=chunk)
        args = (
            mesh_lib.put_frozen(frozen, mesh),
            mesh_lib.put_replicated(server, mesh),
            *mesh_lib.put_cohort((private_C, tasks, ids, batches), mesh),
        )
        in_spec = leaves_spec(args[2])
        compiled = fn.lower(*args).compile()
        new_server, new_private, metrics = fn(*args)
        res[name] = {
            "max_diff": _max_diff((new_server.shared, new_private), ref),
            "in_private_spec": in_spec,
            "private_spec": leaves_spec(new_private),
            "metrics_spec": leaves_spec(metrics["clients"]),
            "private_shards": shard_rows(new_private),
            "server_replicated": all(
                x.is_fully_replicated for x in jax.tree.leaves(new_server.shared)
            ),
            "collectives": _collectives(compiled.as_text()),
            "metrics_diff": _max_diff(metrics["clients"], ref_metrics["clients"]),
        }

    # Constraints inside map_clients take effect even when the inputs arrive unsharded.
    fn = make_replica_round_fn(algorithm, tx, MeanAggregator(), mesh=mesh)
    out = fn(frozen, server, jax.tree.map(jnp.asarray, private_C), tasks, ids, batches)
    res["unsharded_inputs"] = {
        "private_spec": leaves_spec(out[1]),
        "max_diff": _max_diff((out[0].shared, out[1]), ref),
    }

    # A (clients=4, model=2) mesh with the frozen backbone split over "model".
    mesh42 = mesh_lib.make_mesh(4, 2)
    frozen42 = jax.tree.map(
        mesh_lib._put, frozen, mesh_lib.frozen_shardings(frozen, mesh42, True, min_size=0)
    )
    fn = make_replica_round_fn(algorithm, tx, MeanAggregator(), mesh=mesh42)
    out = fn(
        frozen42,
        mesh_lib.put_replicated(server, mesh42),
        *mesh_lib.put_cohort((private_C, tasks, ids, batches), mesh42),
    )
    res["model_axis"] = {
        "frozen_spec": leaves_spec(frozen42),
        "private_spec": leaves_spec(out[1]),
        "max_diff": _max_diff((out[0].shared, out[1]), ref),
    }

    # The registry on the mesh: gather shards the cohort, scatter writes rows back; a cohort of
    # 6 padded to 8 equals the unpadded 6-client round on one device.
    reg = ClientRegistry.create(algorithm, shared, private, first(tasks), mesh=mesh)
    six = np.array([1, 3, 4, 9, 12, 15])
    pids, pmask = pad_ids(six, mesh_lib.clients_size(mesh))
    g_private, g_tasks = reg.gather(pids[None], pmask[None])
    padded = pad_batches(gather(first(batches), six), len(pids))
    fn = make_replica_round_fn(algorithm, tx, MeanAggregator(), mesh=mesh)
    srv, metrics = reg.run_round(
        fn,
        mesh_lib.put_frozen(frozen, mesh),
        mesh_lib.put_replicated(server, mesh),
        pids[None],
        one(padded),
        pmask[None],
    )
    r6 = ref_fn(
        *map(
            on_dev0,
            (
                frozen,
                server,
                one(gather(first(private_C), six)),
                one(gather(first(tasks), six)),
                six.astype(np.int32)[None],
                one(gather(first(batches), six)),
            ),
        )
    )
    untouched = np.setdiff1d(np.arange(C), six)
    res["registry"] = {
        "gather_spec": leaves_spec((g_private, g_tasks)),
        "padded_num_examples": np.asarray(g_tasks.num_examples)[0].tolist(),
        "server_diff": _max_diff(srv.shared, r6[0].shared),
        "rows_diff": _max_diff(host_private(reg, six), first(r6[1])),
        "untouched_diff": _max_diff(
            host_private(reg, untouched), gather(first(private_C), untouched)
        ),
    }
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


# ------------------------------------------------------------------------------ multi-process
def _loopback_gloo() -> str:
    """Bind gloo's TCP collectives to 127.0.0.1 (by default they use the address the hostname
    resolves to). Private JAX API; if it moved, keep the default and say so."""
    try:
        from jax._src import distributed, xla_bridge
        from jax._src.lib import _jax

        def cpu_client():
            collectives = _jax.make_gloo_tcp_collectives(
                distributed_client=distributed.global_state.client, hostname="127.0.0.1"
            )
            return xla_bridge.make_cpu_client(collectives=collectives)

        xla_bridge.register_backend_factory("cpu", cpu_client, priority=0, fail_quietly=False)
        return "127.0.0.1"
    except Exception as e:  # pragma: no cover - depends on JAX internals
        return f"default ({type(e).__name__}: {e})"


def round_worker(
    out_path: str, num_processes: int, process_id: int, port: int, strata: int, rounds: int
) -> None:
    import jax

    from feddat_jax.fl import mesh as mesh_lib

    from feddat_jax.fl import distributed

    gloo = "n/a"
    if num_processes > 1:
        cfg = distributed.DistributedConfig(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=num_processes,
            process_id=process_id,
            coordinator_bind_address=f"127.0.0.1:{port}",
            initialization_timeout=60,
            heartbeat_timeout_seconds=30,
            shutdown_timeout_seconds=30,
        )
        gloo = _loopback_gloo()  # registered before the CPU backend exists; used at its creation
        assert distributed.initialize_distributed(cfg)
    import numpy as np

    from feddat_jax.fl.aggregation import MeanAggregator
    from feddat_jax.fl.registry import ClientRegistry
    from feddat_jax.fl.replicas import make_replica_round_fn
    from feddat_jax.fl.server_optimizers import make_server_optimizer
    from feddat_jax.fl.state import gather, init_server_state

    N, C = 16, 8
    algorithm, frozen, shared, private, tasks, batches = _toy_setup(N)
    mesh = mesh_lib.make_mesh()
    owned = distributed.owned_clients(N)
    # Each process keeps only its own clients' state and data.
    reg = ClientRegistry.create(
        algorithm, shared, private, gather(tasks, owned), client_ids=owned, mesh=mesh
    )
    my_batches = gather(batches, owned)
    del batches
    tx = make_server_optimizer("fedadam", learning_rate=0.05)
    server = init_server_state(shared, tx, jax.random.key(1))
    server = mesh_lib.put_replicated(jax.tree.map(lambda x: x[None], server), mesh)  # R = 1
    fn = make_replica_round_fn(algorithm, tx, MeanAggregator(), mesh=mesh)
    frozen = mesh_lib.put_frozen(frozen, mesh)
    cohorts = []
    for r in range(rounds):
        cohort = distributed.sample_cohort(7, r, N, C, mesh, num_processes=strata)
        mine = cohort[distributed.local_slots(mesh, C)]
        assert np.all(np.isin(mine, owned)), (mine, owned)
        mine_batches = jax.tree.map(lambda x: x[None], gather(my_batches, reg.rows(mine)))
        server, _ = reg.run_round(fn, frozen, server, mine[None], mine_batches)
        cohorts.append(cohort)
    host_server = mesh_lib.fetch_replicated(jax.tree.map(lambda x: x[0], server.shared))
    flat = {f"shared/{i}": x for i, x in enumerate(jax.tree.leaves(host_server))}
    flat.update({f"initial/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(shared))})
    flat.update(
        {f"private/{i}": x for i, x in enumerate(jax.tree.leaves(host_private(reg, owned)))}
    )
    np.savez(
        out_path,
        ids=owned,
        cohorts=np.stack(cohorts),
        **flat,
        info=json.dumps(
            {
                "process_count": jax.process_count(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "gloo": gloo,
                "round": int(np.max(mesh_lib.fetch_replicated(server.round))),
            }
        ),
    )
    if num_processes > 1:
        jax.distributed.shutdown()


def host_private(reg, ids) -> dict:
    """Replica 0's private state of these clients ``[C, ...]`` on the host: a trained client's
    own rows (``ClientRegistry.trained``), the initial state (slot 0) for the others."""
    import jax
    import numpy as np

    trained_ids, rows = reg.trained()
    where = {int(k): t for t, k in enumerate(trained_ids[0]) if k >= 0}
    slots = jax.device_get(reg.slots)
    return jax.tree.map(
        lambda x, v: np.stack([v[0, where[k]] if k in where else x[0, 0] for k in ids]),
        slots,
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("sharding", "round"))
    parser.add_argument("out")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--strata", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    a = parser.parse_args()
    if a.mode == "sharding":
        sharding_checks(a.out)
    else:
        round_worker(a.out, a.num_processes, a.process_id, a.port, a.strata, a.rounds)


if __name__ == "__main__":
    main()
